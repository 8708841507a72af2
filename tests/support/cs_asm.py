"""A tiny Mali v10 command-stream assembler for tests.

Written straight from the field tables of docs/reference/cs-instructions.md
(``name[start:size]``, opcode in bits [63:56]); it deliberately does not import the
interpreter or its opcode table, so a mistake in one is not mirrored in the other.
"""

from __future__ import annotations

import struct

# Condition enum (§8.3)
LEQUAL, GREATER, EQUAL, NEQUAL, LESS, GEQUAL, ALWAYS = range(7)
# STORE_STATE states
TIMESTAMP, CYCLE_COUNT, DISJOINT_COUNT, ERROR_STATUS = range(4)
# SYNC scopes
SYSTEM, CSG = 0, 2


def _put(value: int, start: int, size: int, signed: bool = False) -> int:
    if signed:
        lo, hi = -(1 << (size - 1)), (1 << (size - 1)) - 1
        if not lo <= value <= hi:
            raise ValueError(f"{value} does not fit a signed {size}-bit field")
        value &= (1 << size) - 1
    elif not 0 <= value < (1 << size):
        raise ValueError(f"{value:#x} does not fit a {size}-bit field")
    return value << start


def ins(opcode: int, *fields: tuple[int, int, int] | tuple[int, int, int, bool]) -> int:
    """Generic encoder: ``fields`` are (value, start, size[, signed])."""
    w = _put(opcode, 56, 8)
    for f in fields:
        w |= _put(*f)
    return w


def nop() -> int:
    return 0


def move48(dst: int, imm: int) -> int:
    return ins(0x01, (imm, 0, 48), (dst, 48, 8))


def move32(dst: int, imm: int) -> int:
    return ins(0x02, (imm, 0, 32), (dst, 48, 8))


def wait(mask: int, progress: bool = False) -> int:
    return ins(0x03, (mask, 16, 8), (int(progress), 32, 1))


def run_compute(task_increment: int = 0, axis: int = 0, progress: bool = False) -> int:
    return ins(0x04, (task_increment, 0, 14), (axis, 14, 2), (int(progress), 32, 1))


def run_tiling(progress: bool = False) -> int:
    return ins(0x05, (int(progress), 32, 1))


def run_idvs(draw_id_enable: bool = False, draw_id: int = 0, progress: bool = False) -> int:
    return ins(0x06, (int(progress), 32, 1), (int(draw_id_enable), 34, 1), (draw_id, 40, 8))


def run_fragment(progress: bool = False) -> int:
    return ins(0x07, (int(progress), 32, 1))


def run_fullscreen(dcd: int = 0, progress: bool = False) -> int:
    return ins(0x08, (int(progress), 32, 1), (dcd, 40, 8))


def finish_tiling(progress: bool = False) -> int:
    return ins(0x09, (int(progress), 32, 1))


def finish_fragment(last: int = 0, first: int = 0, signal: int = 0, wait_mask: int = 0) -> int:
    return ins(0x0B, (wait_mask, 16, 16), (last, 32, 8), (first, 40, 8), (signal, 48, 4))


def add_imm32(dst: int, src: int, imm: int) -> int:
    return ins(0x10, (imm, 0, 32, True), (src, 40, 8), (dst, 48, 8))


def add_imm64(dst: int, src: int, imm: int) -> int:
    return ins(0x11, (imm, 0, 32, True), (src, 40, 8), (dst, 48, 8))


def umin32(dst: int, src0: int, src1: int) -> int:
    return ins(0x12, (src1, 32, 8), (src0, 40, 8), (dst, 48, 8))


def load_multiple(base: int, addr: int, mask: int, offset: int = 0) -> int:
    return ins(0x14, (offset, 0, 16, True), (mask, 16, 16), (addr, 40, 8), (base, 48, 8))


def store_multiple(base: int, addr: int, mask: int, offset: int = 0) -> int:
    return ins(0x15, (offset, 0, 16, True), (mask, 16, 16), (addr, 40, 8), (base, 48, 8))


def branch(offset: int, cond: int = ALWAYS, reg: int = 0) -> int:
    return ins(0x16, (offset, 0, 16, True), (cond, 28, 3), (reg, 40, 8))


def set_sb_entry(endpoint: int, other: int) -> int:
    return ins(0x17, (endpoint, 0, 4), (other, 4, 4))


def progress_wait(queue: int, src: int) -> int:
    return ins(0x18, (queue, 0, 5), (src, 40, 8))


def set_exception_handler(exc_type: int, addr: int, length: int) -> int:
    return ins(0x19, (exc_type, 0, 8), (length, 32, 8), (addr, 40, 8))


def call(addr: int, length: int) -> int:
    return ins(0x20, (length, 32, 8), (addr, 40, 8))


def jump(addr: int, length: int) -> int:
    return ins(0x21, (length, 32, 8), (addr, 40, 8))


def req_resource(mask: int) -> int:
    return ins(0x22, (mask, 0, 4))


def flush_cache2(
    l2: int, lsc: int, other: int, flush_id: int, wait_mask: int = 0, signal: int = 0
) -> int:
    return ins(
        0x24,
        (l2, 0, 4),
        (lsc, 4, 4),
        (other, 8, 4),
        (wait_mask, 16, 16),
        (flush_id, 40, 8),
        (signal, 48, 4),
    )


def _sync_upd(op: int, addr: int, data: int, propagate: bool, scope: int, signal: int,
              wait_mask: int = 0) -> int:
    return ins(
        op, (int(propagate), 0, 1), (scope, 1, 2), (wait_mask, 16, 16), (data, 32, 8),
        (addr, 40, 8), (signal, 48, 4)
    )


def sync_add32(
    addr: int, data: int, propagate: bool = False, scope: int = SYSTEM, signal: int = 0,
    wait_mask: int = 0,
) -> int:
    return _sync_upd(0x25, addr, data, propagate, scope, signal, wait_mask)


def sync_set32(
    addr: int, data: int, propagate: bool = False, scope: int = SYSTEM, signal: int = 0,
    wait_mask: int = 0,
) -> int:
    return _sync_upd(0x26, addr, data, propagate, scope, signal, wait_mask)


def sync_add64(
    addr: int, data: int, propagate: bool = False, scope: int = SYSTEM, signal: int = 0
) -> int:
    return _sync_upd(0x33, addr, data, propagate, scope, signal)


def sync_set64(
    addr: int, data: int, propagate: bool = False, scope: int = SYSTEM, signal: int = 0
) -> int:
    return _sync_upd(0x34, addr, data, propagate, scope, signal)


def sync_wait32(addr: int, data: int, cond: int, reject: bool = False) -> int:
    return ins(0x27, (int(reject), 0, 1), (cond, 28, 4), (data, 32, 8), (addr, 40, 8))


def sync_wait64(addr: int, data: int, cond: int, reject: bool = False) -> int:
    return ins(0x35, (int(reject), 0, 1), (cond, 28, 4), (data, 32, 8), (addr, 40, 8))


def store_state(addr: int, state: int, offset: int = 0, signal: int = 0,
                wait_mask: int = 0) -> int:
    return ins(0x28, (offset, 0, 16, True), (wait_mask, 16, 16), (state, 32, 2), (addr, 40, 8),
               (signal, 48, 4))


def prot_region(size: int) -> int:
    return ins(0x29, (size, 0, 16))


def progress_store(src: int) -> int:
    return ins(0x2A, (src, 40, 8))


def progress_load(dst: int) -> int:
    return ins(0x2B, (dst, 48, 8))


def run_compute_indirect(wg_per_task: int = 0, progress: bool = False) -> int:
    return ins(0x2C, (wg_per_task, 0, 16), (int(progress), 32, 1))


def error_barrier() -> int:
    return ins(0x2F)


def heap_set(addr: int) -> int:
    return ins(0x30, (addr, 40, 8))


def heap_operation(op: int, signal: int = 0) -> int:
    return ins(0x31, (op, 32, 2), (signal, 48, 4))


def trace_point(base: int = 0, count: int = 0, signal: int = 0) -> int:
    return ins(0x32, (base, 32, 8), (count, 40, 8), (signal, 48, 4))


def assemble(words: list[int]) -> bytes:
    """Little-endian u64 stream."""
    return struct.pack(f"<{len(words)}Q", *words)

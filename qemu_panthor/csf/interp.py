"""Command-stream (CS) interpreter: what a Mali CSF command-stream front-end executes.

One :class:`CsExecState` is the architectural state of one CS slot (32-bit registers, ring
pointers, call stack, error state, scoreboard/heap/progress bookkeeping). :class:`CsInterpreter`
executes its instructions (mali-csf-hw.md §8) through the GPU MMU of the group's address space:

* the ring buffer is executed from ``extract`` to ``insert`` (``ring_base + (extract & (size-1))``);
  CALL/JUMP enter linear buffers, which return when exhausted;
* everything is synchronous: RUN_* work completes at once (no shader execution), scoreboards are
  always drained, so WAIT never blocks; only SYNC_WAIT blocks;
* faults come back as :class:`RunResult` values; a GPU page fault stalls the instruction, which
  is retried on the next :meth:`CsInterpreter.run` (nothing is committed before the accesses of
  an instruction succeed, and non-idempotent writes come last).

The inferred semantics are listed in docs/command-streams.md.
"""

from __future__ import annotations

import logging
import operator
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from .opcodes import (
    BLOCKED_REASON_SYNC_WAIT,
    STATUS_WAIT_SYNC,
    STATUS_WAIT_SYNC_64B,
    STATUS_WAIT_SYNC_COND_SHIFT,
    CsException,
    Op,
    disasm,
)

try:  # the MMU's access-type enum, when the MMU package provides it
    from qemu_panthor.mmu import Access as _Access

    ACCESS_ATOMIC: Any = _Access.ATOMIC
    ACCESS_READ: Any = _Access.READ
except Exception:  # pragma: no cover - MMU not importable: AS_FAULTSTATUS ACCESS_TYPE values
    ACCESS_ATOMIC, ACCESS_READ = 0, 2

log = logging.getLogger(__name__)

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
PAGE = 4096
PAGE_MASK = ~(PAGE - 1)

#: Maximum number of nested linear buffers (CALL depth) before CS_CALL_STACK_OVERFLOW.
CALL_STACK_DEPTH = 8

#: Work items counted in ``CsExecState.work`` (index = position).
WORK_KINDS = (
    "compute",
    "compute_indirect",
    "tiling",
    "idvs",
    "fragment",
    "fullscreen",
    "finish_tiling",
    "finish_fragment",
)

RESULT_KINDS = ("idle", "budget", "blocked_sync", "mmu_fault", "fatal")

_E_ENC = CsException.INSTR_INVALID_ENC
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_U64_U32 = struct.Struct("<QI")
_WORDS: dict[int, struct.Struct] = {}


class CsMmu(Protocol):
    """The part of :class:`qemu_panthor.mmu.Mmu` the interpreter uses."""

    def read(self, as_nr: int, va: int, size: int, access: Any = ...) -> Any: ...

    def write(self, as_nr: int, va: int, data: bytes) -> Any: ...


class GpuHooks(Protocol):
    """GPU-wide services a CS uses (FLUSH_CACHE2, STORE_STATE)."""

    def flush_caches(self) -> None: ...

    def timestamp(self) -> int: ...

    def cycle_count(self) -> int: ...


@dataclass(slots=True)
class RunResult:
    """Why :meth:`CsInterpreter.run` returned (``kind`` is one of :data:`RESULT_KINDS`)."""

    kind: str
    instructions: int = 0
    sync_update: bool = False  # a system-scope SYNC_ADD/SET ran (-> CSG SYNC_UPDATE)
    csg_sync_update: bool = False  # a CSG-scope SYNC_ADD/SET ran (wakes CSes of this CSG only)
    jobs: int = 0  # system-scope SYNC_ADDs run from the ring itself (kernel job completions)
    cmd_ptr: int = 0  # VA of the current instruction (status_cmd_ptr)
    fault: Any = None  # mmu_fault: the MmuFault
    exception_type: int = 0  # fatal: CS_FATAL.EXCEPTION_TYPE
    exception_data: int = 0  # fatal: CS_FATAL.EXCEPTION_DATA (24 bits)
    info: int = 0  # fatal: CS_FATAL_INFO (instruction word or faulting VA)
    wait_ptr: int = 0  # blocked_sync: status_wait_sync_ptr
    wait_value: int = 0  # blocked_sync: reference value (u64)
    wait_cond: str = ""  # blocked_sync: 'le' | 'gt' (unblocks when *ptr <= / > value)
    is_64: bool = False
    status_wait: int = 0  # blocked_sync: ready-made CS status_wait word
    blocked_reason: int = 0  # blocked_sync: 3 (SYNC_WAIT)


class CsExecState:
    """Architectural state of one command stream (what a suspend buffer preserves)."""

    __slots__ = (
        "as_nr",
        "end",
        "error",
        "exc_handlers",
        "extract",
        "flushes",
        "heap_ctx",
        "heap_ops",
        "in_buf",
        "insert",
        "pc",
        "progress",
        "reg_count",
        "regs",
        "req_resource",
        "ring_base",
        "ring_size",
        "sb_endpoint",
        "sb_other",
        "scoreboards",
        "stack",
        "wait_mask",
        "work",
    )

    def __init__(self, reg_count: int = 96, scoreboards: int = 8) -> None:
        if not 1 <= reg_count <= 256:
            raise ValueError(f"reg_count {reg_count} outside 1..256")
        if not 1 <= scoreboards <= 16:
            raise ValueError(f"scoreboards {scoreboards} outside 1..16")
        self.reg_count = reg_count
        self.scoreboards = scoreboards
        self.regs: list[int] = [0] * reg_count
        self.ring_base = 0
        self.ring_size = 0
        self.extract = 0  # monotonic byte offset of the next ring instruction
        self.insert = 0
        self.as_nr = 0
        self.in_buf = False  # executing a CALL/JUMP'ed linear buffer [pc, end)
        self.pc = 0
        self.end = 0
        self.stack: list[tuple[int, int]] = []  # return points (pc, end) of outer linear buffers
        self.error = 0  # CS error state: 1 after a rejected sync wait / reported fault
        self.sb_endpoint = 0  # SET_SB_ENTRY
        self.sb_other = 0
        self.wait_mask = 0  # last WAIT mask
        self.heap_ctx = 0  # HEAP_SET
        self.heap_ops = [0, 0, 0, 0]  # HEAP_OPERATION count per operation
        self.progress = 0  # progress counter (u64)
        self.req_resource = 0  # REQ_RESOURCE mask (status_req_resource)
        self.exc_handlers: dict[int, tuple[int, int]] = {}  # type -> (address, length)
        self.work = [0] * len(WORK_KINDS)  # RUN_*/FINISH_* executed
        self.flushes = 0  # FLUSH_CACHE2 that flushed

    # -- convenience -------------------------------------------------------------------
    def reg64(self, r: int) -> int:
        return self.regs[r] | (self.regs[r + 1] << 32)

    def set_reg64(self, r: int, value: int) -> None:
        self.regs[r] = value & M32
        self.regs[r + 1] = (value >> 32) & M32

    def work_items(self) -> dict[str, int]:
        return dict(zip(WORK_KINDS, self.work, strict=True))

    @property
    def call_depth(self) -> int:
        return len(self.stack) + (1 if self.in_buf else 0)

    @property
    def cmd_ptr(self) -> int:
        """VA of the next instruction to execute (status_cmd_ptr)."""
        if self.in_buf:
            return self.pc & M64
        size = self.ring_size
        return (self.ring_base + (self.extract & (size - 1) if size > 0 else 0)) & M64

    # -- suspend buffer image ----------------------------------------------------------
    _MAGIC = b"CSIS"
    _VERSION = 1
    _HDR = struct.Struct("<4sHHBBBHQIQQIQQBBHQQII8Q4I")
    _FRAME = struct.Struct("<QQ")
    _EXC = struct.Struct("<BQI")

    def serialise(self) -> bytes:
        """The state as a self-describing byte image (for the CS suspend buffer)."""
        h = self._HDR.pack(
            self._MAGIC,
            self._VERSION,
            self.reg_count,
            self.scoreboards,
            (1 if self.in_buf else 0) | ((self.error & 1) << 1),
            len(self.stack),
            len(self.exc_handlers),
            self.ring_base & M64,
            self.ring_size & M32,
            self.extract & M64,
            self.insert & M64,
            self.as_nr & M32,
            self.pc & M64,
            self.end & M64,
            self.sb_endpoint & 0xF,
            self.sb_other & 0xF,
            self.wait_mask & 0xFFFF,
            self.heap_ctx & M64,
            self.progress & M64,
            self.req_resource & M32,
            self.flushes & M32,
            *(v & M64 for v in self.work),
            *(v & M32 for v in self.heap_ops),
        )
        parts = [h]
        parts += [self._FRAME.pack(p & M64, e & M64) for p, e in self.stack]
        parts += [
            self._EXC.pack(t & 0xFF, a & M64, n & M32) for t, (a, n) in self.exc_handlers.items()
        ]
        parts.append(struct.pack(f"<{self.reg_count}I", *(r & M32 for r in self.regs)))
        return b"".join(parts)

    @classmethod
    def deserialise(cls, data: bytes) -> CsExecState:
        """Inverse of :meth:`serialise`; anything malformed raises ValueError."""
        try:
            return cls._deserialise(bytes(data))
        except ValueError:
            raise
        except (struct.error, TypeError, OverflowError, IndexError) as e:
            raise ValueError(f"malformed CS state image: {e}") from e

    @classmethod
    def _deserialise(cls, data: bytes) -> CsExecState:
        if len(data) < cls._HDR.size:
            raise ValueError("CS state image too short")
        f = cls._HDR.unpack_from(data, 0)
        magic, version, reg_count, sbs, flags, nstack, nexc = f[:7]
        if magic != cls._MAGIC or version != cls._VERSION:
            raise ValueError("not a CS state image (bad magic/version)")
        if flags & ~3 or nstack >= CALL_STACK_DEPTH:
            raise ValueError("CS state image has invalid flags or call depth")
        expect = cls._HDR.size + nstack * cls._FRAME.size + nexc * cls._EXC.size + 4 * reg_count
        if len(data) != expect:
            raise ValueError(f"CS state image is {len(data)} bytes, expected {expect}")
        st = cls(reg_count, sbs)
        (
            st.ring_base,
            st.ring_size,
            st.extract,
            st.insert,
            st.as_nr,
            st.pc,
            st.end,
            st.sb_endpoint,
            st.sb_other,
            st.wait_mask,
            st.heap_ctx,
            st.progress,
            st.req_resource,
            st.flushes,
        ) = f[7:21]
        st.work = list(f[21 : 21 + len(WORK_KINDS)])
        st.heap_ops = list(f[21 + len(WORK_KINDS) :])
        st.in_buf = bool(flags & 1)
        st.error = (flags >> 1) & 1
        if nstack and not st.in_buf:
            raise ValueError("CS state image has a call stack but no active buffer")
        off = cls._HDR.size
        for _ in range(nstack):
            st.stack.append(cls._FRAME.unpack_from(data, off))
            off += cls._FRAME.size
        for _ in range(nexc):
            t, a, n = cls._EXC.unpack_from(data, off)
            if t in st.exc_handlers:
                raise ValueError("CS state image repeats an exception handler")
            st.exc_handlers[t] = (a, n)
            off += cls._EXC.size
        st.regs = list(struct.unpack_from(f"<{reg_count}I", data, off))
        return st


def new_state(reg_count: int = 96, scoreboards: int = 8) -> CsExecState:
    """A CS in its reset state (CS_FEATURES: reg_count registers, scoreboards entries)."""
    return CsExecState(reg_count, scoreboards)


# ---------------------------------------------------------------------------------------
# Control objects handlers return (besides None = next instruction, int = branch delta)


class _Transfer:
    """CALL/JUMP into the linear buffer [pc, end)."""

    __slots__ = ("end", "jump", "pc")

    def __init__(self, pc: int, end: int, jump: bool) -> None:
        self.pc = pc
        self.end = end
        self.jump = jump


class _Resync:
    """The instruction completed but wrote over instructions already fetched."""


_RESYNC = _Resync()


def _fatal(code: int, info: int, data: int = 0) -> RunResult:
    return RunResult("fatal", exception_type=int(code), exception_data=data, info=info & M64)


def _enc(w: int) -> RunResult:
    return _fatal(_E_ENC, w)


def _words(data: bytes) -> tuple[int, ...]:
    n = len(data) >> 3
    s = _WORDS.get(n)
    if s is None:
        s = _WORDS[n] = struct.Struct(f"<{n}Q")
    return s.unpack_from(data)


# ---------------------------------------------------------------------------------------
# Instruction handlers: h(it, st, w) -> None | int | _Transfer | _Resync | RunResult


def _op_invalid(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _fatal(CsException.CS_INSTR_INVALID, w)


def _op_nop(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return None


def _op_move48(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    d = (w >> 48) & 0xFF
    if d & 1 or d + 1 >= st.reg_count:
        return _enc(w)
    regs = st.regs
    regs[d] = w & M32
    regs[d + 1] = (w >> 32) & 0xFFFF
    return None


def _op_move32(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    d = (w >> 48) & 0xFF
    if d >= st.reg_count:
        return _enc(w)
    st.regs[d] = w & M32
    return None


def _op_wait(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    st.wait_mask = (w >> 16) & 0xFF
    if (w >> 32) & 1:
        st.progress = (st.progress + 1) & M64
    return None


def _op_add_imm32(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    d = (w >> 48) & 0xFF
    s = (w >> 40) & 0xFF
    rc = st.reg_count
    if d >= rc or s >= rc:
        return _enc(w)
    regs = st.regs
    # low 32 bits of w are the immediate; two's complement add modulo 2^32
    regs[d] = (regs[s] + w) & M32
    return None


def _op_add_imm64(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    d = (w >> 48) & 0xFF
    s = (w >> 40) & 0xFF
    rc = st.reg_count
    if d & 1 or s & 1 or d + 1 >= rc or s + 1 >= rc:
        return _enc(w)
    regs = st.regs
    imm = w & M32
    v = (regs[s] | (regs[s + 1] << 32)) + imm - ((imm & 0x80000000) << 1)
    regs[d] = v & M32
    regs[d + 1] = (v >> 32) & M32
    return None


def _op_umin32(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    d = (w >> 48) & 0xFF
    s0 = (w >> 40) & 0xFF
    s1 = (w >> 32) & 0xFF
    rc = st.reg_count
    if d >= rc or s0 >= rc or s1 >= rc:
        return _enc(w)
    regs = st.regs
    a, b = regs[s0], regs[s1]
    regs[d] = a if a < b else b
    return None


def _multi_decode(st: CsExecState, w: int) -> tuple[int, int, int, int] | None:
    """(address, mask, base, top) of LOAD/STORE_MULTIPLE, or None if the encoding is invalid."""
    a = (w >> 40) & 0xFF
    base = (w >> 48) & 0xFF
    mask = (w >> 16) & 0xFFFF
    top = mask.bit_length()
    rc = st.reg_count
    if a & 1 or a + 1 >= rc or base + top > rc or (mask == 0 and base >= rc):
        return None
    off = w & 0xFFFF
    regs = st.regs
    addr = ((regs[a] | (regs[a + 1] << 32)) + off - ((off & 0x8000) << 1)) & M64
    return addr, mask, base, top


def _op_load_multiple(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    dec = _multi_decode(st, w)
    if dec is None:
        return _enc(w)
    addr, mask, base, top = dec
    if not mask:
        return None
    data = it._read(st, addr, 4 * top, ACCESS_READ)
    if data.__class__ is RunResult:
        return data
    vals = struct.unpack(f"<{top}I", data)
    regs = st.regs
    for i in range(top):
        if (mask >> i) & 1:
            regs[base + i] = vals[i]
    return None


def _op_store_multiple(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    dec = _multi_decode(st, w)
    if dec is None:
        return _enc(w)
    addr, mask, base, top = dec
    regs = st.regs
    i = 0
    runs = []
    while i < top:  # one write per run of consecutive set bits
        if (mask >> i) & 1:
            j = i
            while j < top and (mask >> j) & 1:
                j += 1
            data = struct.pack(f"<{j - i}I", *regs[base + i : base + j])
            runs.append(((addr + 4 * i) & M64, data))
            i = j
        else:
            i += 1
    for va, data in runs:
        r = it._write(st, va, data)
        if r is not None:
            return r
    return _RESYNC if it._resync else None


_CMP = (operator.le, operator.gt, operator.eq, operator.ne, operator.lt, operator.ge)


def _op_branch(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    cond = (w >> 28) & 7
    if cond != 6:
        if cond == 7:
            return _enc(w)
        r = (w >> 40) & 0xFF
        if r >= st.reg_count:
            return _enc(w)
        v = st.regs[r]
        if not _CMP[cond](v - ((v & 0x80000000) << 1), 0):  # signed 32-bit compare with 0
            return None
    off = w & 0xFFFF
    return (off - ((off & 0x8000) << 1)) << 3  # instructions, relative to the next one


def _op_set_sb_entry(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    ep = w & 0xF
    other = (w >> 4) & 0xF
    if ep >= st.scoreboards or other >= st.scoreboards:
        return _enc(w)
    st.sb_endpoint = ep
    st.sb_other = other
    return None


def _pair_ok(st: CsExecState, r: int) -> bool:
    return not r & 1 and r + 1 < st.reg_count


def _op_progress_wait(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    # all iterator work is complete in this synchronous model: never blocks
    return None if _pair_ok(st, (w >> 40) & 0xFF) else _enc(w)


def _op_set_exception_handler(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    a = (w >> 40) & 0xFF
    n = (w >> 32) & 0xFF
    if not _pair_ok(st, a) or n >= st.reg_count:
        return _enc(w)
    st.exc_handlers[w & 0xFF] = (st.reg64(a), st.regs[n])
    return None


def _transfer(st: CsExecState, w: int, jump: bool) -> Any:
    a = (w >> 40) & 0xFF
    n = (w >> 32) & 0xFF
    if not _pair_ok(st, a) or n >= st.reg_count:
        return _enc(w)
    length = st.regs[n]
    if length == 0:
        return None  # empty buffer: nothing to execute
    addr = st.reg64(a)
    if addr & 7 or addr + length > M64 + 1:
        return _fatal(CsException.INSTR_INVALID_PC, addr)
    if length & 7:
        return _fatal(CsException.DATA_INVALID_FAULT, w)
    if not jump and st.in_buf and len(st.stack) + 1 >= CALL_STACK_DEPTH:
        return _fatal(CsException.CS_CALL_STACK_OVERFLOW, w)
    return _Transfer(addr, addr + length, jump)


def _op_call(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _transfer(st, w, False)


def _op_jump(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _transfer(st, w, True)


def _op_req_resource(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    st.req_resource = w & 0xF
    return None


def _op_flush_cache2(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    r = (w >> 40) & 0xFF
    if r >= st.reg_count or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    if w & 0xFFF:  # some flush mode requested
        fid = st.regs[r]
        cur = getattr(it.hooks, "latest_flush_id", None)
        # a non-zero ID older than the current one means a flush already happened: skip
        if fid == 0 or not isinstance(cur, int) or fid == cur:
            it.hooks.flush_caches()
            st.flushes += 1
    return None


def _sync_update(it: CsInterpreter, st: CsExecState, w: int, is64: bool, add: bool) -> Any:
    a = (w >> 40) & 0xFF
    d = (w >> 32) & 0xFF
    rc = st.reg_count
    regs = st.regs
    if a & 1 or a + 1 >= rc or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    if is64:
        if d & 1 or d + 1 >= rc:
            return _enc(w)
        val = regs[d] | (regs[d + 1] << 32)
        size, fmt, mask = 8, _U64, M64
    else:
        if d >= rc:
            return _enc(w)
        val = regs[d]
        size, fmt, mask = 4, _U32, M32
    addr = regs[a] | (regs[a + 1] << 32)
    if add:
        cur = it._read(st, addr, size, ACCESS_ATOMIC)
        if cur.__class__ is RunResult:
            return cur
        val = (fmt.unpack(cur)[0] + val) & mask
    if w & 1:  # error propagate: status word follows the value (idempotent, written first)
        r = it._write(st, (addr + size) & M64, _U32.pack(st.error))
        if r is not None:
            return r
    r = it._write(st, addr, fmt.pack(val))
    if r is not None:
        return r
    if (w >> 1) & 3 == 2:
        it._csg_sync = True
    else:
        it._sync = True
        if add and not st.in_buf:
            it._jobs += 1
    return _RESYNC if it._resync else None


def _op_sync_add32(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _sync_update(it, st, w, False, True)


def _op_sync_set32(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _sync_update(it, st, w, False, False)


def _op_sync_add64(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _sync_update(it, st, w, True, True)


def _op_sync_set64(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _sync_update(it, st, w, True, False)


def _sync_wait(it: CsInterpreter, st: CsExecState, w: int, is64: bool) -> Any:
    a = (w >> 40) & 0xFF
    d = (w >> 32) & 0xFF
    cond = (w >> 28) & 0xF
    rc = st.reg_count
    regs = st.regs
    if a & 1 or a + 1 >= rc or cond > 1:
        return _enc(w)
    if is64:
        if d & 1 or d + 1 >= rc:
            return _enc(w)
        ref = regs[d] | (regs[d + 1] << 32)
        size = 8
    else:
        if d >= rc:
            return _enc(w)
        ref = regs[d]
        size = 4
    addr = regs[a] | (regs[a + 1] << 32)
    reject = w & 1
    data = it._read(st, addr, size + 4 if reject else size, ACCESS_READ)
    if data.__class__ is RunResult:
        return data
    cur = int.from_bytes(data[:size], "little")
    if reject and int.from_bytes(data[size:], "little"):
        st.error = 1  # error reject: a failed sync object ends the wait in error
        return None
    if (cur > ref) if cond else (cur <= ref):
        return None
    return RunResult(
        "blocked_sync",
        wait_ptr=addr,
        wait_value=ref,
        wait_cond="gt" if cond else "le",
        is_64=is64,
        status_wait=STATUS_WAIT_SYNC
        | (STATUS_WAIT_SYNC_64B if is64 else 0)
        | (cond << STATUS_WAIT_SYNC_COND_SHIFT),
        blocked_reason=BLOCKED_REASON_SYNC_WAIT,
    )


def _op_sync_wait32(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _sync_wait(it, st, w, False)


def _op_sync_wait64(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _sync_wait(it, st, w, True)


def _op_store_state(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    a = (w >> 40) & 0xFF
    if not _pair_ok(st, a) or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    state = (w >> 32) & 3
    if state == 0:
        v = it.hooks.timestamp()
    elif state == 1:
        v = it.hooks.cycle_count()
    elif state == 2:
        v = 0  # disjoint count: the model has no frequency/power disjoint events
    else:
        v = st.error
    off = w & 0xFFFF
    addr = (st.reg64(a) + off - ((off & 0x8000) << 1)) & M64
    r = it._write(st, addr, _U64.pack(int(v) & M64))
    if r is not None:
        return r
    return _RESYNC if it._resync else None


def _op_progress_store(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    s = (w >> 40) & 0xFF
    if not _pair_ok(st, s):
        return _enc(w)
    st.progress = st.reg64(s)
    return None


def _op_progress_load(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    d = (w >> 48) & 0xFF
    if not _pair_ok(st, d):
        return _enc(w)
    st.set_reg64(d, st.progress)
    return None


def _op_error_barrier(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    st.error = 0
    return None


def _op_heap_set(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    a = (w >> 40) & 0xFF
    if not _pair_ok(st, a):
        return _enc(w)
    st.heap_ctx = st.reg64(a)
    return None


def _op_heap_operation(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    op = (w >> 32) & 3
    if op == 2 or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    st.heap_ops[op] += 1
    return None


def _op_trace_point(it: CsInterpreter, st: CsExecState, w: int) -> Any:
    return _enc(w) if (w >> 48) & 0xF >= st.scoreboards else None


def _run_work(kind: str, check: Any = None) -> Any:
    """Handler for a RUN_*/FINISH_* instruction: the work item completes at once."""
    k = WORK_KINDS.index(kind)
    progress = kind != "finish_fragment"  # its bits [39:32] are a register field

    def handler(it: CsInterpreter, st: CsExecState, w: int) -> Any:
        if check is not None and not check(st, w):
            return _enc(w)
        st.work[k] += 1
        if progress and (w >> 32) & 1:
            st.progress = (st.progress + 1) & M64
        return None

    handler.__name__ = f"_op_run_{kind}"
    return handler


def _idvs_ok(st: CsExecState, w: int) -> bool:
    return not (w >> 34) & 1 or (w >> 40) & 0xFF < st.reg_count


def _fullscreen_ok(st: CsExecState, w: int) -> bool:
    return _pair_ok(st, (w >> 40) & 0xFF)


def _finish_fragment_ok(st: CsExecState, w: int) -> bool:
    return (
        _pair_ok(st, (w >> 32) & 0xFF)
        and _pair_ok(st, (w >> 40) & 0xFF)
        and (w >> 48) & 0xF < st.scoreboards
    )


_HANDLERS: dict[int, Any] = {
    Op.NOP: _op_nop,
    Op.MOVE48: _op_move48,
    Op.MOVE32: _op_move32,
    Op.WAIT: _op_wait,
    Op.RUN_COMPUTE: _run_work("compute"),
    Op.RUN_TILING: _run_work("tiling"),
    Op.RUN_IDVS: _run_work("idvs", _idvs_ok),
    Op.RUN_FRAGMENT: _run_work("fragment"),
    Op.RUN_FULLSCREEN: _run_work("fullscreen", _fullscreen_ok),
    Op.FINISH_TILING: _run_work("finish_tiling"),
    Op.FINISH_FRAGMENT: _run_work("finish_fragment", _finish_fragment_ok),
    Op.ADD_IMMEDIATE32: _op_add_imm32,
    Op.ADD_IMMEDIATE64: _op_add_imm64,
    Op.UMIN32: _op_umin32,
    Op.LOAD_MULTIPLE: _op_load_multiple,
    Op.STORE_MULTIPLE: _op_store_multiple,
    Op.BRANCH: _op_branch,
    Op.SET_SB_ENTRY: _op_set_sb_entry,
    Op.PROGRESS_WAIT: _op_progress_wait,
    Op.SET_EXCEPTION_HANDLER: _op_set_exception_handler,
    Op.CALL: _op_call,
    Op.JUMP: _op_jump,
    Op.REQ_RESOURCE: _op_req_resource,
    Op.FLUSH_CACHE2: _op_flush_cache2,
    Op.SYNC_ADD32: _op_sync_add32,
    Op.SYNC_SET32: _op_sync_set32,
    Op.SYNC_WAIT32: _op_sync_wait32,
    Op.STORE_STATE: _op_store_state,
    Op.PROT_REGION: _op_nop,  # protected mode is not modelled: the region runs unprotected
    Op.PROGRESS_STORE: _op_progress_store,
    Op.PROGRESS_LOAD: _op_progress_load,
    Op.RUN_COMPUTE_INDIRECT: _run_work("compute_indirect"),
    Op.ERROR_BARRIER: _op_error_barrier,
    Op.HEAP_SET: _op_heap_set,
    Op.HEAP_OPERATION: _op_heap_operation,
    Op.TRACE_POINT: _op_trace_point,
    Op.SYNC_ADD64: _op_sync_add64,
    Op.SYNC_SET64: _op_sync_set64,
    Op.SYNC_WAIT64: _op_sync_wait64,
}

#: Dispatch table indexed by opcode (bits [63:56]); unknown opcodes -> CS_INSTR_INVALID.
DISPATCH: list[Any] = [_HANDLERS.get(op, _op_invalid) for op in range(256)]


class CsInterpreter:
    """Executes command streams through ``mmu`` for one GPU (``hooks``: flush/timestamp/cycles)."""

    def __init__(self, mmu: CsMmu, gpu_hooks: GpuHooks) -> None:
        self.mmu = mmu
        self.hooks = gpu_hooks
        self._table = DISPATCH
        self._pages: dict[int, tuple[int, tuple[int, ...]]] = {}
        self._seg_lo = 0
        self._seg_hi = 0
        self._resync = False
        self._sync = False
        self._csg_sync = False
        self._jobs = 0
        self._n = 0

    # -- memory access helpers (used by handlers) ---------------------------------------
    def _fault(self, f: Any, va: int) -> RunResult:
        if getattr(f, "bus", False):
            return _fatal(CsException.CS_BUS_FAULT, va)
        return RunResult("mmu_fault", fault=f)

    def _read(self, st: CsExecState, va: int, size: int, access: Any) -> Any:
        r = self.mmu.read(st.as_nr, va, size, access)
        t = r.__class__
        if t is bytes:
            return r
        if t is bytearray or t is memoryview:
            return bytes(r)
        return self._fault(r, va)

    def _write(self, st: CsExecState, va: int, data: bytes) -> RunResult | None:
        f = self.mmu.write(st.as_nr, va, data)
        if f is not None:
            return self._fault(f, va)
        end = va + len(data)
        pages = self._pages
        if pages:
            for p in range(va & PAGE_MASK, end, PAGE):
                pages.pop(p, None)
        if va < self._seg_hi and self._seg_lo < end:
            self._resync = True
        return None

    # -- execution ------------------------------------------------------------------------
    def run(self, st: CsExecState, budget: int) -> RunResult:
        """Execute up to ``budget`` instructions of ``st``; never raises."""
        self._sync = self._csg_sync = False
        self._jobs = 0
        self._pages = {}
        self._n = 0
        try:
            res = self._run(st, max(0, int(budget)))
        except Exception:  # a model bug must not take the device down
            log.exception("CS interpreter internal error at %#x", st.cmd_ptr)
            res = _fatal(CsException.CSF_FW_INTERNAL_ERROR, 0)
            res.instructions = self._n
            res.cmd_ptr = st.cmd_ptr
        self._pages = {}
        self._seg_lo = self._seg_hi = 0
        res.sync_update = self._sync
        res.csg_sync_update = self._csg_sync
        res.jobs = self._jobs
        if res.kind == "fatal" and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "CS fatal %#x at %#x (info %#x: %s)",
                res.exception_type,
                res.cmd_ptr,
                res.info,
                disasm(res.info),
            )
        return res

    def _stop(self, res: RunResult, st: CsExecState, n: int) -> RunResult:
        res.instructions = n
        res.cmd_ptr = st.cmd_ptr
        return res

    def _run(self, st: CsExecState, budget: int) -> RunResult:
        table = self._table
        pages = self._pages
        n = 0
        executed = False
        while True:
            # -- where are we: linear buffer or ring ---------------------------------------
            if st.in_buf:
                pc = st.pc
                seg_end = st.end
                if pc >= seg_end:  # buffer exhausted: return
                    if st.stack:
                        st.pc, st.end = st.stack.pop()
                    else:  # back in the ring: the CALL/JUMP there completes
                        st.in_buf = False
                        st.extract = (st.extract + 8) & M64
                    continue
                if pc < 0:
                    return self._stop(_fatal(CsException.INSTR_INVALID_PC, pc), st, n)
                ring = False
            else:
                ext = st.extract
                avail = (st.insert - ext) & M64
                if not avail:
                    return self._stop(RunResult("idle"), st, n)
                size = st.ring_size
                if size < 8 or size & (size - 1) or st.ring_base & 7 or ext & 7:
                    return self._stop(_fatal(CsException.CS_CONFIG_FAULT, 0), st, n)
                if avail > size or avail & 7:
                    # only a BRANCH can move extract out of the window once running
                    code = CsException.INSTR_INVALID_PC if executed else CsException.CS_CONFIG_FAULT
                    return self._stop(_fatal(code, st.cmd_ptr), st, n)
                ring_end = st.ring_base + size
                pc = st.ring_base + (ext & (size - 1))
                seg_end = pc + avail
                if seg_end > ring_end:
                    seg_end = ring_end
                ring = True
            if n >= budget:
                return self._stop(RunResult("budget"), st, n)
            # -- fetch: the rest of the page, cached for this run -------------------------
            page = pc & PAGE_MASK
            ent = pages.get(page)
            if ent is None or ent[0] > pc:
                data = self._read(st, pc, page + PAGE - pc, ACCESS_READ)
                if data.__class__ is RunResult:
                    return self._stop(data, st, n)
                ent = pages[page] = (pc, _words(data))
            cbase, words = ent
            if seg_end > page + PAGE:
                seg_end = page + PAGE
            self._seg_lo = cbase
            self._seg_hi = seg_end
            self._resync = False
            # -- execute the segment --------------------------------------------------------
            executed = True
            pc0 = pc
            left = budget - n
            ctl: Any = None
            try:
                while pc < seg_end and left:
                    w = words[(pc - cbase) >> 3]
                    r = table[w >> 56](self, st, w)
                    if r is None:
                        pc += 8
                        left -= 1
                    elif r.__class__ is int:
                        pc += 8 + r
                        left -= 1
                        if pc < cbase:
                            break
                    else:
                        ctl = r
                        break
            except Exception:  # leave the stream on the instruction that failed
                self._n = budget - left
                if ring:
                    st.extract = (st.extract + pc - pc0) & M64
                else:
                    st.pc = pc
                raise
            n = budget - left
            self._n = n
            if ring:
                st.extract = (st.extract + pc - pc0) & M64
            else:
                st.pc = pc
            if ctl is None:
                continue
            if ctl.__class__ is RunResult:  # instruction did not complete
                return self._stop(ctl, st, n)
            n += 1  # completed control instruction
            self._n = n
            if ctl is _RESYNC:
                if ring:
                    st.extract = (st.extract + 8) & M64
                else:
                    st.pc = pc + 8
            elif not st.in_buf:  # CALL/JUMP from the ring: extract stays until it returns
                st.in_buf = True
                st.pc, st.end = ctl.pc, ctl.end
            elif ctl.jump:
                st.pc, st.end = ctl.pc, ctl.end
            else:
                st.stack.append((pc + 8, st.end))
                st.pc, st.end = ctl.pc, ctl.end

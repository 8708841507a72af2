"""The v10 command-stream instructions: one handler per opcode, and the dispatch table.

A handler ``h(it, st, w)`` executes instruction word ``w`` on stream state ``st`` through the
interpreter ``it`` (memory access, GPU hooks, per-run flags) and returns None (next
instruction), an int (branch: byte delta relative to the next instruction), a
:class:`Transfer` (CALL/JUMP into a linear buffer), :data:`RESYNC` (completed, but wrote over
instructions already fetched) or a :class:`RunResult` (the instruction did not complete).
Encodings and inferred semantics: docs/command-streams.md.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from ..exceptions import ExceptionType
from ..mmu import Access
from .cs_state import CALL_STACK_DEPTH, M32, M64, WORK_KINDS, CsExecState, RunResult, SyncWait
from .opcodes import Op
from .tiler_heap import allocate, give_back, heap_operation
from .workload import ENDPOINT, pending, progress_reached, start_item

if TYPE_CHECKING:
    from .interp import CsInterpreter

ACCESS_ATOMIC = Access.ATOMIC
ACCESS_READ = Access.READ
#: Any instruction the command stream front-end cannot execute (bad operand encoding, bad
#: CALL/JUMP target or length) is CS_FATAL CS_INSTR_INVALID: 0x50/0x51/0x58 are CS_FAULT codes
#: of the shader cores, and the CS_FATAL codes are 0x40/0x41/0x44/0x48/0x49/0x4A/0x68 only
#: (docs/reference/exceptions.md).
_E_ENC = ExceptionType.CS_INSTR_INVALID
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


# -- control objects handlers return ---------------------------------------------------
class Transfer:
    """CALL/JUMP into the linear buffer [pc, end)."""

    __slots__ = ("end", "jump", "pc")

    def __init__(self, pc: int, end: int, jump: bool) -> None:
        self.pc = pc
        self.end = end
        self.jump = jump


class Resync:
    """The instruction completed but wrote over instructions already fetched."""


RESYNC = Resync()


def fatal(code: int, info: int, data: int = 0) -> RunResult:
    return RunResult("fatal", exception_type=int(code), exception_data=data, info=info & M64)


def _enc(w: int) -> RunResult:
    return fatal(_E_ENC, w)


def fault(code: int, info: int, data: int = 0) -> RunResult:
    """A recoverable CS_FAULT: the instruction completes (its work is dropped), the stream's
    error state is set and it waits for the host to acknowledge the fault."""
    return RunResult("fault", exception_type=int(code), exception_data=data, info=info & M64)


HandlerResult: TypeAlias = "int | Transfer | Resync | RunResult | None"
Handler: TypeAlias = "Callable[[CsInterpreter, CsExecState, int], HandlerResult]"


# ---------------------------------------------------------------------------------------
# Instruction handlers


def _op_invalid(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return fatal(ExceptionType.CS_INSTR_INVALID, w)


def _op_nop(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return None


def _op_move48(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    d = (w >> 48) & 0xFF
    if d & 1 or d + 1 >= st.reg_count:
        return _enc(w)
    regs = st.regs
    regs[d] = w & M32
    regs[d + 1] = (w >> 32) & 0xFFFF
    return None


def _op_move32(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    d = (w >> 48) & 0xFF
    if d >= st.reg_count:
        return _enc(w)
    st.regs[d] = w & M32
    return None


def _blocked_on(mask: int, until: float) -> RunResult:
    """The instruction waits (it is re-executed when the work completes)."""
    return RunResult("blocked_sb", until=until, sb_mask=mask)


def _wait_for(it: CsInterpreter, st: CsExecState, mask: int) -> RunResult | None:
    """Blocked until the scoreboard entries of ``mask`` are drained (csf/workload.py)."""
    if mask and it.scale:
        until = pending(st, mask, it.clock())
        if until:
            return _blocked_on(mask, until)
    return None


def _deferred(it: CsInterpreter, st: CsExecState, w: int) -> RunResult | None:
    """A deferred operation takes effect once the entries of its wait mask ([31:16]) are
    drained."""
    return _wait_for(it, st, (w >> 16) & 0xFFFF)


def _op_wait(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    mask = (w >> 16) & 0xFF
    st.wait_mask = mask
    blocked = _wait_for(it, st, mask)
    if blocked is not None:
        return blocked
    if (w >> 32) & 1:
        st.progress = (st.progress + 1) & M64
    return None


def _op_add_imm32(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    d = (w >> 48) & 0xFF
    s = (w >> 40) & 0xFF
    rc = st.reg_count
    if d >= rc or s >= rc:
        return _enc(w)
    regs = st.regs
    # low 32 bits of w are the immediate; two's complement add modulo 2^32
    regs[d] = (regs[s] + w) & M32
    return None


def _op_add_imm64(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
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


def _op_umin32(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
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


def _op_load_multiple(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    dec = _multi_decode(st, w)
    if dec is None:
        return _enc(w)
    addr, mask, base, top = dec
    if not mask:
        return None
    data = it.read(st, addr, 4 * top, ACCESS_READ)
    if isinstance(data, RunResult):
        return data
    vals = struct.unpack(f"<{top}I", data)
    regs = st.regs
    for i in range(top):
        if (mask >> i) & 1:
            regs[base + i] = vals[i]
    return None


def _op_store_multiple(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
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
        r = it.write(st, va, data)
        if r is not None:
            return r
    return RESYNC if it.resync else None


_CMP = (operator.le, operator.gt, operator.eq, operator.ne, operator.lt, operator.ge)


def _op_branch(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
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


def _op_set_sb_entry(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    ep = w & 0xF
    other = (w >> 4) & 0xF
    if ep >= st.scoreboards or other >= st.scoreboards:
        return _enc(w)
    st.sb_endpoint = ep
    st.sb_other = other
    return None


def _pair_ok(st: CsExecState, r: int) -> bool:
    return not r & 1 and r + 1 < st.reg_count


def _op_progress_wait(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    """Blocks until the progress counter reaches the 64-bit value in the source pair (the
    progress-incrementing work items in flight complete; inferred: one counter per stream)."""
    a = (w >> 40) & 0xFF
    if not _pair_ok(st, a):
        return _enc(w)
    until = progress_reached(st, st.reg64(a), it.clock())
    return _blocked_on(0, until) if until else None


def _op_set_exception_handler(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    a = (w >> 40) & 0xFF
    n = (w >> 32) & 0xFF
    if not _pair_ok(st, a) or n >= st.reg_count:
        return _enc(w)
    st.exc_handlers[w & 0xFF] = (st.reg64(a), st.regs[n])
    it.handler_set = True
    return None


def _transfer(st: CsExecState, w: int, jump: bool) -> HandlerResult:
    a = (w >> 40) & 0xFF
    n = (w >> 32) & 0xFF
    if not _pair_ok(st, a) or n >= st.reg_count:
        return _enc(w)
    length = st.regs[n]
    if length == 0:
        return None  # empty buffer: nothing to execute
    addr = st.reg64(a)
    if addr & 7 or addr + length > M64 + 1:
        return fatal(_E_ENC, addr)
    if length & 7:
        return fatal(_E_ENC, w)
    if not jump and st.in_buf and len(st.stack) + 1 >= CALL_STACK_DEPTH:
        return fatal(ExceptionType.CS_CALL_STACK_OVERFLOW, w)
    return Transfer(addr, addr + length, jump)


def _op_call(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _transfer(st, w, False)


def _op_jump(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _transfer(st, w, True)


def _op_req_resource(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    st.req_resource = w & 0xF
    return None


def _op_flush_cache2(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    r = (w >> 40) & 0xFF
    if r >= st.reg_count or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    blocked = _deferred(it, st, w)
    if blocked is not None:
        return blocked
    if w & 0xFFF:  # some flush mode requested
        fid = st.regs[r]
        # a non-zero ID older than the current one means a flush already happened: skip
        if fid == 0 or fid == it.hooks.latest_flush_id:
            it.hooks.flush_caches()
            st.flushes += 1
    return None


def _sync_update(
    it: CsInterpreter, st: CsExecState, w: int, is64: bool, add: bool
) -> HandlerResult:
    a = (w >> 40) & 0xFF
    d = (w >> 32) & 0xFF
    rc = st.reg_count
    regs = st.regs
    if a & 1 or a + 1 >= rc or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    blocked = _deferred(it, st, w)
    if blocked is not None:
        return blocked
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
        cur = it.read(st, addr, size, ACCESS_ATOMIC)
        if isinstance(cur, RunResult):
            return cur
        val = (fmt.unpack(cur)[0] + val) & mask
    if w & 1:  # error propagate: status word follows the value (idempotent, written first)
        r = it.write(st, (addr + size) & M64, _U32.pack(st.error))
        if r is not None:
            return r
    r = it.write(st, addr, fmt.pack(val))
    if r is not None:
        return r
    if (w >> 1) & 3 == 2:
        it.csg_sync = True
    else:
        it.sync = True
        if add and not st.in_buf:
            it.jobs += 1
    return RESYNC if it.resync else None


def _op_sync_add32(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _sync_update(it, st, w, False, True)


def _op_sync_set32(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _sync_update(it, st, w, False, False)


def _op_sync_add64(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _sync_update(it, st, w, True, True)


def _op_sync_set64(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _sync_update(it, st, w, True, False)


def _sync_wait(it: CsInterpreter, st: CsExecState, w: int, is64: bool) -> HandlerResult:
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
    data = it.read(st, addr, size + 4, ACCESS_READ)  # the value, then the u32 error status
    if isinstance(data, RunResult):
        return data
    cur = int.from_bytes(data[:size], "little")
    failed = int.from_bytes(data[size:], "little")
    if reject and failed:
        # error reject: a failed sync object ends the wait; the stream inherits the fault
        st.error = 1
        return fault(ExceptionType.CS_INHERIT_FAULT, addr)
    if (cur > ref) if cond else (cur <= ref):
        if failed:
            # error inherit (reject 0, Mesa's ".inherit"; *inferred*): the wait completes and
            # the stream takes the sync object's error state, so its error-propagating
            # SYNC_ADD/SET fail the objects they signal (panvk's cross-subqueue waits)
            st.error = 1
        return None
    return RunResult("blocked_sync", wait=SyncWait(addr, ref, "gt" if cond else "le", is64))


def _op_sync_wait32(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _sync_wait(it, st, w, False)


def _op_sync_wait64(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _sync_wait(it, st, w, True)


def _op_store_state(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    a = (w >> 40) & 0xFF
    if not _pair_ok(st, a) or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    # Deferred like SYNC_ADD: the state is sampled once the wait mask drained (panvk's
    # timestamp queries wait on the work they follow: cs_defer(all_iters, SB_ID(LS))).
    blocked = _deferred(it, st, w)
    if blocked is not None:
        return blocked
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
    r = it.write(st, addr, _U64.pack(int(v) & M64))
    if r is not None:
        return r
    return RESYNC if it.resync else None


def _op_progress_store(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    s = (w >> 40) & 0xFF
    if not _pair_ok(st, s):
        return _enc(w)
    st.progress = st.reg64(s)
    return None


def _op_progress_load(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    d = (w >> 48) & 0xFF
    if not _pair_ok(st, d):
        return _enc(w)
    st.set_reg64(d, st.progress)
    return None


def _op_error_barrier(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    st.error = 0
    return None


def _op_heap_set(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    a = (w >> 40) & 0xFF
    if not _pair_ok(st, a):
        return _enc(w)
    st.heap_ctx = st.reg64(a)
    return None


def _op_heap_operation(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    op = (w >> 32) & 3
    if op == 2 or (w >> 48) & 0xF >= st.scoreboards:
        return _enc(w)
    blocked = _deferred(it, st, w)
    if blocked is not None:
        return blocked
    r = heap_operation(it, st, op)
    if r is not None:
        return r
    st.heap_ops[op] += 1
    return None


def _op_trace_point(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
    return _enc(w) if (w >> 48) & 0xF >= st.scoreboards else _deferred(it, st, w)


#: Shader Program descriptor type (genxml v10 "Descriptor Type": Shader)
_SPD_TYPE_SHADER = 8
_SR_SPD = 16  # compute staging registers: SPD pointer pair r16 + 2 * spd_select


def _check_spd(it: CsInterpreter, st: CsExecState, w: int) -> RunResult | None:
    """RUN_COMPUTE(_INDIRECT) reads its Shader Program descriptor: a descriptor of another
    type is a recoverable DATA_INVALID_FAULT (CS_FAULT_INFO = its address); a null pointer
    runs no shader (*inferred*, docs/command-streams.md)."""
    r = _SR_SPD + 2 * ((w >> 42) & 3)
    if r + 1 >= st.reg_count:
        return None
    spd = st.reg64(r)
    if not spd:
        return None
    data = it.read(st, spd, 4, ACCESS_READ)
    if isinstance(data, RunResult):
        return data
    if data[0] & 0xF != _SPD_TYPE_SHADER:
        st.error = 1
        return fault(ExceptionType.DATA_INVALID_FAULT, spd)
    return None


def _finish_fragment_heap(it: CsInterpreter, st: CsExecState, w: int) -> RunResult | None:
    return give_back(it, st, st.reg64((w >> 40) & 0xFF), st.reg64((w >> 32) & 0xFF),
                     bool(w & 1))


#: What a work item does to memory before it is issued (None: it proceeds).
_EFFECTS: dict[str, Callable[[CsInterpreter, CsExecState, int], RunResult | None]] = {
    "compute": _check_spd,
    "compute_indirect": _check_spd,
    "tiling": allocate,
    "idvs": allocate,
    "finish_fragment": _finish_fragment_heap,
}


def _run_work(kind: str, check: Callable[[CsExecState, int], bool] | None = None) -> Handler:
    """Handler for a RUN_*/FINISH_* instruction: hands a work item to its endpoint, tracked
    by the current scoreboard entry until it completes (csf/workload.py); at scale 0 it
    completes at once. Tiling takes tiler heap memory and FINISH_FRAGMENT returns it
    (csf/tiler_heap.py); compute checks its shader descriptor."""
    k = WORK_KINDS.index(kind)
    progress = kind != "finish_fragment"  # its bits [39:32] are a register field
    deferred = kind == "finish_fragment"
    effect = _EFFECTS.get(kind)

    def handler(it: CsInterpreter, st: CsExecState, w: int) -> HandlerResult:
        if check is not None and not check(st, w):
            return _enc(w)
        slot = None
        if deferred:
            # FINISH_FRAGMENT is a deferred operation (genxml v10: Wait mask[16:16], Signal
            # slot[48:4]): the chunks go back only once the fragment work it waits on is done,
            # and its signal slot, not the endpoint entry, tracks it.
            slot = (w >> 48) & 0xF
            if slot >= st.scoreboards:
                return _enc(w)
            blocked = _deferred(it, st, w)
            if blocked is not None:
                return blocked
        after: RunResult | None = None
        if effect is not None:
            r = effect(it, st, w)
            if r is not None:
                if r.kind != "yield":
                    return r
                after = r  # completes, then the slice ends
        st.work[k] += 1
        inc = progress and bool((w >> 32) & 1)
        hang = it.hang_hook is not None and it.hang_hook()
        if it.scale or hang:
            t0 = start_item(st, kind, it.clock(), it.scale, inc, hang, slot)
            if it.tl is not None:
                it.work_span(kind, t0, st.ep_until[ENDPOINT[kind]])
        elif inc:
            st.progress = (st.progress + 1) & M64
        return after

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


_HANDLERS: dict[int, Handler] = {
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
DISPATCH: list[Handler] = [_HANDLERS.get(op, _op_invalid) for op in range(256)]

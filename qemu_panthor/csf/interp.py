"""Command-stream (CS) interpreter: what a Mali CSF command-stream front-end executes.

:class:`CsInterpreter` executes the instructions of one :class:`~.cs_state.CsExecState`
(mali CSF instruction set, docs/command-streams.md) through the GPU MMU of the group's address
space; the per-opcode handlers are in :mod:`.cs_ops`:

* the ring buffer is executed from ``extract`` to ``insert`` (``ring_base + (extract & (size-1))``);
  CALL/JUMP enter linear buffers, which return when exhausted;
* RUN_* work items run no shaders but take time on their endpoint (csf/workload.py): WAIT,
  PROGRESS_WAIT and deferred operations block until the work they name completes, and a
  stream whose ring is empty stays busy while its work is in flight; SYNC_WAIT blocks on
  memory;
* faults come back as :class:`RunResult` values; a GPU page fault stalls the instruction, which
  is retried on the next :meth:`CsInterpreter.run` (nothing is committed before the accesses of
  an instruction succeed, and non-idempotent writes come last).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..exceptions import ExceptionType
from ..mmu import Access, MmuFault
from .cs_ops import ACCESS_READ, DISPATCH, HandlerResult, Transfer, fatal
from .cs_state import (
    CALL_STACK_DEPTH,
    M64,
    RESULT_KINDS,
    RING_FRAME,
    WORK_KINDS,
    CsExecState,
    RunResult,
    SyncWait,
)
from .opcodes import disasm
from .workload import ENDPOINT, drained

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger(__name__)

PAGE = 4096
PAGE_MASK = ~(PAGE - 1)
_WORDS: dict[int, struct.Struct] = {}


def _words(data: bytes) -> tuple[int, ...]:
    n = len(data) >> 3
    s = _WORDS.get(n)
    if s is None:
        s = _WORDS[n] = struct.Struct(f"<{n}Q")
    return s.unpack_from(data)


class CsMmu(Protocol):
    """The part of :class:`qemu_panthor.mmu.Mmu` the interpreter uses."""

    def read(self, as_nr: int, va: int, size: int,
             access: Access = ...) -> bytes | MmuFault: ...

    def write(self, as_nr: int, va: int, data: bytes) -> MmuFault | None: ...

    @property
    def locked_ases(self) -> int: ...

    def lock_stalls(self, as_nr: int, va: int, size: int) -> bool: ...


class GpuHooks(Protocol):
    """GPU-wide services a CS uses (FLUSH_CACHE2, STORE_STATE)."""

    @property
    def latest_flush_id(self) -> int: ...

    def flush_caches(self) -> None: ...

    def timestamp(self) -> int: ...

    def cycle_count(self) -> int: ...


def new_state(reg_count: int = 96, scoreboards: int = 8) -> CsExecState:
    """A CS in its reset state (CS_FEATURES: reg_count registers, scoreboards entries)."""
    return CsExecState(reg_count, scoreboards)


class CsInterpreter:
    """Executes command streams through ``mmu`` for one GPU (``hooks``: flush/timestamp/cycles)."""

    def __init__(self, mmu: CsMmu, gpu_hooks: GpuHooks, *, work_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mmu = mmu
        self.hooks = gpu_hooks
        #: the cost model's scale (csf/workload.py); 0: work items complete at once
        self.scale = work_scale
        #: monotonic seconds, the time base of work items in flight
        self.clock = clock
        #: test port (WORK_HANG): True = the work item being issued never completes
        self.hang_hook: Callable[[], bool] | None = None
        self._table = DISPATCH
        self._pages: dict[int, tuple[int, tuple[int, ...]]] = {}
        self._seg_lo = 0
        self._seg_hi = 0
        self.resync = False
        self.sync = False
        self.csg_sync = False
        self.jobs = 0
        #: --timeline: work items become spans on ``tl_track`` + endpoint (None: off)
        self.tl: Timeline | None = None
        self.tl_track = ""
        #: FINISH_FRAGMENT returned chunks to a heap / SET_EXCEPTION_HANDLER ran (this run)
        self.heap_returned = False
        self.handler_set = False
        self._n = 0

    def work_span(self, kind: str, start: float, end: float) -> None:
        """--timeline: a work item on its endpoint from ``start`` to ``end`` (model clock,
        seconds; inf: a hung item)."""
        tl = self.tl
        if tl is None:
            return
        track = f"{self.tl_track} {('compute', 'tiler', 'fragment')[ENDPOINT[kind]]}"
        if end == float("inf"):
            tl.instant(track, f"{kind} (never completes)", ts=int(start * 1e9))
        else:
            tl.span(track, kind, int(start * 1e9), int(end * 1e9))

    # -- memory access helpers (used by handlers) ---------------------------------------
    def _fault(self, f: MmuFault, va: int) -> RunResult:
        if f.bus:
            return fatal(ExceptionType.CS_BUS_FAULT, va)
        return RunResult("mmu_fault", fault=f)

    def read(self, st: CsExecState, va: int, size: int, access: Access) -> bytes | RunResult:
        mmu = self.mmu
        if mmu.locked_ases and mmu.lock_stalls(st.as_nr, va, size):
            return RunResult("lock_stall")  # the instruction stalls, nothing committed
        r = mmu.read(st.as_nr, va, size, access)
        if type(r) is bytes:
            return r
        if isinstance(r, MmuFault):
            return self._fault(r, va)
        return bytes(r)

    def write(self, st: CsExecState, va: int, data: bytes) -> RunResult | None:
        mmu = self.mmu
        if mmu.locked_ases and mmu.lock_stalls(st.as_nr, va, len(data)):
            return RunResult("lock_stall")  # the instruction stalls, nothing committed
        f = mmu.write(st.as_nr, va, data)
        if f is not None:
            return self._fault(f, va)
        end = va + len(data)
        pages = self._pages
        if pages:
            for p in range(va & PAGE_MASK, end, PAGE):
                pages.pop(p, None)
        if va < self._seg_hi and self._seg_lo < end:
            self.resync = True
        return None

    # -- execution ------------------------------------------------------------------------
    def run(self, st: CsExecState, budget: int) -> RunResult:
        """Execute up to ``budget`` instructions of ``st``; never raises."""
        self.sync = self.csg_sync = False
        self.heap_returned = self.handler_set = False
        self.jobs = 0
        self._pages = {}
        self._n = 0
        try:
            res = self._run(st, max(0, int(budget)))
        except Exception:  # a model bug must not take the device down
            log.exception("CS interpreter internal error at %#x", st.cmd_ptr)
            res = fatal(ExceptionType.CSF_FW_INTERNAL_ERROR, 0)
            res.instructions = self._n
            res.cmd_ptr = st.cmd_ptr
        self._pages = {}
        self._seg_lo = self._seg_hi = 0
        res.sync_update = self.sync
        res.csg_sync_update = self.csg_sync
        res.jobs = self.jobs
        res.heap_returned = self.heap_returned
        res.handler_set = self.handler_set
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
                        frame = st.stack.pop()
                        if frame == RING_FRAME:  # an exception handler entered from the ring
                            st.in_buf = False
                        else:
                            st.pc, st.end = frame
                    else:  # back in the ring: the CALL/JUMP there completes
                        st.in_buf = False
                        st.extract = (st.extract + 8) & M64
                    continue
                if pc < 0:
                    return self._stop(fatal(ExceptionType.CS_INSTR_INVALID, pc), st, n)
                ring = False
            else:
                ext = st.extract
                avail = (st.insert - ext) & M64
                if not avail:
                    # the ring is empty; the stream is idle once its work items are done
                    until = drained(st, self.clock()) if self.scale else 0.0
                    if until:
                        return self._stop(RunResult("blocked_sb", until=until,
                                                    sb_mask=(1 << st.scoreboards) - 1), st, n)
                    return self._stop(RunResult("idle"), st, n)
                size = st.ring_size
                if size < 8 or size & (size - 1) or st.ring_base & 7 or ext & 7:
                    return self._stop(fatal(ExceptionType.CS_CONFIG_FAULT, 0), st, n)
                if avail > size or avail & 7:
                    # only a BRANCH can move extract out of the window once running
                    code = (ExceptionType.CS_INSTR_INVALID if executed
                            else ExceptionType.CS_CONFIG_FAULT)
                    return self._stop(fatal(code, st.cmd_ptr), st, n)
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
                data = self.read(st, pc, page + PAGE - pc, ACCESS_READ)
                if isinstance(data, RunResult):
                    return self._stop(data, st, n)
                ent = pages[page] = (pc, _words(data))
            cbase, words = ent
            if seg_end > page + PAGE:
                seg_end = page + PAGE
            self._seg_lo = cbase
            self._seg_hi = seg_end
            self.resync = False
            # -- execute the segment --------------------------------------------------------
            executed = True
            pc0 = pc
            left = budget - n
            ctl: HandlerResult = None
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
            if isinstance(ctl, RunResult):
                if ctl.kind in ("fault", "yield"):  # completed: go past it
                    n += 1
                    self._n = n
                    if ring:
                        st.extract = (st.extract + 8) & M64
                    else:
                        st.pc = pc + 8
                    if ctl.kind == "yield":  # completed, and the slice ends here
                        ctl = RunResult("budget")
                return self._stop(ctl, st, n)  # otherwise it did not complete
            n += 1  # completed control instruction
            self._n = n
            if not isinstance(ctl, Transfer):  # RESYNC: re-fetch after the instruction
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


__all__ = [
    "CALL_STACK_DEPTH",
    "RESULT_KINDS",
    "WORK_KINDS",
    "CsExecState",
    "CsInterpreter",
    "RunResult",
    "SyncWait",
    "new_state",
]

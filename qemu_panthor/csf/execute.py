"""Running a slice of one command stream and publishing what it did.

The scheduler picks a stream; :class:`CsExecutor` runs it in the interpreter for a bounded
number of instructions and turns the :class:`~.cs_state.RunResult` into firmware state and
host-visible effects: the ring's extract pointer, blocked sync waits, MMU-fault stalls (retried
after the driver's AS command, in the same tables only), CS FATAL events, and the CSG's
SYNC_UPDATE and IDLE events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..exceptions import ExceptionType
from ..mmu import Mmu
from .bus import McuFault
from .cs_state import EXC_TILER_OOM, RunResult
from .events import CsfEvents
from .interp import CsInterpreter
from .runtime import CsgRuntime, CsRuntime, FwRuntime
from .scheduler import CsfScheduler
from .section import ev, evlog

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger("qemu_panthor.csf")


class CsExecutor:
    """Runs stream slices for the scheduler (its ``run_slice``)."""

    def __init__(self, rt: FwRuntime, interp: CsInterpreter, mmu: Mmu, events: CsfEvents,
                 sched: CsfScheduler, *, on_mcu_fault: Callable[[str], None]) -> None:
        self.rt = rt
        self.interp = interp
        self.mmu = mmu
        self.events = events
        self.sched = sched
        self._mcu_fatal = on_mcu_fault
        #: --timeline: execution slices, jobs and work items per stream (None: off)
        self.tl: Timeline | None = None

    def run_slice(self, cs: CsRuntime, budget: int) -> None:
        """Run one slice of ``cs`` and publish its effects (extract, status, events)."""
        csg = self.rt.csgs[cs.csg]
        st = cs.st
        if st is None:
            return
        try:
            if cs.stalled_fault is not None and not self._retry_allowed(cs):
                self.events.flush(csg)
                return
            tl = self.tl
            if tl is not None:
                track = f"CS{cs.csg}.{cs.index}"
                self.interp.tl_track = track
                tl.begin(track, "slice", cmd_ptr=st.cmd_ptr)
            res = self.interp.run(st, budget)  # never raises
            if tl is not None:
                tl.end(track, result=res.kind, instructions=res.instructions)
                if res.jobs:
                    tl.jobs_done(f"{track} jobs", st.extract, res.jobs)
            if evlog.isEnabledFor(logging.DEBUG):
                ev("CSG%d CS%d slice: %s after %d instructions", cs.csg, cs.index, res.kind,
                   res.instructions)
            self.rt.stats["cs_instructions"] += res.instructions
            self.rt.stats["jobs"] += res.jobs
            self._apply(csg, cs, res)
            self.events.flush(csg)
        except McuFault as e:
            self._mcu_fatal(str(e))

    def _retry_allowed(self, cs: CsRuntime) -> bool:
        """A CS retrying an access that faulted: allowed only while its AS still holds the
        tables it faulted in. If the driver disabled the AS (panthor's answer to an unhandled
        fault) or latched another VM's tables into it, the faulted access is terminated and
        the CS fails with that fault: hardware never replays it into another address space
        (doing so raised the old fault in the new owner's name and killed its group)."""
        fault, then = cs.stalled_fault, cs.stalled_binding
        cs.stalled_fault = None
        cs.stalled_binding = None
        assert fault is not None
        now = self.mmu.binding(fault.as_nr)
        if now.enabled and then is not None and now.transtab == then.transtab:
            return True
        self.events.report_cs_fatal(cs, ExceptionType.CS_BUS_FAULT, 0, fault.va,
                                    why=f"AS{fault.as_nr} disabled or re-assigned during "
                                        "the fault")
        return False

    def _heap_wait(self, csg: CsgRuntime, cs: CsRuntime, *, fragments_pending: bool) -> None:
        """A draw still finds no heap memory after the host answered TILER_OOM with no chunk.

        As kbase documents for a null answer, the firmware waits for fragment work to return
        chunks (FINISH_FRAGMENT) if some is pending; otherwise it runs the TILER_OOM exception
        handler a stream of the group registered (this stream's first; panvk registers it
        on its fragment queue around the wait for tiling) to render incrementally and free
        chunks. Without one the exception stays pending until a handler is registered or
        chunks come back, and the group makes no progress (the progress timer reports it)."""
        st = cs.st
        if st is None:
            return
        cs.runnable = False
        cs.heap_wait = st.heap_ctx
        self.events.watch_progress(csg, float("inf"))
        if fragments_pending:
            return
        for other in [cs] + [o for o in csg.streams if o is not cs]:
            ost = other.st
            if (ost is None or not other.started or other.fatal or other.fault_pending
                    or other.oom_pending or other.stalled_as is not None
                    or (other is not cs and other.heap_wait is not None)):
                continue
            h = ost.handler(EXC_TILER_OOM)
            if h is None or not ost.enter_handler(*h):
                continue
            log.info("CSG%d CS%d: tiler OOM exception handler %#x+%#x runs on CS%d",
                     csg.index, cs.index, h[0], h[1], other.index)
            st.oom_null = False  # a draw that still fails after the handler asks the host
            other.wait = None  # an interrupted SYNC_WAIT/WAIT runs again after the handler
            other.cancel_sb_wait()
            other.heap_wait = None
            other.runnable = True
            self.sched.kick()
            return
        log.info("CSG%d CS%d: tiler heap exhausted, no exception handler: pending",
                 csg.index, cs.index)

    def _wake_heap_waiters(self, match: Callable[[CsgRuntime, int], bool]) -> None:
        """Streams waiting for heap memory retry their draw (chunks came back, or a handler
        was registered)."""
        woke = False
        for g in self.rt.csgs:
            if not g.active:
                continue
            for other in g.streams:
                if other.heap_wait is not None and match(g, other.heap_wait):
                    other.heap_wait = None
                    other.runnable = True
                    woke = True
        if woke:
            self.sched.kick()

    def _apply(self, csg: CsgRuntime, cs: CsRuntime, res: RunResult) -> None:
        self.events.publish_extract(cs)
        kind = res.kind
        if kind == "idle":
            cs.runnable = False
        elif kind == "budget":
            cs.runnable = True
        elif kind == "blocked_sync":
            cs.runnable = False
            cs.wait = res.wait
            self.events.write_cs_status(cs)
        elif kind == "blocked_sb":
            # waits for its endpoint work (csf/workload.py): woken when that completes
            cs.runnable = False
            self.sched.wake_at(cs, res.until, res.sb_mask)
            self.events.watch_progress(csg, res.until)
            self.events.write_cs_status(cs)
        elif kind == "mmu_fault" and res.fault is not None:
            cs.runnable = False
            fault = res.fault
            binding = self.mmu.binding(fault.as_nr)
            if not binding.enabled:
                # The driver disabled this AS (panthor's answer to an unhandled fault): no
                # update can resolve the access; the terminated access fails the CS with
                # CS_FATAL CS_BUS_FAULT (kbase cs_error_worker: "For an invalid GPU page
                # fault, CS_BUS_FAULT fatal error is expected after the page fault handler
                # disables the AS"). The MMU fault itself was reported on MMU_INT.
                self.events.report_cs_fatal(cs, ExceptionType.CS_BUS_FAULT, 0, fault.va,
                                            why=f"access in disabled AS{fault.as_nr}")
                return
            cs.stalled_as = fault.as_nr
            cs.stalled_fault = fault
            cs.stalled_binding = binding
            log.info("CSG%d CS%d stalled on MMU fault %s", cs.csg, cs.index, fault)
        elif kind == "lock_stall":
            # An access into a region the driver locked (AS_COMMAND LOCK): the stream waits
            # for the AS command that ends the lock (UNLOCK, FLUSH_PT, FLUSH_MEM) and retries.
            cs.runnable = False
            cs.stalled_as = csg.as_nr
            cs.stalled_binding = self.mmu.binding(csg.as_nr)
            self.rt.stats["lock_stalls"] += 1
        elif kind == "fatal":
            self.events.report_cs_fatal(cs, res.exception_type, res.exception_data, res.info)
        elif kind == "fault":
            # completed with a recoverable fault (its work dropped): waits for the host's ack
            self.events.report_cs_fault(cs, res.exception_type, res.exception_data, res.info)
        elif kind == "tiler_oom":
            st = cs.st
            vs, ve, fe = res.counters
            self.events.report_tiler_oom(cs, st.heap_ctx if st is not None else 0, vs, ve, fe)
            self.events.watch_progress(csg, float("inf"))
        elif kind == "heap_wait":
            self._heap_wait(csg, cs, fragments_pending=bool(res.info))
        else:
            self.events.report_cs_fatal(cs, ExceptionType.CSF_FW_INTERNAL_ERROR, 0, 0,
                                        why=f"unknown run result {kind!r}")
        if res.heap_returned:
            self._wake_heap_waiters(lambda g, w: g.as_nr == csg.as_nr
                                    and cs.st is not None and w == cs.st.heap_ctx)
        if res.handler_set:
            self._wake_heap_waiters(lambda g, w: g is csg)
        if res.sync_update:
            csg.sync_pending = True  # system scope: tell the host (CSG SYNC_UPDATE)
            self.sched.reevaluate_waits()
            for other in self.rt.csgs:  # ... and it may unblock streams of other groups
                if other is not csg and other.active:
                    self.events.update_idle(other)
        elif res.csg_sync_update:
            self.sched.reevaluate_waits(csg)  # CSG scope: wakes this group's streams only

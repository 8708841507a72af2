"""The MCU's command-stream scheduler: which CS runs next, and for how long.

Models the firmware's job of multiplexing the resident command streams (CSG slots x CS slots)
on the hardware: one asyncio task runs the runnable streams in turn, each for a bounded number
of instructions (a *slice*), yielding to the event loop between slices so that MMIO replies are
never delayed by a busy stream. Every runnable stream of every resident group gets a slice per
round, higher priority first: resident groups run side by side, as on hardware. Streams
blocked on a sync object are re-evaluated on every system-scope sync update and every
doorbell (with a slow safety-net poll for host-CPU writes that ring nothing).
``pump()`` runs slices synchronously for unit tests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..eventloop import DeadlineTimer, running_loop
from ..mmu import Mmu, MmuFault
from .runtime import CsgRuntime, CsRuntime, FwRuntime

log = logging.getLogger("qemu_panthor.csf.sched")


class CsfScheduler:
    """Round-robin, priority-ordered execution of runnable CSs in bounded slices."""

    def __init__(self, rt: FwRuntime, mmu: Mmu, *, stream_num: int,
                 run_slice: Callable[[CsRuntime, int], None],
                 on_crash: Callable[[str], None], budget: int = 256,
                 loop: asyncio.AbstractEventLoop | None = None,
                 safety_poll: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rt = rt
        #: the time base of work in flight (the interpreter's)
        self.clock = clock
        self.mmu = mmu
        self.stream_num = stream_num
        #: runs one slice of a stream (:meth:`.execute.CsExecutor.run_slice`)
        self.run_cs_slice = run_slice
        self._on_crash = on_crash
        self.budget = budget
        self.safety_poll = safety_poll
        self._loop = loop
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._ran: set[int] = set()  # streams that had their slice in this round
        self.slices = 0

    # -- wake-up sources ---------------------------------------------------------------------
    def kick(self) -> None:
        """Work may be runnable: make sure the execution task is scheduled (if a loop runs)."""
        if self._wake is not None:
            self._wake.set()
        if self._task is not None and not self._task.done():
            return
        loop = running_loop(self._loop)
        if loop is None:
            return  # synchronous use: the caller pumps
        if loop.is_closed():
            return
        self._task = loop.create_task(self._run(), name="csf-scheduler")

    def stop(self) -> None:
        """Stop executing (MCU halted/disabled/reset). Queued state is dropped by the caller."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    def on_as_update(self, as_nr: int) -> None:
        """The driver issued an AS command on ``as_nr`` or cleared its MMU_INT bit.

        A stalled transaction is restarted by an AS command (UPDATE, UNLOCK, FLUSH_PT,
        FLUSH_MEM), not by clearing the interrupt: clearing only re-arms the fault report
        (kbase clears *before* the flush that restarts stalled transactions so that a new
        fault raises a new interrupt). Retrying on the clear alone re-raised the same fault
        after panthor's handler had cleared it; panthor masks the bit of a faulty AS, the
        stale bit outlived the VM (and a runtime suspend, which forgets faulty slots) and
        fired when the slot was unmasked for another VM, killing that VM's group. The
        firmware checks, when the retry runs, that the AS still holds the same tables."""
        stalled = [cs for csg in self.rt.csgs for cs in csg.streams
                   if cs.stalled_as == as_nr and cs.started]
        if not stalled:
            return
        restarts = self.mmu.binding(as_nr).restarts
        woke = False
        for cs in stalled:
            then = cs.stalled_binding
            if then is not None and restarts == then.restarts:
                continue  # MMU_INT_CLEAR only: the access stays stalled
            cs.stalled_as = None
            cs.runnable = True
            woke = True
        if woke:
            self.kick()

    def wake_at(self, cs: CsRuntime, until: float, mask: int) -> None:
        """``cs`` waits for work in flight that completes at ``until`` (inf: never; only a
        reset, suspend or termination ends the wait): wake it then."""
        cs.cancel_sb_wait()
        cs.sb_wait = (until, mask)
        if until == float("inf"):
            return
        loop = running_loop(self._loop)
        if loop is None:
            return  # synchronous use: the caller calls wake_due()
        # not call_later alone: a loop may fire it before ``until`` (eventloop.DeadlineTimer)
        cs.sb_timer = DeadlineTimer(loop, until, self.clock, self.wake_due)

    def wake_due(self) -> int:
        """Make runnable the streams whose awaited work has completed; how many."""
        now = self.clock()
        woke = 0
        for csg in self.rt.csgs:
            for cs in csg.streams:
                w = cs.sb_wait
                if w is not None and w[0] <= now:
                    cs.cancel_sb_wait()
                    if cs.started:
                        cs.runnable = True
                        woke += 1
        if woke:
            self.kick()
        return woke

    def reevaluate_waits(self, only: CsgRuntime | None = None) -> None:
        """Re-check blocked SYNC_WAITs against memory (after sync updates / doorbells)."""
        mmu = self.mmu
        woke = False
        for csg in self.rt.csgs:
            if not csg.active or (only is not None and csg is not only):
                continue
            for cs in csg.streams:
                w = cs.wait
                if w is None or not cs.started:
                    continue
                r = mmu.read(csg.as_nr, w.ptr, 8 if w.is_64 else 4, report=False)
                if isinstance(r, MmuFault):
                    ok = True  # the interpreter will take (and report) the fault
                else:
                    ok = w.satisfied(int.from_bytes(r, "little"))
                if ok:
                    cs.wait = None
                    cs.runnable = True
                    woke = True
        if woke:
            self.kick()

    # -- execution -----------------------------------------------------------------------------
    def _pick(self) -> CsRuntime | None:
        """The next stream to run: every runnable stream of every resident CSG once per
        round, higher priority (CSG endpoint priority, then CS priority) first in the round.

        On hardware each CS front-end executes its own instructions; resident groups run
        side by side and priority only orders their access to shared endpoint resources
        (docs/firmware.md, "Resident groups run side by side"). A stream made runnable in
        the middle of a round joins that round."""
        best: CsRuntime | None = None
        best_order = (0, 0)
        stream_num = self.stream_num
        ran = self._ran
        for csg in self.rt.csgs:
            if not csg.active:
                continue
            for cs in csg.streams:
                if not (cs.runnable and cs.started and cs.st is not None):
                    continue
                key = csg.index * stream_num + cs.index
                if key in ran:
                    continue
                order = (-((csg.priority << 4) | cs.priority), key)
                if best is None or order < best_order:
                    best, best_order = cs, order
        if best is not None:
            ran.add(best_order[1])
            return best
        if not ran:
            return None
        ran.clear()  # everyone runnable has had its slice: a new round
        return self._pick()

    def run_slice(self) -> bool:
        """Run one slice of the next runnable CS; False if nothing was runnable."""
        if not self.rt.running:
            return False
        cs = self._pick()
        if cs is None:
            return False
        self.slices += 1
        self.run_cs_slice(cs, self.budget)
        return True

    def pump(self, max_slices: int = 10_000) -> int:
        """Synchronously run up to ``max_slices`` slices (tests); returns how many ran."""
        n = 0
        while n < max_slices and self.run_slice():
            n += 1
        return n

    def has_blocked(self) -> bool:
        return any(cs.wait is not None for csg in self.rt.csgs if csg.active
                   for cs in csg.streams)

    async def _run(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        try:
            while self.rt.running:
                if self.run_slice():
                    await asyncio.sleep(0)
                    continue
                self._wake.clear()
                if self.has_blocked():
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.safety_poll)
                    except TimeoutError:
                        self.reevaluate_waits()
                else:
                    await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - last-resort guard: never kill the server
            log.exception("CSF scheduler crashed; MCU marked FATAL")
            self._on_crash("scheduler crashed")
        finally:
            if self._task is asyncio.current_task():
                self._task = None


__all__ = ["CsfScheduler"]

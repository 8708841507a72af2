"""The MCU's command-stream scheduler: which CS runs next, and for how long.

Models the firmware's job of multiplexing the resident command streams (CSG slots x CS slots)
on the hardware: one asyncio task runs a highest-priority runnable CS for a bounded number of
instructions (a *slice*), then yields to the event loop so that MMIO replies are never delayed
by a busy stream. Streams blocked on a sync object are re-evaluated on every system-scope sync
update and every doorbell (with a slow safety-net poll for host-CPU writes that ring nothing).
``pump()`` runs slices synchronously for unit tests.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mcu import CsfFirmware

log = logging.getLogger("qemu_panthor.csf.sched")


@dataclass
class SyncWait:
    """A CS blocked in SYNC_WAIT: unblocked when ``*ptr`` (``cond``) ``value``."""

    ptr: int
    value: int
    cond: str  # "le" or "gt" (host's unblock test: GT ? v > ref : v <= ref)
    is_64: bool

    def satisfied(self, current: int) -> bool:
        if self.cond == "gt":
            return current > self.value
        if self.cond == "le":
            return current <= self.value
        return True  # unknown condition: let the interpreter re-evaluate it


@dataclass
class CsRuntime:
    """Firmware-private state of one CS slot (lost when the MCU is disabled/reset)."""

    csg: int
    index: int
    started: bool = False
    st: Any = None  # interp.CsExecState
    ring_base: int = 0
    ring_size: int = 0
    input_va: int = 0  # ringbuf_input (MCU VA)
    output_va: int = 0  # ringbuf_output (MCU VA)
    priority: int = 0
    doorbell: int = 0
    runnable: bool = False
    wait: SyncWait | None = None
    stalled_as: int | None = None  # stalled on an MMU fault in this AS
    stalled_fault: Any = None  # that fault (an mmu.MmuFault)
    stalled_root: int | None = None  # the AS's latched TRANSTAB when it faulted
    stalled_restarts: int | None = None  # the AS's restart-command count when it faulted
    fault_pending: bool = False
    fatal: bool = False
    written_extract: int = -1

    def reset(self) -> None:
        self.started = False
        self.st = None
        self.runnable = False
        self.wait = None
        self.stalled_as = None
        self.stalled_fault = None
        self.stalled_root = None
        self.stalled_restarts = None
        self.fault_pending = False
        self.fatal = False
        self.written_extract = -1

    @property
    def idle(self) -> bool:
        """Idle as CS_REQ IDLE_EMPTY/IDLE_SYNC_WAIT define it (host always sets both)."""
        if not self.started or self.fatal:
            return True
        if self.runnable or self.stalled_as is not None or self.fault_pending:
            return False
        return True  # ring empty or blocked on a sync wait


@dataclass
class CsgRuntime:
    """Firmware-private state of one CSG slot."""

    index: int
    streams: list[CsRuntime]
    active: bool = False
    as_nr: int = 0
    priority: int = 0
    endpoint_req: int = 0
    suspend_buf: int = 0
    idle_reported: bool = False
    sync_pending: bool = False
    idle_event: asyncio.TimerHandle | None = None  # the deferred IDLE event (hysteresis)

    @classmethod
    def new(cls, index: int, stream_num: int) -> CsgRuntime:
        return cls(index, [CsRuntime(index, j) for j in range(stream_num)])

    def cancel_idle_event(self) -> None:
        if self.idle_event is not None:
            self.idle_event.cancel()
            self.idle_event = None

    def reset(self) -> None:
        self.cancel_idle_event()
        self.active = False
        self.idle_reported = False
        self.sync_pending = False
        for cs in self.streams:
            cs.reset()


class CsfScheduler:
    """Round-robin, priority-ordered execution of runnable CSs in bounded slices."""

    def __init__(self, fw: CsfFirmware, interp: Any, *, budget: int = 256,
                 loop: asyncio.AbstractEventLoop | None = None,
                 safety_poll: float = 0.05) -> None:
        self.fw = fw
        # ``interp`` is the interpreter module (or a stand-in with its API: CsInterpreter,
        # new_state, CsExecState), or an interpreter instance already bound to the GPU (what
        # qemu_panthor.device passes); an instance is used as is, state comes from the module.
        self._interp_mod: Any = interp
        self._interp: Any = None
        if interp is not None and hasattr(interp, "run") and not hasattr(interp, "new_state"):
            self._interp_mod = None
            self._interp = interp
        self.budget = budget
        self.safety_poll = safety_poll
        self._loop = loop
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._last_key = -1
        self.slices = 0

    # -- interpreter -------------------------------------------------------------------------
    @property
    def interp_module(self) -> Any:
        if self._interp_mod is None:
            from . import interp  # the CS interpreter (written separately)

            self._interp_mod = interp
        return self._interp_mod

    @property
    def interpreter(self) -> Any:
        if self._interp is None:
            self._interp = self.interp_module.CsInterpreter(self.fw.gpu.mmu, self.fw.gpu)
        return self._interp

    def new_state(self) -> Any:
        cfg = self.fw.config
        return self.interp_module.new_state(reg_count=cfg.reg_count, scoreboards=cfg.scoreboards)

    def restore_state(self, blob: bytes) -> Any:
        return self.interp_module.CsExecState.deserialise(blob)

    # -- wake-up sources ---------------------------------------------------------------------
    def kick(self) -> None:
        """Work may be runnable: make sure the execution task is scheduled (if a loop runs)."""
        if self._wake is not None:
            self._wake.set()
        if self._task is not None and not self._task.done():
            return
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
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
        stalled = [cs for csg in self.fw.csgs for cs in csg.streams
                   if cs.stalled_as == as_nr and cs.started]
        if not stalled:
            return
        restarts = self.fw.as_restarts(as_nr)
        woke = False
        for cs in stalled:
            if restarts is not None and restarts == cs.stalled_restarts:
                continue  # MMU_INT_CLEAR only: the access stays stalled
            cs.stalled_as = None
            cs.runnable = True
            woke = True
        if woke:
            self.kick()

    def reevaluate_waits(self, only: CsgRuntime | None = None) -> None:
        """Re-check blocked SYNC_WAITs against memory (after sync updates / doorbells)."""
        mmu = self.fw.gpu.mmu
        woke = False
        for csg in self.fw.csgs:
            if not csg.active or (only is not None and csg is not only):
                continue
            for cs in csg.streams:
                w = cs.wait
                if w is None or not cs.started:
                    continue
                r = mmu.read(csg.as_nr, w.ptr, 8 if w.is_64 else 4, report=False)
                if isinstance(r, bytes | bytearray):
                    ok = w.satisfied(int.from_bytes(r, "little"))
                else:
                    ok = True  # the interpreter will take (and report) the fault
                if ok:
                    cs.wait = None
                    cs.runnable = True
                    woke = True
        if woke:
            self.kick()

    # -- execution -----------------------------------------------------------------------------
    def _pick(self) -> CsRuntime | None:
        best: list[tuple[int, CsRuntime]] = []
        best_prio = -1
        stream_num = self.fw.config.stream_num
        for csg in self.fw.csgs:
            if not csg.active:
                continue
            for cs in csg.streams:
                if not (cs.runnable and cs.started and cs.st is not None):
                    continue
                prio = (csg.priority << 4) | cs.priority
                if prio > best_prio:
                    best_prio, best = prio, []
                if prio == best_prio:
                    best.append((csg.index * stream_num + cs.index, cs))
        if not best:
            return None
        for key, cs in best:  # round-robin among equals: next key after the last one run
            if key > self._last_key:
                self._last_key = key
                return cs
        self._last_key, cs = best[0]
        return cs

    def run_slice(self) -> bool:
        """Run one slice of the next runnable CS; False if nothing was runnable."""
        if not self.fw.running:
            return False
        cs = self._pick()
        if cs is None:
            return False
        self.slices += 1
        self.fw.run_cs_slice(cs, self.budget)
        return True

    def pump(self, max_slices: int = 10_000) -> int:
        """Synchronously run up to ``max_slices`` slices (tests); returns how many ran."""
        n = 0
        while n < max_slices and self.run_slice():
            n += 1
        return n

    def has_blocked(self) -> bool:
        return any(cs.wait is not None for csg in self.fw.csgs if csg.active
                   for cs in csg.streams)

    async def _run(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        try:
            while self.fw.running:
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
            self.fw.mcu_fatal("scheduler crashed")
        finally:
            if self._task is asyncio.current_task():
                self._task = None


__all__ = ["CsRuntime", "CsfScheduler", "CsgRuntime", "SyncWait"]

"""Firmware-private state of the CSG and CS slots: what the MCU keeps in its own RAM.

Nothing here survives an MCU stop (disable, halt, GPU reset): the host's view lives in the
shared section (guest memory) and a suspended group's streams live in its suspend buffer.
All parts of the firmware model (:mod:`.mcu`, :mod:`.slots`, :mod:`.events`, :mod:`.execute`,
:mod:`.scheduler`) share one :class:`FwRuntime`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from ..eventloop import DeadlineTimer
from ..mmu import AsBinding, MmuFault
from .cs_state import CsExecState, SyncWait


@dataclass
class CsRuntime:
    """Firmware-private state of one CS slot."""

    csg: int
    index: int
    started: bool = False
    st: CsExecState | None = None
    ring_base: int = 0
    ring_size: int = 0
    input_va: int = 0  # ringbuf_input (MCU VA)
    output_va: int = 0  # ringbuf_output (MCU VA)
    priority: int = 0
    doorbell: int = 0
    runnable: bool = False
    wait: SyncWait | None = None
    stalled_as: int | None = None  # stalled on an MMU fault in this AS, until a restart
    stalled_fault: MmuFault | None = None  # that fault, until the access is retried
    stalled_binding: AsBinding | None = None  # the AS's tables and restart count at the fault
    fault_pending: bool = False
    fatal: bool = False
    written_extract: int = -1
    #: blocked on work in flight (WAIT, PROGRESS_WAIT, a deferred operation, an empty ring
    #: with work running): (when it completes, awaited scoreboard mask; 0 = progress)
    sb_wait: tuple[float, int] | None = None
    sb_timer: DeadlineTimer | None = None  # wakes the stream when that work completes
    #: tiler heap (csf/tiler_heap.py): TILER_OOM raised, the host has not answered yet
    oom_pending: bool = False
    #: waiting for heap chunks after the host had none to give (fragment work returning
    #: chunks, or an exception handler that frees some): the heap context's address
    heap_wait: int | None = None

    def reset(self) -> None:
        self.started = False
        self.st = None
        self.runnable = False
        self.wait = None
        self.stalled_as = None
        self.stalled_fault = None
        self.stalled_binding = None
        self.fault_pending = False
        self.fatal = False
        self.written_extract = -1
        self.oom_pending = False
        self.heap_wait = None
        self.cancel_sb_wait()

    def cancel_sb_wait(self) -> None:
        self.sb_wait = None
        if self.sb_timer is not None:
            self.sb_timer.cancel()
            self.sb_timer = None

    @property
    def idle(self) -> bool:
        """Idle as CS_REQ IDLE_EMPTY/IDLE_SYNC_WAIT define it (host always sets both)."""
        if not self.started or self.fatal:
            return True
        if (self.runnable or self.stalled_as is not None or self.fault_pending
                or self.sb_wait is not None or self.oom_pending or self.heap_wait is not None):
            return False  # work items in flight (or a draw waiting for heap) keep it busy
        return True  # ring empty or blocked on a sync wait

    def stuck(self, now: float) -> bool:
        """Waiting on endpoint work that has not completed by ``now``: work in flight, or a
        draw the tiler cannot place for want of heap memory (the progress timer's view)."""
        w = self.sb_wait
        return ((w is not None and w[0] > now) or self.oom_pending
                or self.heap_wait is not None)


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
    #: progress timer: when the group's awaited work is overdue (no progress), its check
    progress_deadline: float = 0.0
    progress_check: DeadlineTimer | None = None
    progress_reported: bool = False  # PROGRESS_TIMER_EVENT raised for this residency

    @classmethod
    def new(cls, index: int, stream_num: int) -> CsgRuntime:
        return cls(index, [CsRuntime(index, j) for j in range(stream_num)])

    def cancel_idle_event(self) -> None:
        if self.idle_event is not None:
            self.idle_event.cancel()
            self.idle_event = None

    def cancel_progress_check(self) -> None:
        self.progress_deadline = 0.0
        if self.progress_check is not None:
            self.progress_check.cancel()
            self.progress_check = None

    def reset(self) -> None:
        self.cancel_idle_event()
        self.cancel_progress_check()
        self.progress_reported = False
        self.active = False
        self.idle_reported = False
        self.sync_pending = False
        for cs in self.streams:
            cs.reset()


@dataclass
class FwRuntime:
    """The MCU's run state and its slots."""

    csgs: list[CsgRuntime]
    running: bool = False
    halted: bool = False
    #: cs_instructions: CS instructions executed; jobs: kernel job-ring sequences completed
    #: (system-scope SYNC_ADDs executed from a ring itself); cs_fatal: CS FATAL events.
    stats: Counter[str] = field(default_factory=Counter)

    @classmethod
    def new(cls, group_num: int, stream_num: int) -> FwRuntime:
        return cls([CsgRuntime.new(i, stream_num) for i in range(group_num)])

    def drop_slots(self) -> None:
        for csg in self.csgs:
            csg.reset()

"""What the firmware tells the host about its streams: CS FATAL/FAULT, CSG SYNC_UPDATE and
IDLE events, and the CS status fields (reference §7.4, §7.6)."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..eventloop import DeadlineTimer, running_loop
from . import iface as I
from .runtime import CsgRuntime, CsRuntime, FwRuntime
from .section import SharedSection, ev, evlog
from .workload import busy_mask

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger("qemu_panthor.csf")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

#: CSG IDLE event hysteresis (host seconds). panthor programs idle_timer = 800 us for real
#: hardware, where its job-completion path takes tens of microseconds; under TCG that path
#: (IRQ, threaded handler, event work, fence, user wake-up, next submit) takes 1-3 ms.
IDLE_HYSTERESIS_S = 0.005

#: Called as (csg, cs, exception_type, exception_data, info) on every CS FATAL event.
CsFatalHook = Callable[[int, int, int, int, int], None]


#: --timeline names of the CS events
_CS_EVENT_NAMES = {I.CS_FATAL: "FATAL event", I.CS_FAULT: "FAULT event",
                   I.CS_TILER_OOM: "TILER_OOM event"}


class CsfEvents:
    """Raises the events and writes the status words the host reads."""

    def __init__(self, section: SharedSection, rt: FwRuntime, *,
                 on_mcu_fault: Callable[[Callable[[], None]], None],
                 idle_hysteresis: float = IDLE_HYSTERESIS_S) -> None:
        self.section = section
        self.bus = section.bus
        self.rt = rt
        #: runs a callable, turning an MCU fault inside it into MCU FATAL
        self._guard = on_mcu_fault
        #: seconds a CSG must stay idle before its IDLE event is raised (0: at once)
        self.idle_hysteresis = idle_hysteresis
        self.on_cs_fatal: CsFatalHook | None = None
        #: the time base of work in flight (the interpreter's; CS_STATUS_SCOREBOARDS)
        self.clock: Callable[[], float] = time.monotonic
        #: seconds a group may wait on its endpoint work without any of it completing
        #: (GLB progress_timer x 1024 GPU cycles; 0: the timer is off)
        self.progress_timeout = 0.0
        #: --timeline: the events raised to the host (None: off)
        self.tl: Timeline | None = None
        #: GLB_REQ IDLE_EN (level): the host wants GLB IDLE events
        self.glb_idle_enabled = False
        self.gpu_idle_reported = False  # GLB IDLE raised for the current idle period
        self._glb_idle_event: asyncio.TimerHandle | None = None

    # -- CS events ----------------------------------------------------------------------------
    def cs_event(self, cs: CsRuntime, bit: int) -> None:
        """Raise CS event ``bit`` and the CSG's cs_irq_req bit for this stream."""
        s, i, j = self.section, cs.csg, cs.index
        if self.tl is not None:
            self.tl.instant(f"CS{i}.{j}", _CS_EVENT_NAMES.get(bit, f"event {bit:#x}"))
        s.raise_event(s.cs_out(i, j), s.cs_in(i, j) + I.CS_INPUT.off["req"], bit)
        s.raise_event(s.csg_out(i) + I.CSG_OUTPUT.off["cs_irq_req"],
                      s.csg_in(i) + I.CSG_INPUT.off["cs_irq_ack"], 1 << j)
        s.irq(1 << i)

    def report_cs_fatal(self, cs: CsRuntime, exc_type: int, exc_data: int, info: int,
                        why: str = "") -> None:
        """CS FATAL event (§7.4): fatal/fatal_info, toggle CS ack bit 30 and cs_irq_req[j]."""
        log.warning("CSG%d CS%d FATAL: exception %#x data %#x info %#x %s", cs.csg, cs.index,
                    exc_type, exc_data, info, why)
        self.rt.stats["cs_fatal"] += 1
        if self.on_cs_fatal is not None:
            try:
                self.on_cs_fatal(cs.csg, cs.index, exc_type, exc_data, info)
            except Exception:  # an observer's bug must not take the MCU down
                log.exception("on_cs_fatal hook failed")
        self._write_exception(cs, "fatal", exc_type, exc_data, info)
        cs.fatal = True
        cs.runnable = False
        cs.wait = None
        self.cs_event(cs, I.CS_FATAL)

    def _write_exception(self, cs: CsRuntime, field: str, exc_type: int, exc_data: int,
                         info: int) -> None:
        """CS output ``field`` (fatal/fault): EXCEPTION_TYPE [7:0], EXCEPTION_DATA [31:8];
        ``field``_info: the 64-bit info word."""
        out_va = self.section.cs_out(cs.csg, cs.index)
        off = I.CS_OUTPUT.off
        self.bus.write32(out_va + off[field], (exc_type & 0xFF) | ((exc_data & 0xFFFFFF) << 8))
        self.bus.write64(out_va + off[f"{field}_info"], info)

    def report_cs_fault(self, cs: CsRuntime, exc_type: int, exc_data: int, info: int) -> None:
        """Recoverable CS FAULT event (§7.4): fault/fault_info, toggle CS ack bit 31; the
        stream waits until the host acknowledges it and rings the CSG doorbell."""
        log.info("CSG%d CS%d FAULT: exception %#x data %#x info %#x", cs.csg, cs.index,
                 exc_type, exc_data, info)
        self.rt.stats["cs_fault"] += 1
        self._write_exception(cs, "fault", exc_type, exc_data, info)
        cs.fault_pending = True
        cs.runnable = False
        self.cs_event(cs, I.CS_FAULT)

    def report_tiler_oom(self, cs: CsRuntime, heap: int, vt_start: int, vt_end: int,
                         frag_end: int) -> None:
        """CS TILER_OOM event: the heap context and its counters in the CS output block
        (panthor takes the heap from heap_address and requires frag_end <= vt_end <
        vt_start); the stream waits for the host's answer in heap_start/heap_end."""
        log.info("CSG%d CS%d TILER_OOM: heap %#x vt %d/%d frag %d", cs.csg, cs.index, heap,
                 vt_start, vt_end, frag_end)
        self.rt.stats["tiler_oom"] += 1
        o = I.CS_OUTPUT
        out_va = self.section.cs_out(cs.csg, cs.index)
        self.bus.write32(out_va + o.off["heap_vt_start"], vt_start)
        self.bus.write32(out_va + o.off["heap_vt_end"], vt_end)
        self.bus.write32(out_va + o.off["heap_frag_end"], frag_end)
        self.bus.write64(out_va + o.off["heap_address"], heap)
        cs.oom_pending = True
        cs.runnable = False
        self.cs_event(cs, I.CS_TILER_OOM)

    # -- CS status ----------------------------------------------------------------------------
    def write_cs_status(self, cs: CsRuntime) -> None:
        """CS output status_* fields + ringbuf_output.extract, as STATUS_UPDATE requires."""
        st = cs.st
        if st is None:
            return
        o = I.CS_OUTPUT
        buf = bytearray(0x28)  # status_cmd_ptr (0x40) .. status_wait_sync_value_hi (0x64)
        base = o.off["status_cmd_ptr"]
        _U64.pack_into(buf, 0, st.cmd_ptr)
        sbw = cs.sb_wait
        if sbw is not None:  # waiting for work in flight (WAIT, PROGRESS_WAIT, deferred op)
            _until, mask = sbw
            _U32.pack_into(buf, o.off["status_wait"] - base,
                           (mask & I.CS_STATUS_WAIT_SB_MASK) if mask
                           else I.CS_STATUS_WAIT_PROGRESS)
            _U32.pack_into(buf, o.off["status_blocked_reason"] - base,
                           I.CS_BLOCKED_SB_WAIT if mask else I.CS_BLOCKED_PROGRESS_WAIT)
        w = cs.wait
        if w is not None:
            _U32.pack_into(buf, o.off["status_wait"] - base, w.status_wait())
            _U64.pack_into(buf, o.off["status_wait_sync_ptr"] - base, w.ptr)
            _U32.pack_into(buf, o.off["status_wait_sync_value"] - base, w.value & 0xFFFFFFFF)
            _U32.pack_into(buf, o.off["status_blocked_reason"] - base, w.blocked_reason)
            _U32.pack_into(buf, o.off["status_wait_sync_value_hi"] - base,
                           (w.value >> 32) & 0xFFFFFFFF)
        _U32.pack_into(buf, o.off["status_scoreboards"] - base, busy_mask(st, self.clock()))
        self.bus.write(self.section.cs_out(cs.csg, cs.index) + base, buf, "CS status")
        self.publish_extract(cs)

    def publish_extract(self, cs: CsRuntime) -> None:
        """ringbuf_output.extract := the stream's extract pointer (if it moved)."""
        st = cs.st
        if st is not None and st.extract != cs.written_extract:
            self.bus.write64(cs.output_va, st.extract)
            cs.written_extract = st.extract

    # -- CSG events ---------------------------------------------------------------------------
    def update_idle(self, csg: CsgRuntime) -> None:
        """CSG idle: all CSs idle -> status_state.IS_IDLE at once; the IDLE event (CSG ack
        bit 29, optional in §7.6) once per idle period, after ``idle_hysteresis`` seconds.

        The firmware reports a group idle only once it has stayed idle for a hysteresis
        period (cancelled if work arrives first), as it does for GLB IDLE with idle_timer.
        Each IDLE event makes panthor run a scheduler tick (STATUS_UPDATE round trips and
        more interrupts); raised at once, a submit-and-wait loop paid one tick per job, on
        the critical path of the next submit under TCG. status_state is current at once, so
        a tick run for any other reason still sees (and may evict) the idle group."""
        idle = all(cs.idle for cs in csg.streams)
        if idle == csg.idle_reported:
            self.update_glb_idle()
            return
        out_va = self.section.csg_out(csg.index)
        self.bus.write32(out_va + I.CSG_OUTPUT.off["status_state"],
                         I.CSG_STATUS_STATE_IS_IDLE if idle else 0)
        csg.idle_reported = idle
        csg.cancel_idle_event()
        self.update_glb_idle()
        if not idle:
            return
        # synchronous use (tests pump): report at once
        loop = running_loop() if self.idle_hysteresis > 0 else None
        if loop is None:
            self._raise_csg_idle(csg)
        else:
            csg.idle_event = loop.call_later(self.idle_hysteresis, self._idle_expired, csg)

    # -- GLB IDLE ---------------------------------------------------------------------------
    def update_glb_idle(self) -> None:
        """GLB IDLE (GLB ack bit 26): with IDLE_EN set, once per idle period of the whole GPU
        (every resident group idle, or none resident) after the idle hysteresis; work arriving
        first cancels it. panthor acknowledges it (req := ack) and runs a scheduler tick
        (sched_process_idle_event_locked), which drops its PM reference when all is idle."""
        idle = all(not g.active or g.idle_reported for g in self.rt.csgs)
        if not idle:
            self.gpu_idle_reported = False
            self._cancel_glb_idle()
            return
        if self.gpu_idle_reported or self._glb_idle_event is not None:
            return
        loop = running_loop() if self.idle_hysteresis > 0 else None
        if loop is None:
            self._raise_glb_idle()  # synchronous use (tests pump): at once
        else:
            self._glb_idle_event = loop.call_later(
                self.idle_hysteresis, lambda: self._guard(self._glb_idle_expired))

    def _cancel_glb_idle(self) -> None:
        if self._glb_idle_event is not None:
            self._glb_idle_event.cancel()
            self._glb_idle_event = None

    def reset_glb_idle(self) -> None:
        """The MCU stopped (halt, disable, reset): the next boot starts a new idle period."""
        self._cancel_glb_idle()
        self.gpu_idle_reported = False

    def _glb_idle_expired(self) -> None:
        self._glb_idle_event = None
        if all(not g.active or g.idle_reported for g in self.rt.csgs):
            self._raise_glb_idle()

    def _raise_glb_idle(self) -> None:
        if not (self.rt.running and self.glb_idle_enabled) or self.gpu_idle_reported:
            return
        self.gpu_idle_reported = True
        if evlog.isEnabledFor(logging.DEBUG):
            ev("GLB IDLE event")
        if self.tl is not None:
            self.tl.instant("GLB", "IDLE event")
        s = self.section
        s.raise_event(s.glb_out(), s.glb_in() + I.GLB_INPUT.off["req"], I.GLB_IDLE)
        s.glb_irq(I.GLB_IDLE)

    def _idle_expired(self, csg: CsgRuntime) -> None:
        csg.idle_event = None
        if self.rt.running and csg.active and csg.idle_reported:
            self._guard(lambda: self._raise_csg_idle(csg))

    def _raise_csg_idle(self, csg: CsgRuntime) -> None:
        if evlog.isEnabledFor(logging.DEBUG):
            ev("CSG%d IDLE event", csg.index)
        if self.tl is not None:
            self.tl.instant(f"CSG{csg.index}", "IDLE event")
        s = self.section
        s.raise_event(s.csg_out(csg.index), s.csg_in(csg.index) + I.CSG_INPUT.off["req"],
                      I.CSG_IDLE)
        s.irq(1 << csg.index)

    # -- progress timer ---------------------------------------------------------------------
    def watch_progress(self, csg: CsgRuntime, until: float) -> None:
        """A stream of ``csg`` waits for endpoint work completing at ``until``. If nothing
        completes within the progress timeout, the group makes no forward progress (a hung
        shader): CSG PROGRESS_TIMER_EVENT (ack bit 31), once per residency. A stream running
        instructions, or waiting on a sync object, is not stuck work."""
        timeout = self.progress_timeout
        if not timeout or csg.progress_reported:
            return
        now = self.clock()
        if until - now <= timeout:
            return
        deadline = now + timeout
        if csg.progress_deadline and csg.progress_deadline <= deadline:
            return  # an earlier check is armed
        csg.cancel_progress_check()
        csg.progress_deadline = deadline
        loop = running_loop()
        if loop is None:
            return  # synchronous use: the test calls check_progress()
        csg.progress_check = DeadlineTimer(loop, deadline, self.clock,
                                           lambda: self._guard(self.check_progress))

    def check_progress(self) -> None:
        """Raise PROGRESS_TIMER_EVENT for every group whose awaited work is overdue."""
        now = self.clock()
        for csg in self.rt.csgs:
            if not (csg.active and csg.progress_deadline and csg.progress_deadline <= now):
                continue
            csg.cancel_progress_check()
            stuck = any(cs.stuck(now) for cs in csg.streams)
            if stuck and not csg.progress_reported:
                csg.progress_reported = True
                log.warning("CSG%d: no progress for %.2f s: PROGRESS_TIMER_EVENT", csg.index,
                            self.progress_timeout)
                if self.tl is not None:
                    self.tl.instant(f"CSG{csg.index}", "PROGRESS_TIMER_EVENT")
                s = self.section
                s.raise_event(s.csg_out(csg.index),
                              s.csg_in(csg.index) + I.CSG_INPUT.off["req"],
                              I.CSG_PROGRESS_TIMER_EVENT)
                s.irq(1 << csg.index)

    def flush(self, csg: CsgRuntime) -> None:
        """Publish pending CSG events: SYNC_UPDATE (bit 28) then IDLE (bit 29)."""
        if not csg.active:
            return
        if csg.sync_pending:
            csg.sync_pending = False
            if self.tl is not None:
                self.tl.instant(f"CSG{csg.index}", "SYNC_UPDATE event")
            s = self.section
            s.raise_event(s.csg_out(csg.index), s.csg_in(csg.index) + I.CSG_INPUT.off["req"],
                          I.CSG_SYNC_UPDATE)
            s.irq(1 << csg.index)
        self.update_idle(csg)

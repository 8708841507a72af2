"""The CSF firmware (MCU) model: boot, halt, the global interface, and the wiring.

Real Mali CSF GPUs run firmware on a Cortex-M MCU that talks to the host through the shared
section at MCU VA 0x04000000 (reference §7). :class:`CsfFirmware` implements that firmware's
observable behaviour in Python, as a :class:`qemu_panthor.gpu.McuHooks`: MCU_CONTROL writes
boot/stop it, doorbells make it process requests, GPU resets kill it. It reaches memory only
through the GPU MMU in AS0 (the MCU VM); a fault there is an MCU fault (MCU_STATUS = FATAL).

Its parts: :mod:`.section` (block addresses, events), :mod:`.slots` (CSG/CS requests),
:mod:`.events` (what the host is told), :mod:`.scheduler` (which stream runs),
:mod:`.execute` (running a slice), all sharing one :class:`.runtime.FwRuntime`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..gpu.models import Family
from ..gpu.regs import JOB_INT_GLOBAL_IF, McuControl, McuStatus
from . import iface as I
from .bus import McuBus, McuFault
from .events import IDLE_HYSTERESIS_S, CsFatalHook, CsfEvents
from .execute import CsExecutor
from .iface import FwConfig, SharedLayout
from .interp import CsInterpreter
from .runtime import CsgRuntime, CsRuntime, FwRuntime
from .scheduler import CsfScheduler
from .section import SharedSection, ev, evlog
from .slots import CsgSlots

if TYPE_CHECKING:
    from ..gpu.device import MaliGpu
    from ..timeline import Timeline

log = logging.getLogger("qemu_panthor.csf")


class CsfFirmware:
    """Python model of the CSF firmware, driven through :class:`gpu.McuHooks`."""

    def __init__(self, gpu: MaliGpu, *, config: FwConfig | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, budget: int = 256,
                 idle_hysteresis: float = IDLE_HYSTERESIS_S, work_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gpu = gpu
        self.config = config or FwConfig.from_model(gpu.model)
        self.bus = McuBus(gpu.mmu)
        self.section = SharedSection(self.config, self.bus, gpu.job_irq)
        self.rt = FwRuntime.new(self.config.group_num, self.config.stream_num)
        self.events = CsfEvents(self.section, self.rt, on_mcu_fault=self._guard,
                                idle_hysteresis=idle_hysteresis)
        self.events.clock = clock
        self.sched = CsfScheduler(self.rt, gpu.mmu, stream_num=self.config.stream_num,
                                  run_slice=self._run_slice, on_crash=self.mcu_fatal,
                                  budget=budget, loop=loop, clock=clock)
        interp = CsInterpreter(gpu.mmu, gpu, work_scale=work_scale, clock=clock)
        self.executor = CsExecutor(self.rt, interp, gpu.mmu, self.events, self.sched,
                                   on_mcu_fault=self.mcu_fatal)
        self.slots = CsgSlots(self.section, self.rt, self.events, kick=self.sched.kick)
        self.glb: dict[str, int] = {}  # configuration the host sent (timers, core mask...)
        self.boots = 0
        self.fast_boots = 0
        #: Test port (qemu_panthor.testport): True = leave a pending GLB PING unacknowledged.
        self.ping_hook: Callable[[], bool] | None = None
        #: Test port: True = this boot fails (the firmware crashes before it reports booted).
        self.boot_hook: Callable[[], bool] | None = None
        #: --timeline (qemu_panthor/timeline.py): None while off
        self.tl: Timeline | None = None
        self._control_image = self.section.control_image()
        gpu.mmu.on_as_update = self.sched.on_as_update

    def attach_timeline(self, tl: Timeline | None) -> None:
        """Send the firmware's events (GLB/CSG/CS requests and events, execution slices, work
        items, jobs) to ``tl`` (None: stop)."""
        self.tl = tl
        self.events.tl = tl
        self.slots.tl = tl
        self.executor.tl = tl
        self.executor.interp.tl = tl

    @classmethod
    def attach(cls, gpu: MaliGpu, *, config: FwConfig | None = None,
               loop: asyncio.AbstractEventLoop | None = None, budget: int = 256,
               idle_hysteresis: float = IDLE_HYSTERESIS_S, work_scale: float = 1.0,
               clock: Callable[[], float] = time.monotonic) -> CsfFirmware:
        """Create the firmware model and plug it into ``gpu.mcu``. A Job Manager GPU has no
        MCU (nor doorbells, nor MCU_CONTROL): ValueError."""
        if gpu.family != Family.CSF:
            raise ValueError(f"{gpu.model.model_name} is a {gpu.family.name} GPU: it has no MCU to "
                             "run CSF firmware on")
        fw = cls(gpu, config=config, loop=loop, budget=budget, idle_hysteresis=idle_hysteresis,
                 work_scale=work_scale, clock=clock)
        gpu.mcu = fw
        return fw

    def _run_slice(self, cs: CsRuntime, budget: int) -> None:
        self.executor.run_slice(cs, budget)

    # -- state the rest of the device reads (QMP, test port) ---------------------------------
    @property
    def csgs(self) -> list[CsgRuntime]:
        return self.rt.csgs

    @property
    def running(self) -> bool:
        return self.rt.running

    @property
    def halted(self) -> bool:
        return self.rt.halted

    @property
    def stats(self) -> dict[str, int]:
        return self.rt.stats

    @property
    def layout(self) -> SharedLayout:
        return self.section.layout

    @property
    def on_cs_fatal(self) -> CsFatalHook | None:
        """Called as (csg, cs, exception_type, exception_data, info) on every CS FATAL."""
        return self.events.on_cs_fatal

    @on_cs_fatal.setter
    def on_cs_fatal(self, hook: CsFatalHook | None) -> None:
        self.events.on_cs_fatal = hook

    @property
    def work_hang_hook(self) -> Callable[[], bool] | None:
        """Test port (WORK_HANG): called as a work item is issued; True = it never ends."""
        return self.executor.interp.hang_hook

    @work_hang_hook.setter
    def work_hang_hook(self, hook: Callable[[], bool] | None) -> None:
        self.executor.interp.hang_hook = hook

    @property
    def idle_hysteresis(self) -> float:
        return self.events.idle_hysteresis

    @idle_hysteresis.setter
    def idle_hysteresis(self, seconds: float) -> None:
        self.events.idle_hysteresis = seconds

    # -- MCU state -------------------------------------------------------------------------------
    def _set_status(self, status: McuStatus) -> None:
        self.gpu.mcu_status = status

    def mcu_fatal(self, why: str) -> None:
        """The MCU crashed (e.g. faulted on AS0): MCU_STATUS = FATAL, execution stops."""
        log.error("CSF MCU fatal: %s", why)
        self.rt.running = False
        self.sched.stop()
        self._set_status(McuStatus.FATAL)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except McuFault as e:
            self.mcu_fatal(str(e))

    # -- McuHooks --------------------------------------------------------------------------------
    def mcu_control(self, value: int) -> None:
        """MCU_CONTROL write: 0 DISABLE, 1 ENABLE, 2 AUTO (boot); 3 is reserved (ignored)."""
        value &= 0x3
        if value == McuControl.DISABLE:
            self._disable()
        elif value in (McuControl.ENABLE, McuControl.AUTO):
            if self.rt.running:
                log.debug("MCU_CONTROL=%d while the MCU already runs: ignored", value)
                return
            if self.boot_hook is not None and self.boot_hook():
                # injected: the firmware faults while booting, before its boot interrupt
                self._drop_state()
                self.mcu_fatal("boot failed (test port FW_BOOT_FAIL)")
                return
            self._guard(self._boot)
        else:
            log.warning("MCU_CONTROL=%d is reserved: ignored", value)

    def doorbell(self, index: int) -> None:
        """CSF_DOORBELL(index) write: 0 = GLB requests, d > 0 = CS doorbell d."""
        if not self.rt.running:
            log.debug("doorbell %d while the MCU is not running: ignored", index)
            return
        if evlog.isEnabledFor(logging.DEBUG):
            ev("doorbell %d", index)
        if index == 0:
            self._guard(self._process_glb)
        else:
            self._guard(lambda: self.slots.cs_doorbell(index))
        if self.rt.running:
            self.sched.reevaluate_waits()

    def gpu_reset(self) -> None:
        """GPU soft/hard reset: the MCU stops and all its private state is lost."""
        self._disable()

    # -- MCU life cycle --------------------------------------------------------------------------
    def _drop_state(self) -> None:
        self.sched.stop()
        self.rt.drop_slots()
        self.events.reset_glb_idle()
        self.events.glb_idle_enabled = False  # GLB_REQ is read again at the next boot

    def _disable(self) -> None:
        """MCU disabled: nothing but guest memory survives (control blocks, inputs, outputs)."""
        self.rt.running = False
        self.rt.halted = False
        self._drop_state()
        self._set_status(McuStatus.DISABLED)

    def _boot(self) -> None:
        """Firmware start (reference §2.6 step 3 and §7.7 item 1)."""
        s = self.section
        ctrl = self.bus.read(s.va(0), I.GLB_CONTROL.size, "boot: shared section")
        fast = (I.GLB_CONTROL.get(ctrl, "version") == self.config.version
                and I.GLB_CONTROL.get(ctrl, "input_va") == s.glb_in()
                and I.GLB_CONTROL.get(ctrl, "group_num") == self.config.group_num)
        self._drop_state()
        for off, data in self._control_image:
            self.bus.write(s.va(off), data, "boot: control blocks")
        if not fast:
            # Cold boot: the host (re)loaded a zeroed section. Output pages are FW-owned.
            self.bus.write(s.glb_out(), bytes(I.GLB_OUTPUT.size))
            for i in range(self.config.group_num):
                self.bus.write(s.csg_out(i), bytes(I.CSG_OUTPUT.size))
                for j in range(self.config.stream_num):
                    self.bus.write(s.cs_out(i, j), bytes(I.CS_OUTPUT.size))
        else:
            self.fast_boots += 1
        # Mirror the level STATE request bits into ack; toggles stay as they are in memory.
        # HALT is never acknowledged through the interface (panthor_fw.c: "GLB_HALT doesn't
        # get acked through the FW interface"; the host watches MCU_STATUS instead).
        req = self.bus.read32(s.glb_in())
        ack = self.bus.read32(s.glb_out())
        lv = I.GLB_STATE_MASK
        new_ack = (ack & ~lv) | (req & lv)
        if new_ack != ack:
            self.bus.write32(s.glb_out(), new_ack)
        self.bus.write32(s.glb_out() + I.GLB_OUTPUT.off["halt_status"], 0)
        self.boots += 1
        self.rt.running = True
        self.rt.halted = False
        self._set_status(McuStatus.ENABLED)
        log.info("CSF MCU booted (%s): interface v%d.%d.%d, %d CSGs x %d CSs",
                 "fast resume" if fast else "cold", self.config.version >> 24,
                 (self.config.version >> 16) & 0xFF, self.config.version & 0xFFFF,
                 self.config.group_num, self.config.stream_num)
        s.irq(JOB_INT_GLOBAL_IF)
        # Requests already pending (e.g. HALT still set, or toggles written before the boot).
        self._process_glb()

    def _halt(self) -> None:
        """GLB HALT request: stop executing; MCU_STATUS = HALT (the host then disables us)."""
        self.rt.running = False
        self.rt.halted = True
        self.sched.stop()
        self._set_status(McuStatus.HALT)
        log.info("CSF MCU halted")

    # -- GLB -------------------------------------------------------------------------------------
    def _process_glb(self) -> None:
        """Doorbell 0: GLB_REQ vs GLB_ACK, then GLB doorbell_req vs doorbell_ack (§7.7 item 3)."""
        s = self.section
        inp = self.bus.read(s.glb_in(), I.GLB_INPUT.size, "GLB input")
        out_va = s.glb_out()
        out = self.bus.read(out_va, I.GLB_OUTPUT.size, "GLB output")
        g_in, g_out = I.GLB_INPUT, I.GLB_OUTPUT
        req, ack = g_in.get(inp, "req"), g_out.get(out, "ack")
        mask = (I.GLB_REQ_MASK | I.GLB_STATE_MASK) & ~I.GLB_HALT  # HALT: not acked (above)
        pend = (req ^ ack) & mask
        if evlog.isEnabledFor(logging.DEBUG):
            ev("GLB req pending=%#x doorbell_req^ack=%#x", pend,
                g_in.get(inp, "doorbell_req") ^ g_out.get(out, "doorbell_ack"))
        if self.tl is not None and pend:
            self.tl.instant("GLB", "req", pending=pend)
        if pend & I.GLB_CFG_PROGRESS_TIMER:
            self.glb["progress_timer"] = g_in.get(inp, "progress_timer")
            # units of 1024 GPU cycles (kbase GLB_PROGRESS_TIMER_TIMEOUT_SCALE)
            self.events.progress_timeout = (self.glb["progress_timer"] * 1024
                                            / self.gpu.model.core_clock_hz)
        if pend & I.GLB_CFG_POWEROFF_TIMER:
            self.glb["poweroff_timer"] = g_in.get(inp, "poweroff_timer")
        if pend & I.GLB_CFG_ALLOC_EN:
            self.glb["core_en_mask"] = g_in.get(inp, "core_en_mask")
        if pend & I.GLB_IDLE_EN:
            self.glb["idle_timer"] = g_in.get(inp, "idle_timer")
        if pend & I.GLB_PING:
            self.glb["pings"] = self.glb.get("pings", 0) + 1
            if self.ping_hook is not None and self.ping_hook():  # injected: no ack
                mask &= ~I.GLB_PING
                pend &= ~I.GLB_PING
        # PROTM_ENTER: no protected mode; acknowledged, nothing entered (no PROTM_EXIT).
        # PERFCNT_EN/SAMPLE: no counters; acknowledged, perfcnt_status/insert stay 0.
        if pend:
            ack = (ack & ~mask) | (req & mask)
            self.bus.write32(out_va, ack)
            s.glb_irq(pend)
        enabled = bool(req & I.GLB_IDLE_EN)
        if enabled != self.events.glb_idle_enabled:
            self.events.glb_idle_enabled = enabled
            if enabled:
                self.events.update_glb_idle()
        state = (req & I.GLB_STATE_MASK) >> I.GLB_STATE_SHIFT
        if req & I.GLB_HALT or state != I.GLB_STATE_ACTIVE:
            self._halt()
            return
        db_req, db_ack = g_in.get(inp, "doorbell_req"), g_out.get(out, "doorbell_ack")
        db_pend = (db_req ^ db_ack) & ((1 << self.config.group_num) - 1)
        if db_pend:
            self.bus.write32(out_va + g_out.off["doorbell_ack"], db_ack ^ db_pend)
            self.slots.doorbells(db_pend)

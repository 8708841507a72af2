"""The CSF firmware (MCU) model: boot, GLB/CSG/CS request handling, CS execution hand-off.

Real Mali CSF GPUs run firmware on a Cortex-M MCU that talks to the host through the shared
section at MCU VA 0x04000000 (reference §7). :class:`CsfFirmware` implements that firmware's
observable behaviour in Python, as a :class:`qemu_panthor.gpu.McuHooks`: MCU_CONTROL writes
boot/stop it, doorbells make it process requests, GPU resets kill it. It reaches memory only
through ``gpu.mmu`` in AS0 (the MCU VM); a fault there is an MCU fault (MCU_STATUS = FATAL).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import iface as I
from .iface import FwConfig, SharedLayout
from .scheduler import CsfScheduler, CsgRuntime, CsRuntime, SyncWait

try:  # the MMU is written concurrently; only Access values are needed here
    from ..mmu import Access
except ImportError:  # pragma: no cover - during bring-up only

    class Access(enum.IntEnum):  # type: ignore[no-redef]
        ATOMIC = 0
        EXECUTE = 1
        READ = 2
        WRITE = 3


log = logging.getLogger("qemu_panthor.csf")
#: Firmware events with microsecond timestamps (``--trace``): doorbells, CSG requests, CS
#: slices, events raised. For latency analysis; off (and not formatted) unless DEBUG.
evlog = logging.getLogger("qemu_panthor.csf.events")


def _ev(fmt: str, *args: Any) -> None:
    evlog.debug("t=%.3fms " + fmt, time.monotonic() * 1e3, *args)

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MCU_AS = 0

# Suspend-buffer record (our firmware's private format; lives in guest memory between
# SUSPEND and RESUME): header then one record per started CS.
SUSPEND_MAGIC = 0x53435051  # "QPCS"
SUSPEND_VERSION = 1
_SUSP_HDR = struct.Struct("<IHHI")  # magic, version, cs count, total bytes
_SUSP_CS = struct.Struct("<HHI")  # cs index, flags, blob length
_SUSP_FLAG_FAULT_PENDING = 1
_SUSP_FLAG_FATAL = 2  # the CS raised CS_FATAL: it stays halted after RESUME
# CSG IDLE event hysteresis (host seconds). panthor programs idle_timer = 800 us for real
# hardware, where its job-completion path takes tens of microseconds; under TCG that path
# (IRQ, threaded handler, event work, fence, user wake-up, next submit) takes 1-3 ms.
IDLE_HYSTERESIS_S = 0.005
# AS commands that restart transactions stalled on a fault (LOCK and NOP do not).
_AS_RESTART_COMMANDS = ("UPDATE", "UNLOCK", "FLUSH_PT", "FLUSH_MEM")


class McuFault(Exception):
    """An MCU access through AS0 faulted (the fault value is in ``fault``)."""

    def __init__(self, fault: Any, what: str) -> None:
        super().__init__(f"MCU fault during {what}: {fault}")
        self.fault = fault


class McuBus:
    """The MCU's view of memory: AS0 through the GPU MMU, faults raised as McuFault."""

    __slots__ = ("mmu",)

    def __init__(self, mmu: Any) -> None:
        self.mmu = mmu

    def read(self, va: int, size: int, what: str = "read") -> bytes:
        r = self.mmu.read(MCU_AS, va, size, Access.READ)
        if not isinstance(r, bytes | bytearray):
            raise McuFault(r, f"{what} at {va:#x}")
        return bytes(r)

    def write(self, va: int, data: bytes | bytearray, what: str = "write") -> None:
        f = self.mmu.write(MCU_AS, va, bytes(data))
        if f is not None:
            raise McuFault(f, f"{what} at {va:#x}")

    def read32(self, va: int) -> int:
        return _U32.unpack(self.read(va, 4))[0]

    def read64(self, va: int) -> int:
        return _U64.unpack(self.read(va, 8))[0]

    def write32(self, va: int, value: int) -> None:
        self.write(va, _U32.pack(value & 0xFFFFFFFF))

    def write64(self, va: int, value: int) -> None:
        self.write(va, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


class CsfFirmware:
    """Python model of the CSF firmware, driven through :class:`gpu.McuHooks`."""

    def __init__(self, gpu: Any, *, config: FwConfig | None = None, interp: Any = None,
                 loop: Any = None, budget: int = 256,
                 idle_hysteresis: float = IDLE_HYSTERESIS_S) -> None:
        self.gpu = gpu
        self.config = config or FwConfig.from_model(getattr(gpu, "model", None))
        self.layout = SharedLayout(self.config.group_num, self.config.stream_num)
        self.layout.check()
        self.bus = McuBus(gpu.mmu)
        self.csgs = [CsgRuntime.new(i, self.config.stream_num)
                     for i in range(self.config.group_num)]
        self.sched = CsfScheduler(self, interp, budget=budget, loop=loop)
        self.running = False
        self.halted = False
        #: seconds a CSG must stay idle before its IDLE event is raised (0: at once)
        self.idle_hysteresis = idle_hysteresis
        self.glb: dict[str, int] = {}  # configuration the host sent (timers, core mask...)
        self.boots = 0
        self.fast_boots = 0
        #: cs_instructions: CS instructions executed; jobs: kernel job-ring sequences completed
        #: (system-scope SYNC_ADDs executed from a ring itself, not from a CALLed buffer).
        self.stats: Counter[str] = Counter()
        #: Called as (csg, cs, exception_type, exception_data, info) on every CS FATAL event.
        self.on_cs_fatal: Callable[[int, int, int, int, int], None] | None = None
        #: Test port (qemu_panthor.testport): True = leave a pending GLB PING unacknowledged.
        self.ping_hook: Callable[[], bool] | None = None
        self._control_image = self._build_control_blocks()
        self._hook_mmu()

    @classmethod
    def attach(cls, gpu: Any, **kw: Any) -> CsfFirmware:
        """Create the firmware model and plug it into ``gpu.mcu``."""
        fw = cls(gpu, **kw)
        gpu.mcu = fw
        return fw

    def _hook_mmu(self) -> None:
        mmu = self.gpu.mmu
        prev: Callable[[int], None] | None = getattr(mmu, "on_as_update", None)

        def on_as_update(as_nr: int) -> None:
            if prev is not None:
                prev(as_nr)
            self.sched.on_as_update(as_nr)

        try:
            mmu.on_as_update = on_as_update
        except AttributeError:  # pragma: no cover - an MMU without the hook
            log.warning("MMU has no on_as_update hook: MMU-fault stalls only end on terminate")

    def as_restarts(self, as_nr: int) -> int | None:
        """How many AS commands that restart stalled transactions ``as_nr`` has executed
        (None if the MMU does not count them: then every update counts as a restart)."""
        cmds = self.gpu.mmu.as_state(as_nr).get("commands")
        if not isinstance(cmds, dict):
            return None
        return sum(int(cmds.get(c, 0)) for c in _AS_RESTART_COMMANDS)

    # -- addresses ---------------------------------------------------------------------------
    @staticmethod
    def va(off: int) -> int:
        return I.SHARED_SECTION_VA + off

    def _glb_in(self) -> int:
        return self.va(self.layout.GLB_INPUT_OFF)

    def _glb_out(self) -> int:
        return self.va(self.layout.GLB_OUTPUT_OFF)

    def _csg_in(self, i: int) -> int:
        return self.va(self.layout.csg_input(i))

    def _csg_out(self, i: int) -> int:
        return self.va(self.layout.csg_output(i))

    def _cs_in(self, i: int, j: int) -> int:
        return self.va(self.layout.cs_input(i, j))

    def _cs_out(self, i: int, j: int) -> int:
        return self.va(self.layout.cs_output(i, j))

    def _build_control_blocks(self) -> list[tuple[int, bytes]]:
        """The read-only control blocks our firmware publishes (reference §7.2-7.4)."""
        c, lay = self.config, self.layout
        blocks = [(0, I.GLB_CONTROL.pack(
            version=c.version, features=c.features, input_va=self._glb_in(),
            output_va=self._glb_out(), group_num=c.group_num, group_stride=lay.group_stride,
            perfcnt_size=0, instr_features=c.instr_features))]
        for i in range(c.group_num):
            blocks.append((lay.csg_control(i), I.CSG_CONTROL.pack(
                features=c.csg_features, input_va=self._csg_in(i), output_va=self._csg_out(i),
                suspend_size=c.suspend_size, protm_suspend_size=c.protm_suspend_size,
                stream_num=c.stream_num, stream_stride=lay.STREAM_STRIDE)))
            for j in range(c.stream_num):
                blocks.append((lay.cs_control(i, j), I.CS_CONTROL.pack(
                    features=c.cs_features, input_va=self._cs_in(i, j),
                    output_va=self._cs_out(i, j))))
        # Merge adjacent blocks into as few MMU writes as possible.
        merged: list[tuple[int, bytes]] = []
        for off, data in sorted(blocks):
            if merged and merged[-1][0] + len(merged[-1][1]) <= off <= merged[-1][0] + 0x40:
                poff, pdata = merged[-1]
                merged[-1] = (poff, pdata + bytes(off - poff - len(pdata)) + data)
            else:
                merged.append((off, data))
        return merged

    # -- interrupts / status -------------------------------------------------------------------
    def _irq(self, bits: int) -> None:
        if evlog.isEnabledFor(logging.DEBUG):
            _ev("JOB_INT raise %#x", bits)
        self.gpu.job_irq.raise_bits(bits)

    def _set_status(self, status: int) -> None:
        self.gpu.mcu_status = status

    def mcu_fatal(self, why: str) -> None:
        """The MCU crashed (e.g. faulted on AS0): MCU_STATUS = FATAL, execution stops."""
        log.error("CSF MCU fatal: %s", why)
        self.running = False
        self.sched.stop()
        self._set_status(I.MCU_STATUS_FATAL)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except McuFault as e:
            self.mcu_fatal(str(e))

    # -- McuHooks --------------------------------------------------------------------------------
    def mcu_control(self, value: int) -> None:
        """MCU_CONTROL write: 0 DISABLE, 1 ENABLE, 2 AUTO (boot); 3 is reserved (ignored)."""
        value &= 0x3
        if value == I.MCU_CONTROL_DISABLE:
            self._disable()
        elif value in (I.MCU_CONTROL_ENABLE, I.MCU_CONTROL_AUTO):
            if self.running:
                log.debug("MCU_CONTROL=%d while the MCU already runs: ignored", value)
                return
            self._guard(self._boot)
        else:
            log.warning("MCU_CONTROL=%d is reserved: ignored", value)

    def doorbell(self, index: int) -> None:
        """CSF_DOORBELL(index) write: 0 = GLB requests, d > 0 = CS doorbell d."""
        if not self.running:
            log.debug("doorbell %d while the MCU is not running: ignored", index)
            return
        if evlog.isEnabledFor(logging.DEBUG):
            _ev("doorbell %d", index)
        if index == 0:
            self._guard(self._process_glb)
        else:
            self._guard(lambda: self._cs_doorbell(index))
        if self.running:
            self.sched.reevaluate_waits()

    def gpu_reset(self) -> None:
        """GPU soft/hard reset: the MCU stops and all its private state is lost."""
        self._disable()

    # -- MCU life cycle --------------------------------------------------------------------------
    def _drop_state(self) -> None:
        self.sched.stop()
        for csg in self.csgs:
            csg.reset()

    def _disable(self) -> None:
        """MCU disabled: nothing but guest memory survives (control blocks, inputs, outputs)."""
        self.running = False
        self.halted = False
        self._drop_state()
        self._set_status(I.MCU_STATUS_DISABLED)

    def _boot(self) -> None:
        """Firmware start (reference §2.6 step 3 and §7.7 item 1)."""
        ctrl = self.bus.read(self.va(0), I.GLB_CONTROL.size, "boot: shared section")
        fast = (I.GLB_CONTROL.get(ctrl, "version") == self.config.version
                and I.GLB_CONTROL.get(ctrl, "input_va") == self._glb_in()
                and I.GLB_CONTROL.get(ctrl, "group_num") == self.config.group_num)
        self._drop_state()
        for off, data in self._control_image:
            self.bus.write(self.va(off), data, "boot: control blocks")
        if not fast:
            # Cold boot: the host (re)loaded a zeroed section. Output pages are FW-owned.
            self.bus.write(self._glb_out(), bytes(I.GLB_OUTPUT.size))
            for i in range(self.config.group_num):
                self.bus.write(self._csg_out(i), bytes(I.CSG_OUTPUT.size))
                for j in range(self.config.stream_num):
                    self.bus.write(self._cs_out(i, j), bytes(I.CS_OUTPUT.size))
        else:
            self.fast_boots += 1
        # Mirror the level HALT/STATE request bits into ack (fast resume clears HALT in req
        # without ringing a doorbell); toggles stay as they are in memory.
        req = self.bus.read32(self._glb_in())
        ack = self.bus.read32(self._glb_out())
        lv = I.GLB_HALT | I.GLB_STATE_MASK
        new_ack = (ack & ~lv) | (req & lv)
        if new_ack != ack:
            self.bus.write32(self._glb_out(), new_ack)
        self.bus.write32(self._glb_out() + I.GLB_OUTPUT.off["halt_status"], 0)
        self.boots += 1
        self.running = True
        self.halted = False
        self._set_status(I.MCU_STATUS_ENABLED)
        log.info("CSF MCU booted (%s): interface v%d.%d.%d, %d CSGs x %d CSs",
                 "fast resume" if fast else "cold", self.config.version >> 24,
                 (self.config.version >> 16) & 0xFF, self.config.version & 0xFFFF,
                 self.config.group_num, self.config.stream_num)
        self._irq(I.JOB_INT_GLOBAL_IF)
        # Requests already pending (e.g. HALT still set, or toggles written before the boot).
        self._process_glb()

    def _halt(self) -> None:
        """GLB HALT request: stop executing; MCU_STATUS = HALT (the host then disables us)."""
        self.running = False
        self.halted = True
        self.sched.stop()
        self._set_status(I.MCU_STATUS_HALT)
        log.info("CSF MCU halted")

    # -- GLB -------------------------------------------------------------------------------------
    def _process_glb(self) -> None:
        """Doorbell 0: GLB_REQ vs GLB_ACK, then GLB doorbell_req vs doorbell_ack (§7.7 item 3)."""
        inp = self.bus.read(self._glb_in(), I.GLB_INPUT.size, "GLB input")
        out_va = self._glb_out()
        out = self.bus.read(out_va, I.GLB_OUTPUT.size, "GLB output")
        g_in, g_out = I.GLB_INPUT, I.GLB_OUTPUT
        req, ack = g_in.get(inp, "req"), g_out.get(out, "ack")
        mask = I.GLB_REQ_MASK | I.GLB_STATE_MASK
        pend = (req ^ ack) & mask
        if evlog.isEnabledFor(logging.DEBUG):
            _ev("GLB req pending=%#x doorbell_req^ack=%#x", pend,
                g_in.get(inp, "doorbell_req") ^ g_out.get(out, "doorbell_ack"))
        if pend & I.GLB_CFG_PROGRESS_TIMER:
            self.glb["progress_timer"] = g_in.get(inp, "progress_timer")
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
            self._irq(I.JOB_INT_GLOBAL_IF)
        state = (req & I.GLB_STATE_MASK) >> I.GLB_STATE_SHIFT
        if req & I.GLB_HALT or state != I.GLB_STATE_ACTIVE:
            self._halt()
            return
        db_req, db_ack = g_in.get(inp, "doorbell_req"), g_out.get(out, "doorbell_ack")
        db_pend = (db_req ^ db_ack) & ((1 << self.config.group_num) - 1)
        if db_pend:
            self.bus.write32(out_va + g_out.off["doorbell_ack"], db_ack ^ db_pend)
            for i in _bits(db_pend):
                self._process_csg(i)

    # -- CSG -------------------------------------------------------------------------------------
    def _process_csg(self, i: int) -> None:
        csg = self.csgs[i]
        inp = self.bus.read(self._csg_in(i), I.CSG_INPUT.size, f"CSG{i} input")
        out_va = self._csg_out(i)
        out = self.bus.read(out_va, I.CSG_OUTPUT.size, f"CSG{i} output")
        c_in, c_out = I.CSG_INPUT, I.CSG_OUTPUT
        req, ack = c_in.get(inp, "req"), c_out.get(out, "ack")
        new_ack = ack
        if evlog.isEnabledFor(logging.DEBUG):
            _ev("CSG%d req=%#x ack=%#x pending=%#x doorbell_req=%#x", i, req, ack, req ^ ack,
                c_in.get(inp, "doorbell_req") ^ c_out.get(out, "doorbell_ack"))
        if (req ^ ack) & I.CSG_ENDPOINT_CONFIG:
            ep = c_in.get(inp, "endpoint_req")
            csg.endpoint_req = ep
            csg.priority = (ep >> I.CSG_EP_PRIORITY_SHIFT) & 0xF
            self.bus.write(out_va + c_out.off["status_endpoint_current"],
                           _U32.pack(ep) + _U32.pack(ep))
            new_ack ^= I.CSG_ENDPOINT_CONFIG
        st_req, st_ack = req & I.CSG_STATE_MASK, ack & I.CSG_STATE_MASK
        if st_req != st_ack:
            done = True
            if st_req == I.CSG_STATE_START:
                self._csg_start(csg, inp, resume=False)
            elif st_req == I.CSG_STATE_RESUME:
                self._csg_start(csg, inp, resume=True)
            elif st_req == I.CSG_STATE_SUSPEND:
                csg.suspend_buf = c_in.get(inp, "suspend_buf")  # where the host wants it now
                self._csg_suspend(csg)
            elif st_req == I.CSG_STATE_TERMINATE:
                self._csg_terminate(csg)
            else:
                log.warning("CSG%d: invalid STATE request %d: not acknowledged", i, st_req)
                done = False
            if done:
                new_ack = (new_ack & ~I.CSG_STATE_MASK) | st_req
        if (req ^ ack) & I.CSG_STATUS_UPDATE:
            self._refresh_status(csg)
            new_ack ^= I.CSG_STATUS_UPDATE
        if new_ack != ack:
            self.bus.write32(out_va, new_ack)
            self._irq(1 << i)
        db_req, db_ack = c_in.get(inp, "doorbell_req"), c_out.get(out, "doorbell_ack")
        db_pend = (db_req ^ db_ack) & ((1 << self.config.stream_num) - 1)
        if db_pend:
            self.bus.write32(out_va + c_out.off["doorbell_ack"], db_ack ^ db_pend)
            if csg.active:
                for j in _bits(db_pend):
                    self._cs_update(csg, csg.streams[j])
        if csg.active:
            self.update_idle(csg)
            self.sched.kick()

    def _csg_start(self, csg: CsgRuntime, inp: bytes, *, resume: bool) -> None:
        c_in = I.CSG_INPUT
        self._drop_csg(csg)
        csg.active = True
        csg.as_nr = c_in.get(inp, "config")
        csg.suspend_buf = c_in.get(inp, "suspend_buf")
        ep = c_in.get(inp, "endpoint_req")
        csg.endpoint_req = ep
        csg.priority = (ep >> I.CSG_EP_PRIORITY_SHIFT) & 0xF
        records = self._load_suspend(csg) if resume else {}
        self.bus.write32(self._csg_out(csg.index) + I.CSG_OUTPUT.off["status_state"], 0)
        for cs in csg.streams:
            self._cs_update(csg, cs, record=records.get(cs.index), fresh=True)
        log.debug("CSG%d %s on AS%d", csg.index, "resumed" if resume else "started", csg.as_nr)

    def _drop_csg(self, csg: CsgRuntime) -> None:
        csg.reset()

    def _csg_terminate(self, csg: CsgRuntime) -> None:
        self._drop_csg(csg)
        log.debug("CSG%d terminated", csg.index)

    def _csg_suspend(self, csg: CsgRuntime) -> None:
        """Stop the group and save every started CS into the suspend buffer (guest memory)."""
        self._refresh_status(csg)
        recs: list[bytes] = []
        budget = self.config.suspend_size - _SUSP_HDR.size
        for cs in csg.streams:
            if not cs.started or cs.st is None:
                continue
            try:
                blob = bytes(cs.st.serialise())
            except Exception:  # a broken interpreter state must not crash the MCU
                log.exception("CSG%d CS%d: cannot serialise state; it restarts from its "
                              "ring extract on resume", csg.index, cs.index)
                continue
            flags = ((_SUSP_FLAG_FAULT_PENDING if cs.fault_pending else 0)
                     | (_SUSP_FLAG_FATAL if cs.fatal else 0))
            rec = _SUSP_CS.pack(cs.index, flags, len(blob)) + blob
            if len(rec) > budget:
                log.error("CSG%d CS%d: state (%d bytes) exceeds the suspend buffer; it "
                          "restarts from its ring extract on resume", csg.index, cs.index,
                          len(blob))
                continue
            budget -= len(rec)
            recs.append(rec)
        body = b"".join(recs)
        hdr = _SUSP_HDR.pack(SUSPEND_MAGIC, SUSPEND_VERSION, len(recs), _SUSP_HDR.size + len(body))
        if csg.suspend_buf:
            self.bus.write(csg.suspend_buf, hdr + body, f"CSG{csg.index} suspend buffer")
        else:
            log.warning("CSG%d suspended without a suspend buffer: state lost", csg.index)
        self._drop_csg(csg)
        log.debug("CSG%d suspended (%d CS records, %d bytes)", csg.index, len(recs),
                  len(hdr) + len(body))

    def _load_suspend(self, csg: CsgRuntime) -> dict[int, tuple[int, bytes]]:
        """Read back the records written at SUSPEND (from guest memory, via AS0)."""
        if not csg.suspend_buf:
            return {}
        size = self.config.suspend_size
        raw = self.bus.read(csg.suspend_buf, size, f"CSG{csg.index} suspend buffer")
        magic, version, count, total = _SUSP_HDR.unpack_from(raw, 0)
        if magic != SUSPEND_MAGIC or version != SUSPEND_VERSION or total > size:
            log.warning("CSG%d: suspend buffer holds no valid record (magic %#x); streams "
                        "restart from their ring extract", csg.index, magic)
            return {}
        out: dict[int, tuple[int, bytes]] = {}
        off = _SUSP_HDR.size
        for _ in range(count):
            if off + _SUSP_CS.size > total:
                break
            idx, flags, n = _SUSP_CS.unpack_from(raw, off)
            off += _SUSP_CS.size
            if off + n > total:
                break
            if idx < self.config.stream_num:
                out[idx] = (flags, raw[off:off + n])
            off += n
        return out

    def _refresh_status(self, csg: CsgRuntime) -> None:
        """STATUS_UPDATE: bring every CS status_* field and ring extract up to date."""
        for cs in csg.streams:
            if cs.started and cs.st is not None:
                self.write_cs_status(cs)

    # -- CS ---------------------------------------------------------------------------------------
    def _cs_update(self, csg: CsgRuntime, cs: CsRuntime, *,
                   record: tuple[int, bytes] | None = None, fresh: bool = False) -> None:
        """Apply CS_REQ (STATE, config bits, fault acks) and re-read the ring insert pointer."""
        i, j = csg.index, cs.index
        inp = self.bus.read(self._cs_in(i, j), I.CS_INPUT.size, f"CS{i}.{j} input")
        out_va = self._cs_out(i, j)
        ack = self.bus.read32(out_va)
        s_in = I.CS_INPUT
        req = s_in.get(inp, "req")
        cfg = s_in.get(inp, "config")
        cs.priority = cfg & I.CS_CONFIG_PRIORITY_MASK
        cs.doorbell = (cfg & I.CS_CONFIG_DOORBELL_MASK) >> I.CS_CONFIG_DOORBELL_SHIFT
        want = (req & I.CS_STATE_MASK) == I.CS_STATE_START
        if want and (fresh or not cs.started):
            self._cs_start(csg, cs, inp, record)
        elif not want and cs.started:
            cs.reset()
        if cs.fault_pending and not (req ^ ack) & I.CS_FAULT:
            cs.fault_pending = False  # host acknowledged the FAULT and rang us: resume
            cs.runnable = True
        new_ack = (ack & ~I.CS_REQ_MASK) | (req & I.CS_REQ_MASK)
        if new_ack != ack:
            self.bus.write32(out_va, new_ack)
        if cs.started and cs.st is not None:
            self._refresh_insert(cs)

    def _cs_start(self, csg: CsgRuntime, cs: CsRuntime, inp: bytes,
                  record: tuple[int, bytes] | None) -> None:
        s_in = I.CS_INPUT
        cs.reset()
        cs.ring_base = s_in.get(inp, "ringbuf_base")
        cs.ring_size = s_in.get(inp, "ringbuf_size")
        cs.input_va = s_in.get(inp, "ringbuf_input")
        cs.output_va = s_in.get(inp, "ringbuf_output")
        st = None
        if record is not None:
            flags, blob = record
            try:
                st = self.sched.restore_state(blob)
            except Exception as e:
                log.warning("CSG%d CS%d: saved state unreadable (%s); restarting from the "
                            "ring extract", csg.index, cs.index, e)
                st = None
            else:
                cs.fault_pending = bool(flags & _SUSP_FLAG_FAULT_PENDING)
                cs.fatal = bool(flags & _SUSP_FLAG_FATAL)
        if st is None:
            st = self.sched.new_state()
            st.extract = self.bus.read64(cs.output_va)
        st.ring_base = cs.ring_base
        st.ring_size = cs.ring_size
        st.as_nr = csg.as_nr
        cs.st = st
        cs.started = True
        cs.written_extract = -1
        if cs.ring_size == 0 or cs.ring_size & (cs.ring_size - 1):
            self.report_cs_fatal(cs, I.EXC_CS_UNRECOVERABLE, 0, cs.ring_size,
                                 why=f"bad ringbuf_size {cs.ring_size:#x}")

    def _refresh_insert(self, cs: CsRuntime) -> None:
        insert = self.bus.read64(cs.input_va)
        st = cs.st
        st.insert = insert
        if not cs.fatal and not cs.fault_pending and cs.stalled_as is None and cs.wait is None:
            cs.runnable = cs.runnable or insert != st.extract
        # A CS blocked on a sync wait stays blocked: waits are re-evaluated separately.

    def _cs_doorbell(self, d: int) -> None:
        """CS doorbell d: every started CS whose CS_CONFIG.doorbell == d re-reads insert."""
        for csg in self.csgs:
            if not csg.active:
                continue
            hit = False
            for cs in csg.streams:
                if cs.started and cs.doorbell == d and cs.st is not None:
                    self._refresh_insert(cs)
                    hit = True
            if hit:
                self.update_idle(csg)
        self.sched.kick()

    # -- execution results (called by the scheduler) -----------------------------------------------
    def run_cs_slice(self, cs: CsRuntime, budget: int) -> None:
        """Run one slice of ``cs`` and publish its effects (extract, status, events)."""
        csg = self.csgs[cs.csg]
        try:
            if cs.stalled_fault is not None and not self._retry_allowed(cs):
                self.flush_events(csg)
                return
            try:
                res = self.sched.interpreter.run(cs.st, budget)
            except Exception as e:  # interpreter bug: fail the stream, never the server
                log.exception("CS interpreter failed on CSG%d CS%d", cs.csg, cs.index)
                self.report_cs_fatal(cs, I.EXC_CSF_FW_INTERNAL_ERROR, 0, 0, why=str(e))
                self.flush_events(csg)
                return
            if evlog.isEnabledFor(logging.DEBUG):
                _ev("CSG%d CS%d slice: %s after %d instructions", cs.csg, cs.index, res.kind,
                    res.instructions)
            self.stats["cs_instructions"] += res.instructions
            self.stats["jobs"] += getattr(res, "jobs", 0)
            self._apply_result(csg, cs, res)
            self.flush_events(csg)
        except McuFault as e:
            self.mcu_fatal(str(e))

    def _retry_allowed(self, cs: CsRuntime) -> bool:
        """A CS retrying an access that faulted: allowed only while its AS still holds the
        tables it faulted in. If the driver disabled the AS (panthor's answer to an unhandled
        fault) or latched another VM's tables into it, the faulted access is terminated and
        the CS fails with that fault: hardware never replays it into another address space
        (doing so raised the old fault in the new owner's name and killed its group)."""
        fault, root = cs.stalled_fault, cs.stalled_root
        cs.stalled_fault = None
        cs.stalled_root = None
        cs.stalled_restarts = None
        active = self.gpu.mmu.as_state(fault.as_nr).get("active", {})
        if active.get("adrmode") != "UNMAPPED" and active.get("TRANSTAB") == root:
            return True
        self.report_cs_fatal(cs, fault.exception_type, 0, fault.va,
                             why=f"AS{fault.as_nr} disabled or re-assigned during the fault")
        return False

    def _apply_result(self, csg: CsgRuntime, cs: CsRuntime, res: Any) -> None:
        st = cs.st
        if st.extract != cs.written_extract:
            self.bus.write64(cs.output_va, st.extract)
            cs.written_extract = st.extract
        kind = res.kind
        if kind == "idle":
            cs.runnable = False
        elif kind == "budget":
            cs.runnable = True
        elif kind == "blocked_sync":
            cs.runnable = False
            cs.wait = SyncWait(res.wait_ptr, res.wait_value, res.wait_cond, bool(res.is_64))
            self.write_cs_status(cs)
        elif kind == "mmu_fault":
            cs.runnable = False
            fault = res.fault
            as_nr = getattr(fault, "as_nr", csg.as_nr)
            active = self.gpu.mmu.as_state(as_nr).get("active", {})
            if active.get("adrmode") == "UNMAPPED":
                # The driver disabled this AS (panthor's answer to an unhandled fault): no
                # update can resolve the access, the CS fails with the fault.
                self.report_cs_fatal(cs, fault.exception_type, 0, fault.va,
                                     why=f"access in disabled AS{as_nr}")
                return
            cs.stalled_as = as_nr
            cs.stalled_fault = fault
            cs.stalled_root = active.get("TRANSTAB")
            cs.stalled_restarts = self.as_restarts(as_nr)
            log.info("CSG%d CS%d stalled on MMU fault %s", cs.csg, cs.index, fault)
        elif kind == "fatal":
            self.report_cs_fatal(cs, res.exception_type, res.exception_data, res.info)
        elif kind == "fault":
            self.report_cs_fault(cs, res.exception_type, res.exception_data, res.info)
        else:
            self.report_cs_fatal(cs, I.EXC_CSF_FW_INTERNAL_ERROR, 0, 0,
                                 why=f"unknown run result {kind!r}")
        if getattr(res, "sync_update", False):
            csg.sync_pending = True  # system scope: tell the host (CSG SYNC_UPDATE)
            self.sched.reevaluate_waits()
            for other in self.csgs:  # ... and it may unblock streams of other groups
                if other is not csg and other.active:
                    self.update_idle(other)
        elif getattr(res, "csg_sync_update", False):
            self.sched.reevaluate_waits(csg)  # CSG scope: wakes this group's streams only

    def write_cs_status(self, cs: CsRuntime) -> None:
        """CS output status_* fields + ringbuf_output.extract, as STATUS_UPDATE requires."""
        st = cs.st
        o = I.CS_OUTPUT
        buf = bytearray(0x28)  # status_cmd_ptr (0x40) .. status_wait_sync_value_hi (0x64)
        base = o.off["status_cmd_ptr"]
        size = cs.ring_size or 1
        cmd_ptr = getattr(st, "cmd_ptr", None)
        cmd_ptr = cmd_ptr() if callable(cmd_ptr) else cmd_ptr
        if not isinstance(cmd_ptr, int):
            cmd_ptr = cs.ring_base + (st.extract & (size - 1))
        _U64.pack_into(buf, 0, cmd_ptr & 0xFFFFFFFFFFFFFFFF)
        w = cs.wait
        if w is not None:
            cond = (I.CS_STATUS_WAIT_SYNC_COND_GT if w.cond == "gt"
                    else I.CS_STATUS_WAIT_SYNC_COND_LE)
            status_wait = (I.CS_STATUS_WAIT_SYNC | (cond << I.CS_STATUS_WAIT_SYNC_COND_SHIFT)
                           | (I.CS_STATUS_WAIT_SYNC_64B if w.is_64 else 0))
            _U32.pack_into(buf, o.off["status_wait"] - base, status_wait)
            _U64.pack_into(buf, o.off["status_wait_sync_ptr"] - base, w.ptr)
            _U32.pack_into(buf, o.off["status_wait_sync_value"] - base, w.value & 0xFFFFFFFF)
            _U32.pack_into(buf, o.off["status_blocked_reason"] - base, I.CS_BLOCKED_SYNC_WAIT)
            _U32.pack_into(buf, o.off["status_wait_sync_value_hi"] - base,
                           (w.value >> 32) & 0xFFFFFFFF)
        # status_scoreboards = 0: the interpreter completes asynchronous work synchronously.
        out_va = self._cs_out(cs.csg, cs.index)
        self.bus.write(out_va + base, buf, "CS status")
        if st.extract != cs.written_extract:
            self.bus.write64(cs.output_va, st.extract)
            cs.written_extract = st.extract

    def _cs_event(self, cs: CsRuntime, bit: int) -> None:
        i, j = cs.csg, cs.index
        self._raise_event(self._cs_out(i, j), self._cs_in(i, j) + I.CS_INPUT.off["req"], bit)
        self._raise_event(self._csg_out(i) + I.CSG_OUTPUT.off["cs_irq_req"],
                          self._csg_in(i) + I.CSG_INPUT.off["cs_irq_ack"], 1 << j)
        self._irq(1 << i)

    def _raise_event(self, out_va: int, in_va: int, bit: int) -> None:
        """Raise a toggle-style event: output bit := NOT input bit (pending while they differ).

        Idempotent while the host has not acknowledged the event: toggling again would make
        the bits equal and cancel an event the host has not seen yet (a lost SYNC_UPDATE
        leaves a finished job's fence unsignalled forever)."""
        req = self.bus.read32(in_va)
        cur = self.bus.read32(out_va)
        self.bus.write32(out_va, (cur & ~bit) | (~req & bit))

    def report_cs_fatal(self, cs: CsRuntime, exc_type: int, exc_data: int, info: int,
                        why: str = "") -> None:
        """CS FATAL event (§7.4): fatal/fatal_info, toggle CS ack bit 30 and cs_irq_req[j]."""
        log.warning("CSG%d CS%d FATAL: exception %#x data %#x info %#x %s", cs.csg, cs.index,
                    exc_type, exc_data, info, why)
        self.stats["cs_fatal"] += 1
        if self.on_cs_fatal is not None:
            try:
                self.on_cs_fatal(cs.csg, cs.index, exc_type, exc_data, info)
            except Exception:  # an observer's bug must not take the MCU down
                log.exception("on_cs_fatal hook failed")
        o = I.CS_OUTPUT
        out_va = self._cs_out(cs.csg, cs.index)
        self.bus.write32(out_va + o.off["fatal"], (exc_type & 0xFF) | ((exc_data & 0xFFFFFF) << 8))
        self.bus.write64(out_va + o.off["fatal_info"], info)
        cs.fatal = True
        cs.runnable = False
        cs.wait = None
        self._cs_event(cs, I.CS_FATAL)

    def report_cs_fault(self, cs: CsRuntime, exc_type: int, exc_data: int, info: int) -> None:
        """CS FAULT event (recoverable): the CS waits for the host's ack + CSG doorbell."""
        log.info("CSG%d CS%d FAULT: exception %#x data %#x info %#x", cs.csg, cs.index,
                 exc_type, exc_data, info)
        o = I.CS_OUTPUT
        out_va = self._cs_out(cs.csg, cs.index)
        self.bus.write32(out_va + o.off["fault"], (exc_type & 0xFF) | ((exc_data & 0xFFFFFF) << 8))
        self.bus.write64(out_va + o.off["fault_info"], info)
        cs.fault_pending = True
        cs.runnable = False
        self._cs_event(cs, I.CS_FAULT)

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
            return
        out_va = self._csg_out(csg.index)
        self.bus.write32(out_va + I.CSG_OUTPUT.off["status_state"],
                         I.CSG_STATUS_STATE_IS_IDLE if idle else 0)
        csg.idle_reported = idle
        csg.cancel_idle_event()
        if not idle:
            return
        loop = None
        if self.idle_hysteresis > 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # synchronous use (tests pump): report at once
                loop = None
        if loop is None:
            self._raise_csg_idle(csg)
        else:
            csg.idle_event = loop.call_later(self.idle_hysteresis, self._idle_expired, csg)

    def _idle_expired(self, csg: CsgRuntime) -> None:
        csg.idle_event = None
        if self.running and csg.active and csg.idle_reported:
            self._guard(lambda: self._raise_csg_idle(csg))

    def _raise_csg_idle(self, csg: CsgRuntime) -> None:
        if evlog.isEnabledFor(logging.DEBUG):
            _ev("CSG%d IDLE event", csg.index)
        self._raise_event(self._csg_out(csg.index),
                          self._csg_in(csg.index) + I.CSG_INPUT.off["req"], I.CSG_IDLE)
        self._irq(1 << csg.index)

    def flush_events(self, csg: CsgRuntime) -> None:
        """Publish pending CSG events: SYNC_UPDATE (bit 28) then IDLE (bit 29)."""
        if not csg.active:
            return
        if csg.sync_pending:
            csg.sync_pending = False
            self._raise_event(self._csg_out(csg.index),
                              self._csg_in(csg.index) + I.CSG_INPUT.off["req"],
                              I.CSG_SYNC_UPDATE)
            self._irq(1 << csg.index)
        self.update_idle(csg)

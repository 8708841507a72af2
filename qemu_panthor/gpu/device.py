"""``MaliGpu``: MMIO decode of the 2 MiB Mali register window (docs/architecture.md).

Layout of a CSF part (hardware reference §11): GPU_CONTROL 0x0000, JOB_INT 0x1000, MMU 0x2000
(forwarded to :class:`qemu_panthor.mmu.Mmu`), USER page 0x10000 (LATEST_FLUSH_ID), doorbell
pages 0x80000 + i*0x10000. A Job Manager part (``Family.JM``, docs/jm.md) has GPU_CONTROL,
JOB_CONTROL at 0x1000 (:class:`qemu_panthor.jm.JobControl`: JOB_INT and the job slots) and
the MMU with the legacy Mali LPAE table format, and nothing above 0x3000.

Real hardware is accessed with 32-bit operations only; this model also accepts 1/2/8-byte
accesses at any offset: 8-byte ones are two 32-bit operations (LO first, sampling the clock
once), sub-word reads extract bytes of the containing 32-bit register and sub-word writes are
read-modify-write of it. No access ever raises out of the model.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, Protocol

from .. import exceptions as exc
from ..irqblock import IRQ_BLOCK_SIZE, IrqBlock
from ..jm import JobControl
from ..memory import PhysMem
from ..mmu import Mmu
from .control import GpuControl
from .models import GpuModel
from .pwr import PwrControl
from .pwr_regs import PWR_CONTROL_BASE, PWR_CONTROL_SIZE
from .regs import (
    CSF_DOORBELL_BASE,
    FAMILY_WORD_NAMES,
    GPU_CONTROL_SIZE,
    GPU_FAULTSTATUS_ACCESS_SHIFT,
    GPU_FAULTSTATUS_ADDRESS_VALID,
    GPU_FAULTSTATUS_JASID_SHIFT,
    GPU_FAULTSTATUS_JASID_VALID,
    JOB_INT_BASE,
    MMU_BASE,
    MMU_SIZE,
    PAGE_SIZE,
    USER_BASE,
    WINDOW_SIZE,
    Family,
    GpuIrq,
    McuStatus,
    register_name,
)

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger(__name__)
trace_log = logging.getLogger(__name__ + ".trace")  # every access when ``trace=True``

_U32 = struct.Struct("<I")
_M32 = 0xFFFFFFFF
_FLUSH_ID_MASK = 0x00FFFFFF  # userspace must pass bits 30:24 == 0 (§3.3); 0 = "always flush"
_JOB_INT_END = JOB_INT_BASE + IRQ_BLOCK_SIZE
_USER_END = USER_BASE + PAGE_SIZE
_PWR_END = PWR_CONTROL_BASE + PWR_CONTROL_SIZE
_SIZES = (1, 2, 4, 8)
_P = ParamSpec("_P")


class McuHooks(Protocol):
    """What the GPU forwards to the firmware (MCU) model."""

    def mcu_control(self, value: int) -> None: ...  # MCU_CONTROL (0x700) write

    def doorbell(self, index: int) -> None: ...  # write to CSF_DOORBELL(index)

    def gpu_reset(self) -> None: ...  # GPU soft/hard reset: MCU stops, state lost


class MaliGpu:
    """The Mali GPU as seen through its MMIO window and its three interrupt lines."""

    def __init__(
        self,
        model: GpuModel,
        mem: PhysMem,
        *,
        on_irq: Callable[[str, bool], None],
        trace: bool = False,
        clock: Callable[[], int] = time.monotonic_ns,
        timestamp_hz: int | None = None,
        core_clock_hz: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.model = model
        self.family = model.family
        self._word_names = FAMILY_WORD_NAMES[model.family]
        self.mem = mem
        self.on_irq = on_irq
        self.trace = trace
        self.stats: Counter[str] = Counter()
        #: --timeline (qemu_panthor/timeline.py): None while off
        self.tl: Timeline | None = None
        self.mcu: McuHooks | None = None
        #: Called after a reset with its kind: "soft"/"hard" (GPU_CMD) or "device" (PCI/power-on).
        self.on_reset: Callable[[str], None] | None = None
        self._mcu_status = 0
        self._flush_id = 1
        self.user_page: bytearray | memoryview = bytearray(PAGE_SIZE)
        # GPU_INT and (arch 14) PWR_INT share the "gpu" line
        self._gpu_line = False
        self.gpu_irq = IrqBlock("gpu", lambda level: self._gpu_line_changed())
        self.pwr_irq = IrqBlock("pwr", lambda level: self._gpu_line_changed())
        self.job_irq = IrqBlock("job", lambda level: self._irq_level("job", level))
        self.mmu_irq = IrqBlock("mmu", lambda level: self._irq_level("mmu", level))
        self.mmu = Mmu(
            mem,
            self.mmu_irq,
            as_present=model.as_present,
            va_bits=model.va_bits,
            pa_bits=model.pa_bits,
            legacy_lpae=model.family == Family.JM,
        )
        self.control = GpuControl(
            model,
            self.gpu_irq,
            self,
            clock=clock,
            timestamp_hz=timestamp_hz or model.timestamp_hz,
            core_clock_hz=core_clock_hz or model.core_clock_hz,
            stats=self.stats,
        )
        #: the Job Manager (JM parts only): JOB_INT and the job slots
        self.jobs: JobControl | None = None
        if model.family == Family.JM:
            self.jobs = JobControl(self.mmu, self.job_irq, js_present=model.js_present,
                                   timestamp=self.timestamp, cycle_count=self.cycle_count,
                                   loop=loop)
            # jobs stalled on an MMU fault wait for the driver's AS commands
            self.mmu.on_as_update = self.jobs.on_as_update
        else:
            # CSF: a bus error behind a translation is a GPU fault (kbase CSF: GPU_IRQ FAULT,
            # GPU_FAULTSTATUS with the AS, GPU_FAULTADDRESS the PA); MMU_INT has no bus bits
            self.mmu.bus_fault_hook = self._bus_fault
        #: PWR_CONTROL (arch 14 parts only)
        self.pwr: PwrControl | None = (
            PwrControl(model, self.pwr_irq, self, self.stats) if model.pwr_control else None)
        self._store_flush_id()

    # -- firmware-model facing state ----------------------------------------------------
    @property
    def mcu_status(self) -> int:
        """MCU_STATUS (0x704), set by the firmware model; changes raise MCU_STATUS_CHANGED."""
        return self._mcu_status

    @mcu_status.setter
    def mcu_status(self, value: int) -> None:
        value &= _M32
        if value != self._mcu_status:
            self._mcu_status = value
            self.gpu_irq.raise_bits(GpuIrq.MCU_STATUS_CHANGED)

    @property
    def latest_flush_id(self) -> int:
        """LATEST_FLUSH_ID (USER page 0x10000): bumped by every cache flush, never 0."""
        return self._flush_id

    @latest_flush_id.setter
    def latest_flush_id(self, value: int) -> None:
        self._flush_id = value & _FLUSH_ID_MASK or 1
        self._store_flush_id()

    def attach_timeline(self, tl: Timeline | None) -> None:
        """Send this GPU's events (MMIO traffic, doorbells, interrupts, AS commands, faults,
        resets) to ``tl`` (None: stop)."""
        self.tl = tl
        for irq in (self.gpu_irq, self.job_irq, self.mmu_irq, self.pwr_irq):
            irq.tl = tl
        self.mmu.tl = tl
        if self.pwr is not None:
            self.pwr.tl = tl

    def _store_flush_id(self) -> None:
        _U32.pack_into(self.user_page, 0, self._flush_id)

    def attach_user_page(self, buf: bytearray | memoryview) -> None:
        """Serve the USER page from ``buf`` (e.g. a shared memfd page the device maps)."""
        if len(buf) < PAGE_SIZE:
            raise ValueError("USER page buffer must hold 4096 bytes")
        view = memoryview(buf).cast("B")
        view[:PAGE_SIZE] = bytes(PAGE_SIZE)
        self.user_page = view
        self._store_flush_id()

    @staticmethod
    def side_effect_free_pages(family: Family = Family.CSF) -> tuple[int, ...]:
        """Page offsets a device may back with shared memory instead of trapping.

        A JM part has none. On a CSF part only the USER page qualifies: reads have no side
        effects, its content (LATEST_FLUSH_ID) is kept up to date in :attr:`user_page` by the
        model, and hardware ignores writes to it. Every other page has registers computed on
        read (timers, IRQ status, MMU) or writes with side effects (commands, doorbells).
        """
        return () if family == Family.JM else (USER_BASE,)

    def flush_caches(self) -> None:
        """A cache clean/invalidate happened: bump LATEST_FLUSH_ID (wraps in 24 bits, skips 0)."""
        self.latest_flush_id = self._flush_id + 1
        self.stats["cache_flushes"] += 1

    def timestamp(self) -> int:
        return self.control.timestamp()

    def cycle_count(self) -> int:
        return self.control.cycle_count()

    def _bus_fault(self, as_nr: int, access: int, pa: int | None) -> None:
        """A GPU access (or page-table read, ``pa`` None) hit no memory: GPU_BUS_FAULT."""
        status = (exc.GPU_BUS_FAULT | access << GPU_FAULTSTATUS_ACCESS_SHIFT
                  | GPU_FAULTSTATUS_JASID_VALID | as_nr << GPU_FAULTSTATUS_JASID_SHIFT
                  | (GPU_FAULTSTATUS_ADDRESS_VALID if pa is not None else 0))
        self.control.raise_fault(status, pa or 0)

    def raise_gpu_fault(self, exception_type: int, address: int) -> None:
        """Report a GPU fault: GPU_FAULT_STATUS/ADDR latched, GPU_INT bit 0 (FAULT) raised."""
        self.control.raise_fault(exception_type, address)

    # -- ControlOwner -------------------------------------------------------------------
    def mcu_control_written(self, value: int) -> None:
        mcu = self.mcu
        if mcu is not None:
            self._mcu_hook("mcu_control", mcu.mcu_control, value)

    def cache_flush_command(self, command: int) -> None:
        self.flush_caches()

    def gpu_reset_command(self, hard: bool, *, fast: bool = False) -> None:
        """GPU_CMD SOFT/HARD_RESET: all GPU state to reset values, then RESET_COMPLETED.
        FAST (payload 0): the same, but the power domains stay powered (kbase)."""
        ready = dict(self.control.ready) if fast else None
        self._commanded_reset("hard reset" if hard else "fast reset" if fast else "soft reset")
        if ready is not None:
            self.control.ready = ready
        # GPU_INT_MASK survives (the driver waits on the IRQ); RAWSTAT becomes exactly
        # RESET_COMPLETED in one step so the line does not glitch.
        self.gpu_irq.rawstat = 0
        self.gpu_irq.raise_bits(GpuIrq.RESET_COMPLETED)
        self._reset_done("hard" if hard else "soft")

    def pwr_reset_command(self, fast: bool) -> None:
        """PWR_COMMAND RESET_SOFT / RESET_FAST (arch 14): every block but PWR_CONTROL to its
        reset values, GPU_INT_RAWSTAT cleared; PWR_CONTROL raises its own RESET_COMPLETED."""
        self._commanded_reset("fast reset" if fast else "soft reset")
        self.gpu_irq.clear_bits(_M32)
        self._reset_done("soft")

    def _commanded_reset(self, what: str) -> None:
        """The part of a reset the driver commands that both commands share: counted, on the
        timeline, every block to its reset values."""
        self.stats["gpu_resets"] += 1
        if self.tl is not None:
            self.tl.instant("GPU", what)
        self._reset_blocks()

    def mcu_running(self) -> bool:
        """The MCU runs (MCU_STATUS ENABLED): the power domains delegated to it are up."""
        return self._mcu_status == McuStatus.ENABLED

    def reset(self) -> None:
        """Device-level reset (PCI DEVICE_RESET / power-on): everything, GPU_INT_MASK too."""
        if self.tl is not None:
            self.tl.instant("GPU", "device reset")
        self._reset_blocks()
        self.gpu_irq.reset()
        self.pwr_irq.reset()
        self._reset_done("device")

    def _reset_done(self, kind: str) -> None:
        hook = self.on_reset
        if hook is not None:
            try:
                hook(kind)
            except Exception:
                self.stats["errors"] += 1
                log.exception("on_reset(%s) hook failed", kind)

    def _reset_blocks(self) -> None:
        mcu = self.mcu
        if mcu is not None:
            self._mcu_hook("gpu_reset", mcu.gpu_reset)
        self._mcu_status = 0
        self.control.reset_state()
        if self.pwr is not None:
            self.pwr.reset_state()
        self.mmu.reset()
        self.mmu_irq.reset()
        if self.jobs is not None:
            self.jobs.reset()  # every slot idle, JOB_INT reset with it
        else:
            self.job_irq.reset()

    def _mcu_hook(
        self, name: str, hook: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        """Call one of the firmware model's hooks; its failures never escape into MMIO."""
        try:
            hook(*args, **kwargs)
        except Exception:
            self.stats["mcu_hook_errors"] += 1
            log.exception("McuHooks.%s%r failed", name, args)

    def _gpu_line_changed(self) -> None:
        level = self.gpu_irq.level or self.pwr_irq.level
        if level != self._gpu_line:
            self._gpu_line = level
            self._irq_level("gpu", level)

    def _irq_level(self, name: str, level: bool) -> None:
        if level:
            self.stats[f"irq_{name}"] += 1
        if self.tl is not None:
            self.tl.counter(f"IRQ {name} line", int(level), unit="level")
        if self.trace:
            trace_log.info("IRQ %s -> %d", name, level)
        try:
            self.on_irq(name, level)
        except Exception:
            self.stats["errors"] += 1
            log.exception("on_irq(%s, %s) failed", name, level)

    # -- MMIO -----------------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        """Read ``size`` (1/2/4/8) bytes at ``offset``; never raises (errors read 0)."""
        try:
            self.stats["mmio_reads"] += 1
            if self.tl is not None:
                self.tl.mmio(False)
            if size == 4 and not offset & 3 and 0 <= offset < WINDOW_SIZE:
                value = self._read32(offset, True)
            elif size in _SIZES and 0 <= offset and offset + size <= WINDOW_SIZE:
                value = self._read_any(offset, size)
            else:
                self.stats["bad_accesses"] += 1
                log.warning("bad MMIO read: offset %#x size %r", offset, size)
                return 0
            if self.trace:
                trace_log.info("R%d %s = %#x", size * 8, register_name(offset, self.family), value)
            return value
        except Exception:
            self.stats["errors"] += 1
            log.exception("MMIO read at %#x size %r failed", offset, size)
            return 0

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        """Write ``size`` (1/2/4/8) bytes at ``offset``; never raises (errors are logged)."""
        try:
            self.stats["mmio_writes"] += 1
            if self.tl is not None:
                self.tl.mmio(True)
            if self.trace:
                trace_log.info("W%d %s = %#x", size * 8, register_name(offset, self.family), value)
            if size == 4 and not offset & 3 and 0 <= offset < WINDOW_SIZE:
                self._write32(offset, value & _M32)
            elif size in _SIZES and 0 <= offset and offset + size <= WINDOW_SIZE:
                self._write_any(offset, size, value & ((1 << (8 * size)) - 1))
            else:
                self.stats["bad_accesses"] += 1
                log.warning("bad MMIO write: offset %#x size %r", offset, size)
        except Exception:
            self.stats["errors"] += 1
            log.exception("MMIO write at %#x size %r failed", offset, size)

    def _read_any(self, offset: int, size: int) -> int:
        first = offset & ~3
        last = (offset + size - 1) & ~3
        data = bytearray()
        self.control.freeze_time()
        try:
            for word in range(first, last + 4, 4):
                data += _U32.pack(self._read32(word, True))
        finally:
            self.control.thaw_time()
        start = offset - first
        return int.from_bytes(data[start : start + size], "little")

    def _write_any(self, offset: int, size: int, value: int) -> None:
        raw = value.to_bytes(size, "little")
        end = offset + size
        for word in range(offset & ~3, end, 4):
            lo, hi = max(offset, word), min(end, word + 4)
            chunk = raw[lo - offset : hi - offset]
            if lo == word and hi == word + 4:
                self._write32(word, _U32.unpack(chunk)[0])
                continue
            cur = bytearray(_U32.pack(self._read32(word, False)))
            cur[lo - word : hi - word] = chunk
            self._write32(word, _U32.unpack(cur)[0])

    def _unknown(self, kind: str, off: int, count: bool) -> int:
        if count:
            self.stats[kind] += 1
            if self.trace:
                trace_log.info("%s at %#x (%s)", kind, off, register_name(off, self.family))
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("%s at %#x", kind, off)
        return 0

    def _read32(self, off: int, count: bool) -> int:
        if off < GPU_CONTROL_SIZE:
            pwr = self.pwr
            if pwr is not None and PWR_CONTROL_BASE <= off < _PWR_END:
                if pwr.known(off - PWR_CONTROL_BASE):
                    return pwr.read32(off - PWR_CONTROL_BASE)
                return self._unknown("unknown_reads", off, count)
            if self.control.known(off):
                return self.control.read32(off)
            return self._unknown("unknown_reads", off, count)
        if off < MMU_BASE:
            jobs = self.jobs
            if jobs is not None:
                if count and off not in self._word_names:
                    self._unknown("unknown_reads", off, count)
                return jobs.read32(off - JOB_INT_BASE)
            if off < _JOB_INT_END:
                return self.job_irq.read(off - JOB_INT_BASE)
            return self._unknown("unknown_reads", off, count)
        if off < MMU_BASE + MMU_SIZE:
            if count and off not in self._word_names:
                self._unknown("unknown_reads", off, count)
            return self.mmu.read32(off - MMU_BASE) & _M32
        if self.family == Family.JM:
            return self._unknown("unknown_reads", off, count)
        if USER_BASE <= off < _USER_END:
            if off == USER_BASE:
                return self._flush_id
            return self._unknown("unknown_reads", off, count)
        if off >= CSF_DOORBELL_BASE and not off & 0xFFFF:
            return 0  # doorbell registers read 0
        return self._unknown("unknown_reads", off, count)

    def _write32(self, off: int, value: int) -> None:
        if off < GPU_CONTROL_SIZE:
            pwr = self.pwr
            if pwr is not None and PWR_CONTROL_BASE <= off < _PWR_END:
                if pwr.known(off - PWR_CONTROL_BASE):
                    pwr.write32(off - PWR_CONTROL_BASE, value)
                else:
                    self._unknown("unknown_writes", off, True)
                return
            if self.control.known(off):
                self.control.write32(off, value)
            else:
                self._unknown("unknown_writes", off, True)
            return
        if off < MMU_BASE:
            jobs = self.jobs
            if jobs is not None:
                if off not in self._word_names:
                    self._unknown("unknown_writes", off, True)
                jobs.write32(off - JOB_INT_BASE, value)
            elif off < _JOB_INT_END:
                self.job_irq.write(off - JOB_INT_BASE, value)
            else:
                self._unknown("unknown_writes", off, True)
            return
        if off < MMU_BASE + MMU_SIZE:
            if off not in self._word_names:
                self._unknown("unknown_writes", off, True)
            self.mmu.write32(off - MMU_BASE, value)
            return
        if self.family == Family.JM:
            self._unknown("unknown_writes", off, True)
            return
        if off >= CSF_DOORBELL_BASE and not off & 0xFFFF:
            index = (off - CSF_DOORBELL_BASE) >> 16
            self.stats["doorbells"] += 1
            if self.tl is not None:
                self.tl.instant("Doorbells", f"doorbell {index}", index=index)
            mcu = self.mcu
            if mcu is None:
                self.stats["doorbells_dropped"] += 1
            else:
                self._mcu_hook("doorbell", mcu.doorbell, index)
            return
        if off == USER_BASE:
            return  # LATEST_FLUSH_ID is read-only
        self._unknown("unknown_writes", off, True)

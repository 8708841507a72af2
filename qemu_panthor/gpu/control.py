"""GPU_CONTROL block (0x0000-0x0FFF): identity, GPU_INT, GPU_CMD, power domains, timers, MCU.

What it models (hardware reference §2; the Job Manager family's differences in
docs/reference/mali-g52-jm.md: JS_PRESENT/JS_FEATURES, LATEST_FLUSH_ID at 0x38, quirk and
performance-counter registers as storage, GPU_CMD as plain command numbers, no MCU):

* identity/feature registers read the :class:`GpuModel` values and ignore writes;
* GPU_INT is an :class:`IrqBlock` at 0x20;
* GPU_CMD (CSF) decodes the command type in bits [7:0]; RESET and FLUSH_CACHES are delegated to the
  owner (they touch other blocks) and complete at once, as the driver's 100 ms waits allow;
* power domains complete transitions inside the PWRON/PWROFF write: PWRTRANS is never seen set,
  READY |= (written & PRESENT) on PWRON, READY &= ~written on PWROFF (§2.4: L2_READY then reads
  back exactly the bits written, so the driver's ``(1 & val) == val`` poll passes);
* CYCLE_COUNT and TIMESTAMP tick in real time from an injectable nanosecond clock;
  TIMESTAMP = system count + TIMESTAMP_OFFSET (inferred);
* MCU_CONTROL is stored and forwarded; MCU_STATUS reads the owner's ``mcu_status``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..irqblock import IRQ_BLOCK_SIZE, IrqBlock
from ..register import RegAccess
from .models import GpuModel
from .regs import (
    FAMILY_REGS,
    GPU_CMD_TYPE_MASK,
    GPU_CONTROL,
    GPU_INT_BASE,
    POWER_DOMAINS,
    Coherency,
    Family,
    GpuCmdType,
    GpuIrq,
    JmGpuCmd,
    ResetPayload,
)

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_NS_PER_S = 1_000_000_000

# Power-domain register word offsets -> (domain, kind, half). kind in ready/pwron/...
_POWER_WORDS: dict[int, tuple[str, str, int]] = {}
for _d in POWER_DOMAINS.values():
    for _kind, _base in (("ready", _d.ready), ("pwron", _d.pwron), ("pwroff", _d.pwroff),
                         ("pwrtrans", _d.pwrtrans), ("pwractive", _d.pwractive)):
        _POWER_WORDS[_base] = (_d.name, _kind, 0)
        _POWER_WORDS[_base + 4] = (_d.name, _kind, 1)

#: RW registers with behaviour of their own; every other RW register is plain storage
#: (reset value 0): L2_CONFIG, PWR_KEY, PWR_OVERRIDE0/1, ASN_HASH0..2, the JM quirk and
#: performance-counter configuration registers.
_RW_WITH_BEHAVIOUR = ("GPU_INT_RAWSTAT", "GPU_INT_MASK", "TIMESTAMP_OFFSET",
                      "COHERENCY_PROTOCOL", "MCU_CONTROL")


@dataclass(frozen=True)
class _Layout:
    """One family's GPU_CONTROL words, computed once from its register table."""

    known: frozenset[int]
    writable: frozenset[int]  # RW and WO registers; writes to anything else are ignored
    storage: frozenset[int]  # RW registers that only store what is written

    @classmethod
    def of(cls, family: Family) -> _Layout:
        table = FAMILY_REGS[family]
        return cls(
            known=frozenset(w for r in table for w in r.words()),
            writable=frozenset(w for r in table if r.access != RegAccess.RO for w in r.words()),
            storage=frozenset(w for r in table if r.access == RegAccess.RW
                              and r.name not in _RW_WITH_BEHAVIOUR for w in r.words()),
        )


_LAYOUTS = {f: _Layout.of(f) for f in Family}

_GPU_CMD = GPU_CONTROL["GPU_CMD"]
_GPU_STATUS = GPU_CONTROL["GPU_STATUS"]
_FAULT_STATUS = GPU_CONTROL["GPU_FAULT_STATUS"]
_FAULT_ADDR = GPU_CONTROL["GPU_FAULT_ADDR"]
_TS_OFFSET = GPU_CONTROL["TIMESTAMP_OFFSET"]
_CYCLE = GPU_CONTROL["CYCLE_COUNT"]
_TIMESTAMP = GPU_CONTROL["TIMESTAMP"]
_COH_PROTOCOL = GPU_CONTROL["COHERENCY_PROTOCOL"]
_MCU_CONTROL = GPU_CONTROL["MCU_CONTROL"]
_MCU_STATUS = GPU_CONTROL["MCU_STATUS"]
_LATEST_FLUSH_ID = GPU_CONTROL["LATEST_FLUSH_ID"]
_INT_LO, _INT_HI = GPU_INT_BASE, GPU_INT_BASE + IRQ_BLOCK_SIZE


def identity_registers(model: GpuModel) -> dict[str, int]:
    """Name -> value of every identity/feature register of ``model`` (64-bit ones whole)."""
    common = {
        "GPU_ID": model.gpu_id,
        "L2_FEATURES": model.l2_features,
        "CORE_FEATURES": model.core_features,
        "TILER_FEATURES": model.tiler_features,
        "MEM_FEATURES": model.mem_features,
        "MMU_FEATURES": model.mmu_features,
        "AS_PRESENT": model.as_present,
        "THREAD_MAX_THREADS": model.thread_max_threads,
        "THREAD_MAX_WORKGROUP_SIZE": model.thread_max_workgroup_size,
        "THREAD_MAX_BARRIER_SIZE": model.thread_max_barrier_size,
        "THREAD_FEATURES": model.thread_features,
        **{f"TEXTURE_FEATURES{n}": v for n, v in enumerate(model.texture_features)},
        # arch 14: the PRESENT masks are PWR_CONTROL's (GPU_CONTROL's read 0, inferred)
        "SHADER_PRESENT": 0 if model.pwr_control else model.shader_present,
        "TILER_PRESENT": 0 if model.pwr_control else model.tiler_present,
        "L2_PRESENT": 0 if model.pwr_control else model.l2_present,
        "COHERENCY_FEATURES": model.coherency_features,
    }
    if model.family == Family.JM:
        return {
            **common,
            "JS_PRESENT": model.js_present,
            # slots not present read 0
            **{f"JS_FEATURES{n}": v for n, v in enumerate(model.js_features)},
            "AFBC_FEATURES": model.afbc_features,
            "THREAD_TLS_ALLOC": model.thread_tls_alloc,
            "STACK_PRESENT": model.stack_present,
        }
    return {
        **common,
        "CSF_ID": model.csf_id,
        "GPU_FEATURES": model.gpu_features,
        "GPU_REVID": model.gpu_revid,
    }


_REG_BY_NAME = {r.name: r for table in FAMILY_REGS.values() for r in table}


def identity_words(model: GpuModel) -> dict[int, int]:
    """Word offset -> value of every identity/feature register of ``model``."""
    words: dict[int, int] = {}
    for name, value in identity_registers(model).items():
        reg = _REG_BY_NAME[name]
        words[reg.offset] = value & _M32
        if reg.width == 64:
            words[reg.offset + 4] = (value >> 32) & _M32
    return words


class ControlOwner(Protocol):
    """What GPU_CONTROL needs from the device that contains it (``MaliGpu``)."""

    mcu_status: int
    latest_flush_id: int

    def gpu_reset_command(self, hard: bool, *, fast: bool = False) -> None: ...
    def cache_flush_command(self, command: int) -> None: ...
    def mcu_control_written(self, value: int) -> None: ...


class GpuControl:
    """Registers 0x000-0xFFF of the Mali GPU window."""

    def __init__(
        self,
        model: GpuModel,
        irq: IrqBlock,
        owner: ControlOwner,
        *,
        clock: Callable[[], int],
        timestamp_hz: int,
        core_clock_hz: int,
        stats: Counter[str] | None = None,
    ) -> None:
        self.model = model
        self.family = model.family
        self._layout = _LAYOUTS[model.family]
        self.irq = irq
        self.owner = owner
        self._clock = clock
        self._epoch = clock()
        self._frozen: int | None = None
        self.timestamp_hz = timestamp_hz
        self.core_clock_hz = core_clock_hz
        self._ident = identity_words(model)
        # what GPU_CONTROL's PRESENT registers read (0 on arch 14, whose domains are
        # PWR_CONTROL's): only those cores can be powered here
        ident = identity_registers(model)
        self.present = {d: ident[f"{d.upper()}_PRESENT"] for d in ("shader", "tiler", "l2")}
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self.reset_state()

    # -- state ----------------------------------------------------------------------------
    def reset_state(self) -> None:
        """What a GPU soft/hard reset returns to its reset value (GPU_INT is the owner's job);
        also the power-on state, so __init__ uses it too."""
        self.ready: dict[str, int] = {"shader": 0, "tiler": 0, "l2": 0}
        self.storage: dict[int, int] = dict.fromkeys(self._layout.storage, 0)
        self.coherency_protocol = int(Coherency.NONE)
        self.fault_status = 0
        self.fault_addr = 0
        self.timestamp_offset = 0
        self.mcu_control = 0
        self.cycle_counter_enabled = True

    # -- time -----------------------------------------------------------------------------
    def _elapsed_ns(self) -> int:
        if self._frozen is not None:
            return self._frozen
        return max(0, self._clock() - self._epoch)

    def freeze_time(self) -> None:
        """Sample the clock once for a multi-word access (a 64-bit read is one sample)."""
        self._frozen = max(0, self._clock() - self._epoch)

    def thaw_time(self) -> None:
        self._frozen = None

    def system_count(self) -> int:
        return (self._elapsed_ns() * self.timestamp_hz // _NS_PER_S) & _M64

    def timestamp(self) -> int:
        """TIMESTAMP: the system counter at ``timestamp_hz`` plus TIMESTAMP_OFFSET."""
        return (self.system_count() + self.timestamp_offset) & _M64

    def cycle_count(self) -> int:
        """CYCLE_COUNT: GPU clock cycles at ``core_clock_hz`` since the model started."""
        return (self._elapsed_ns() * self.core_clock_hz // _NS_PER_S) & _M64

    # -- power ----------------------------------------------------------------------------
    def power_on(self, domain: str, mask: int) -> None:
        """PWRON: cores in ``mask & PRESENT`` become READY; the transition completes now."""
        mask &= self.present[domain]
        if not mask:
            return
        old = self.ready[domain]
        self.ready[domain] = old | mask
        self._power_changed(old != self.ready[domain])

    def power_off(self, domain: str, mask: int) -> None:
        """PWROFF: cores leave READY. An L2 fully off takes its dependent cores down with it."""
        mask &= self.present[domain]
        if not mask:
            return
        old = self.ready[domain]
        self.ready[domain] = old & ~mask
        changed = old != self.ready[domain]
        if domain == "l2" and self.ready["l2"] == 0:
            changed |= bool(self.ready["shader"] or self.ready["tiler"])
            self.ready["shader"] = self.ready["tiler"] = 0
        self._power_changed(changed)

    def _power_changed(self, changed: bool) -> None:
        bits = int(GpuIrq.POWER_CHANGED_ALL)
        if changed:
            bits |= GpuIrq.POWER_CHANGED
        self.irq.raise_bits(bits)

    # -- faults ---------------------------------------------------------------------------
    def raise_fault(self, status: int, address: int) -> None:
        """Latch GPU_FAULT_STATUS/ADDR and raise GPU_INT FAULT (bit 0)."""
        self.fault_status = status & _M32
        self.fault_addr = address & _M64
        self.irq.raise_bits(GpuIrq.FAULT)

    # -- register interface ---------------------------------------------------------------
    def known(self, off: int) -> bool:
        return off in self._layout.known

    def read32(self, off: int) -> int:
        v = self._ident.get(off)
        if v is not None:
            return v
        if _INT_LO <= off < _INT_HI:
            return self.irq.read(off - _INT_LO)
        pw = _POWER_WORDS.get(off)
        if pw is not None:
            domain, kind, half = pw
            if kind == "ready":
                return (self.ready[domain] >> (32 * half)) & _M32
            return 0  # PWRTRANS/PWRACTIVE read 0; PWRON/PWROFF are write-only
        if off in self._layout.storage:
            return self.storage[off]
        if off == _LATEST_FLUSH_ID and self.family == Family.JM:
            return self.owner.latest_flush_id & _M32
        if off == _MCU_STATUS:
            return self.owner.mcu_status & _M32
        if off == _MCU_CONTROL:
            return self.mcu_control
        if off == _COH_PROTOCOL:
            return self.coherency_protocol
        if _TIMESTAMP <= off < _TIMESTAMP + 8:
            return (self.timestamp() >> (8 * (off - _TIMESTAMP))) & _M32
        if _CYCLE <= off < _CYCLE + 8:
            return (self.cycle_count() >> (8 * (off - _CYCLE))) & _M32
        if _TS_OFFSET <= off < _TS_OFFSET + 8:
            return (self.timestamp_offset >> (8 * (off - _TS_OFFSET))) & _M32
        if off == _FAULT_STATUS:
            return self.fault_status
        if _FAULT_ADDR <= off < _FAULT_ADDR + 8:
            return (self.fault_addr >> (8 * (off - _FAULT_ADDR))) & _M32
        if off == _GPU_STATUS:
            # never busy: work completes in the handlers (not read by panthor); on a JM part
            # PRFCNT_ACTIVE is never set either, a sample completes at once
            return 0
        return 0  # write-only registers (GPU_CMD, PWRON/PWROFF) and unknown offsets

    def write32(self, off: int, value: int) -> None:
        if off not in self._layout.writable:
            return  # read-only and unknown registers: writes ignored
        value &= _M32
        if _INT_LO <= off < _INT_HI:
            self.irq.write(off - _INT_LO, value)
            return
        if off == _GPU_CMD:
            self._command(value)
            return
        pw = _POWER_WORDS.get(off)
        if pw is not None:
            domain, kind, half = pw
            if kind == "pwron":
                self.power_on(domain, value << (32 * half))
            elif kind == "pwroff":
                self.power_off(domain, value << (32 * half))
            return  # READY/PWRTRANS/PWRACTIVE are read-only
        if off in self._layout.storage:
            self.storage[off] = value
            return
        if off == _MCU_CONTROL:
            self.mcu_control = value
            self.owner.mcu_control_written(value)
            return
        if off == _COH_PROTOCOL:
            self.coherency_protocol = value
            return
        if _TS_OFFSET <= off < _TS_OFFSET + 8:
            shift = 8 * (off - _TS_OFFSET)
            self.timestamp_offset = (self.timestamp_offset & ~(_M32 << shift) & _M64) | (
                value << shift
            )
            return

    def _command(self, value: int) -> None:
        if self.family == Family.JM:
            self._jm_command(value)
            return
        ctype = value & GPU_CMD_TYPE_MASK
        payload = value >> 8
        if ctype == GpuCmdType.RESET and payload in (ResetPayload.FAST, ResetPayload.SOFT,
                                                     ResetPayload.HARD):
            self.owner.gpu_reset_command(payload == ResetPayload.HARD,
                                         fast=payload == ResetPayload.FAST)
        elif ctype == GpuCmdType.FLUSH_CACHES:
            self.owner.cache_flush_command(value)
            self.irq.raise_bits(GpuIrq.CLEAN_CACHES_COMPLETED)
        elif ctype == GpuCmdType.FLUSH_PA_RANGE:
            # a clean/invalidate of a physical range (GPU_COMMAND_ARG0/1): caches are not
            # modelled, so the whole flush stands for it; it completes with its own bit
            # (kbase waits for FLUSH_PA_RANGE_COMPLETED, not CLEAN_CACHES_COMPLETED)
            self.owner.cache_flush_command(value)
            self.irq.raise_bits(GpuIrq.FLUSH_PA_RANGE_COMPLETED)
        elif ctype == GpuCmdType.CLEAR_FAULT:
            self.fault_status = 0
            self.fault_addr = 0
        elif ctype == GpuCmdType.TIME and payload in (0, 1):
            # Cycle-counter enable/disable: accepted; the counter is modelled as always running.
            self.cycle_counter_enabled = bool(payload)
        elif ctype == GpuCmdType.NOP:
            pass
        else:
            self.stats["unknown_gpu_cmds"] += 1  # SET_PROTECTED_MODE, FINISH_HALT, bad payloads

    def _jm_command(self, value: int) -> None:
        """GPU_CMD of a Job Manager GPU (JmGpuCmd): one number, no payload."""
        if value in (JmGpuCmd.SOFT_RESET, JmGpuCmd.HARD_RESET):
            self.owner.gpu_reset_command(value == JmGpuCmd.HARD_RESET)
        elif value in (JmGpuCmd.CLEAN_CACHES, JmGpuCmd.CLEAN_INV_CACHES):
            self.owner.cache_flush_command(value)
            self.irq.raise_bits(GpuIrq.CLEAN_CACHES_COMPLETED)
        elif value in (JmGpuCmd.CYCLE_COUNT_START, JmGpuCmd.CYCLE_COUNT_STOP):
            # refcounted by panfrost; the counter is modelled as always running
            self.cycle_counter_enabled = value == JmGpuCmd.CYCLE_COUNT_START
        elif value == JmGpuCmd.PERFCNT_SAMPLE:
            # No counters are modelled: the sample completes without writing a dump
            # (docs/jm.md); PERFCNT_CLEAR has nothing to clear.
            self.stats["perfcnt_samples"] += 1
            self.irq.raise_bits(GpuIrq.PERFCNT_SAMPLE_COMPLETED)
        elif value in (JmGpuCmd.NOP, JmGpuCmd.PERFCNT_CLEAR):
            pass
        else:
            self.stats["unknown_gpu_cmds"] += 1

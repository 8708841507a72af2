"""Mali CSF register map (GPU_CONTROL, JOB_INT, MMU, USER page, doorbells) declared as data.

Offsets and names follow panthor's ``panthor_gpu_regs.h`` / ``panthor_mmu_regs.h`` /
``panthor_fw_regs.h`` as summarised in the hardware reference (§2, §3, §4.1). A 64-bit register
is two 32-bit words, LO at ``off`` and HI at ``off + 4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from ..irqblock import IRQ_REGS
from ..jm.regs import JOB_INT_JS_STATE, JOB_INT_THROTTLE, JS_BASE, JS_REGS, JS_STRIDE, MAX_JS
from ..mmu.regs import AS_REGS, MAX_AS, as_reg
from ..register import Reg, RegAccess
from .pwr_regs import PWR_CONTROL_BASE, PWR_REGS

# -- window layout -------------------------------------------------------------------
WINDOW_SIZE = 0x200000
PAGE_SIZE = 0x1000

GPU_CONTROL_BASE = 0x0000
GPU_CONTROL_SIZE = 0x1000
JOB_CONTROL_BASE = 0x1000  # JOB_INT block
JOB_CONTROL_SIZE = 0x1000
MMU_BASE = 0x2000  # the MMU block (mmu/regs.py: MMU_INT at +0, AS n at +AS_BASE + n*AS_STRIDE)
MMU_SIZE = 0x1000

USER_BASE = 0x10000  # CSF USER page
CSF_GPU_LATEST_FLUSH_ID = 0x10000
CSF_DOORBELL_BASE = 0x80000
CSF_DOORBELL_STRIDE = 0x10000
DOORBELL_COUNT = (WINDOW_SIZE - CSF_DOORBELL_BASE) // CSF_DOORBELL_STRIDE  # 24 pages fit


def CSF_DOORBELL(i: int) -> int:
    """Offset of doorbell page ``i``."""
    return CSF_DOORBELL_BASE + i * CSF_DOORBELL_STRIDE


# -- IRQ blocks ------------------------------------------------------------------------
GPU_INT_BASE = 0x20
JOB_INT_BASE = 0x1000
MMU_INT_BASE = 0x2000


class GpuIrq(IntFlag):
    """GPU_INT_* bits (§2.2)."""

    FAULT = 1 << 0
    PROTM_FAULT = 1 << 1  # CSF
    MULTIPLE_FAULT = 1 << 7  # JM: a fault while GPU_FAULT_STATUS held one
    RESET_COMPLETED = 1 << 8
    POWER_CHANGED = 1 << 9
    POWER_CHANGED_ALL = 1 << 10
    PERFCNT_SAMPLE_COMPLETED = 1 << 16  # JM
    CLEAN_CACHES_COMPLETED = 1 << 17
    DOORBELL_MIRROR = 1 << 18
    MCU_STATUS_CHANGED = 1 << 19
    FLUSH_PA_RANGE_COMPLETED = 1 << 20  # CSF: GPU_CMD FLUSH_PA_RANGE done (kbase regmap)


#: GPU_FAULTSTATUS fields (CSF; kbase gpu_regmap_csf.h): EXCEPTION_TYPE [7:0],
#: ACCESS_TYPE [9:8], ADDRESS_VALID, JASID_VALID (the AS in JASID [15:12]), SOURCE_ID [31:16].
GPU_FAULTSTATUS_ACCESS_SHIFT = 8
GPU_FAULTSTATUS_ADDRESS_VALID = 1 << 10
GPU_FAULTSTATUS_JASID_VALID = 1 << 11
GPU_FAULTSTATUS_JASID_SHIFT = 12

JOB_INT_GLOBAL_IF = 1 << 31  # JOB_INT bit 31; bits 0..30 = CSG slot n


# -- GPU_CMD (§2.3) ------------------------------------------------------------------------
class GpuCmdType(IntEnum):
    """GPU_CMD[7:0] command type. Types other than RESET/FLUSH_CACHES are from kbase (inferred)."""

    NOP = 0
    RESET = 1
    TIME = 3  # cycle-counter enable/disable (payload 1/0)
    FLUSH_CACHES = 4
    SET_PROTECTED_MODE = 5
    FINISH_HALT = 6
    CLEAR_FAULT = 7
    FLUSH_PA_RANGE = 8


class ResetPayload(IntEnum):
    """GPU_CMD RESET payload [15:8] (kbase CSF regmap; FAST is not used by panthor)."""

    FAST = 0  # a reset that leaves the power domains powered
    SOFT = 1
    HARD = 2




def GPU_CMD_DEF(type_: int, payload: int) -> int:
    return type_ | (payload << 8)


GPU_SOFT_RESET = GPU_CMD_DEF(GpuCmdType.RESET, ResetPayload.SOFT)  # 0x101
GPU_HARD_RESET = GPU_CMD_DEF(GpuCmdType.RESET, ResetPayload.HARD)  # 0x201
GPU_CMD_TYPE_MASK = 0xFF


class JmGpuCmd(IntEnum):
    """GPU_CMD of a Job Manager GPU: a plain command number (panfrost_regs.h)."""

    NOP = 0
    SOFT_RESET = 1
    HARD_RESET = 2
    PERFCNT_CLEAR = 3
    PERFCNT_SAMPLE = 4
    CYCLE_COUNT_START = 5
    CYCLE_COUNT_STOP = 6
    CLEAN_CACHES = 7
    CLEAN_INV_CACHES = 8
    SET_PROTECTED_MODE = 9  # kbase (inferred); panfrost never writes it


GPU_STATUS_PRFCNT_ACTIVE = 1 << 2  # JM GPU_STATUS


# -- MCU (§2.1) ------------------------------------------------------------------------
class McuControl(IntEnum):
    DISABLE = 0
    ENABLE = 1
    AUTO = 2


class McuStatus(IntEnum):
    DISABLED = 0
    ENABLED = 1
    HALT = 2
    FATAL = 3


class Coherency(IntEnum):
    """COHERENCY_PROTOCOL values; COHERENCY_FEATURES has bit (1 << value) for 0/1."""

    ACE_LITE = 0
    ACE = 1
    NONE = 31


GPU_L2_CONFIG_ASN_HASH_ENABLE = 1 << 24
GPU_FEATURES_RAY_INTERSECTION = 1 << 2
GPU_FEATURES_RAY_TRAVERSAL = 1 << 5


# -- bit fields as (shift, width) ------------------------------------------------------
GPU_ID_FIELDS: dict[str, tuple[int, int]] = {
    "ARCH_MAJOR": (28, 4),
    "ARCH_MINOR": (24, 4),
    "ARCH_REV": (20, 4),
    "PROD_MAJOR": (16, 4),
    "VER_MAJOR": (12, 4),
    "VER_MINOR": (4, 8),
    "VER_STATUS": (0, 4),
}
MMU_FEATURES_FIELDS: dict[str, tuple[int, int]] = {"VA_BITS": (0, 8), "PA_BITS": (8, 8)}
CSF_ID_FIELDS: dict[str, tuple[int, int]] = {
    "CSHW_MAJOR": (26, 6),
    "CSHW_MINOR": (20, 6),
    "CSHW_REV": (16, 4),
    "MCU_MAJOR": (10, 6),
    "MCU_MINOR": (4, 6),
    "MCU_REV": (0, 4),
}


def field(value: int, fields: dict[str, tuple[int, int]], name: str) -> int:
    shift, width = fields[name]
    return (value >> shift) & ((1 << width) - 1)


# -- GPU_CONTROL register tables ---------------------------------------------------------
_RO, _RW, _WO = RegAccess.RO, RegAccess.RW, RegAccess.WO


class Family(IntEnum):
    """How the GPU is driven: CSF firmware (Valhall and later, panthor) or a Job Manager
    (Midgard/Bifrost, panfrost). GPU_CONTROL differs between them at a few offsets."""

    CSF = 0
    JM = 1


#: Registers both families have at the same offsets (panthor_gpu_regs.h, panfrost_regs.h).
_COMMON_REGS: tuple[Reg, ...] = (
    Reg("GPU_ID", 0x000),
    Reg("L2_FEATURES", 0x004),
    Reg("CORE_FEATURES", 0x008),
    Reg("TILER_FEATURES", 0x00C),
    Reg("MEM_FEATURES", 0x010),
    Reg("MMU_FEATURES", 0x014),
    Reg("AS_PRESENT", 0x018),
    Reg("GPU_INT_RAWSTAT", 0x020, access=_RW),
    Reg("GPU_INT_CLEAR", 0x024, access=_WO),
    Reg("GPU_INT_MASK", 0x028, access=_RW),
    Reg("GPU_INT_STAT", 0x02C),
    Reg("GPU_CMD", 0x030, access=_WO),
    Reg("GPU_STATUS", 0x034),
    Reg("GPU_FAULT_STATUS", 0x03C),
    Reg("GPU_FAULT_ADDR", 0x040, 64),
    Reg("PWR_KEY", 0x050, access=_RW),
    Reg("PWR_OVERRIDE0", 0x054, access=_RW),
    Reg("PWR_OVERRIDE1", 0x058, access=_RW),
    Reg("CYCLE_COUNT", 0x090, 64),
    Reg("TIMESTAMP", 0x098, 64),
    Reg("THREAD_MAX_THREADS", 0x0A0),
    Reg("THREAD_MAX_WORKGROUP_SIZE", 0x0A4),
    Reg("THREAD_MAX_BARRIER_SIZE", 0x0A8),
    Reg("THREAD_FEATURES", 0x0AC),
    *(Reg(f"TEXTURE_FEATURES{n}", 0x0B0 + 4 * n) for n in range(4)),
    Reg("SHADER_PRESENT", 0x100, 64),
    Reg("TILER_PRESENT", 0x110, 64),
    Reg("L2_PRESENT", 0x120, 64),
    Reg("SHADER_READY", 0x140, 64),
    Reg("TILER_READY", 0x150, 64),
    Reg("L2_READY", 0x160, 64),
    Reg("SHADER_PWRON", 0x180, 64, _WO),
    Reg("TILER_PWRON", 0x190, 64, _WO),
    Reg("L2_PWRON", 0x1A0, 64, _WO),
    Reg("SHADER_PWROFF", 0x1C0, 64, _WO),
    Reg("TILER_PWROFF", 0x1D0, 64, _WO),
    Reg("L2_PWROFF", 0x1E0, 64, _WO),
    Reg("SHADER_PWRTRANS", 0x200, 64),
    Reg("TILER_PWRTRANS", 0x210, 64),
    Reg("L2_PWRTRANS", 0x220, 64),
    Reg("SHADER_PWRACTIVE", 0x240, 64),
    Reg("TILER_PWRACTIVE", 0x250, 64),
    Reg("L2_PWRACTIVE", 0x260, 64),
    Reg("COHERENCY_FEATURES", 0x300),
    # COHERENCY_ENABLE in panfrost's names: the protocol selected, same register
    Reg("COHERENCY_PROTOCOL", 0x304, access=_RW),
)

#: CSF only (panthor_gpu_regs.h, §2.1).
_CSF_REGS: tuple[Reg, ...] = (
    Reg("CSF_ID", 0x01C),
    Reg("L2_CONFIG", 0x048, access=_RW),
    Reg("GPU_FEATURES", 0x060, 64),
    Reg("TIMESTAMP_OFFSET", 0x088, 64, _RW),
    Reg("GPU_REVID", 0x280),
    *(Reg(f"ASN_HASH{n}", 0x2C0 + 4 * n, access=_RW) for n in range(3)),
    Reg("MCU_CONTROL", 0x700, access=_RW),
    Reg("MCU_STATUS", 0x704),
)

#: Job Manager only (panfrost_regs.h; docs/reference/mali-g52-jm.md section 1).
_JM_REGS: tuple[Reg, ...] = (
    Reg("JS_PRESENT", 0x01C),
    Reg("LATEST_FLUSH_ID", 0x038),
    Reg("AFBC_FEATURES", 0x04C),
    Reg("PRFCNT_BASE", 0x060, 64, _RW),
    Reg("PRFCNT_CONFIG", 0x068, access=_RW),
    Reg("PRFCNT_JM_EN", 0x06C, access=_RW),
    Reg("PRFCNT_SHADER_EN", 0x070, access=_RW),
    Reg("PRFCNT_TILER_EN", 0x074, access=_RW),
    Reg("PRFCNT_MMU_L2_EN", 0x07C, access=_RW),
    *(Reg(f"JS_FEATURES{n}", 0x0C0 + 4 * n) for n in range(16)),
    Reg("THREAD_TLS_ALLOC", 0x310),
    Reg("STACK_PRESENT", 0xE00, 64),
    Reg("JM_CONFIG", 0xF00, access=_RW),
    Reg("SHADER_CONFIG", 0xF04, access=_RW),
    Reg("TILER_CONFIG", 0xF08, access=_RW),
    Reg("L2_MMU_CONFIG", 0xF0C, access=_RW),
)

#: GPU_CONTROL of each family, sorted by offset.
FAMILY_REGS: dict[Family, tuple[Reg, ...]] = {
    Family.CSF: tuple(sorted(_COMMON_REGS + _CSF_REGS, key=lambda r: r.offset)),
    Family.JM: tuple(sorted(_COMMON_REGS + _JM_REGS, key=lambda r: r.offset)),
}
#: The CSF table (what panthor sees).
GPU_CONTROL_REGS: tuple[Reg, ...] = FAMILY_REGS[Family.CSF]

#: name -> offset of every GPU_CONTROL register of either family (names are unique).
GPU_CONTROL: dict[str, int] = {r.name: r.offset for r in _COMMON_REGS + _CSF_REGS + _JM_REGS}


@dataclass(frozen=True)
class PowerDomain:
    """Offsets of one power domain's 64-bit register set (§2.1, §2.4)."""

    name: str
    present: int
    ready: int
    pwron: int
    pwroff: int
    pwrtrans: int
    pwractive: int


POWER_DOMAINS: dict[str, PowerDomain] = {
    d: PowerDomain(
        d,
        *(
            GPU_CONTROL[f"{d.upper()}_{s}"]
            for s in ("PRESENT", "READY", "PWRON", "PWROFF", "PWRTRANS", "PWRACTIVE")
        ),
    )
    for d in ("shader", "tiler", "l2")
}

def _word_names(family: Family) -> dict[int, str]:
    names: dict[int, str] = {}

    def add(reg: Reg, base: int = 0, prefix: str = "") -> None:
        off = base + reg.offset
        if reg.width == 64:
            names[off] = f"{prefix}{reg.name}_LO"
            names[off + 4] = f"{prefix}{reg.name}_HI"
        else:
            names[off] = f"{prefix}{reg.name}"

    for r in FAMILY_REGS[family]:
        add(r)
    for blk, base in (("JOB_INT", JOB_INT_BASE), ("MMU_INT", MMU_INT_BASE)):
        for n, o in IRQ_REGS.items():
            names[base + o] = f"{blk}_{n}"
    for asn in range(MAX_AS):
        for r in AS_REGS:
            add(r, MMU_BASE + as_reg(asn, 0), f"AS{asn}.")
    if family == Family.JM:
        names[JOB_CONTROL_BASE + JOB_INT_JS_STATE] = "JOB_INT_JS_STATE"
        names[JOB_CONTROL_BASE + JOB_INT_THROTTLE] = "JOB_INT_THROTTLE"
        for js in range(MAX_JS):
            for r in JS_REGS:
                add(r, JOB_CONTROL_BASE + JS_BASE + js * JS_STRIDE, f"JS{js}.")
        return names
    for r in PWR_REGS:  # arch 14 parts only; no other CSF register lives there
        add(r, PWR_CONTROL_BASE)
    names[CSF_GPU_LATEST_FLUSH_ID] = "CSF_GPU_LATEST_FLUSH_ID"
    for i in range(DOORBELL_COUNT):
        names[CSF_DOORBELL(i)] = f"CSF_DOORBELL({i})"
    return names


#: family -> 32-bit word offset -> register name, for every register the model decodes.
FAMILY_WORD_NAMES: dict[Family, dict[int, str]] = {f: _word_names(f) for f in Family}
#: The CSF window's names.
WORD_NAMES: dict[int, str] = FAMILY_WORD_NAMES[Family.CSF]


def register_name(offset: int, family: Family = Family.CSF) -> str:
    """Name of the register word containing ``offset`` (or a hex placeholder)."""
    word = offset & ~3
    name = FAMILY_WORD_NAMES[family].get(word)
    if name is None:
        return f"?{offset:#x}"
    return name if word == offset else f"{name}+{offset - word}"

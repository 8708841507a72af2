"""GPU models: the identity/feature register values a Mali part reports, as data.

A :class:`GpuModel` holds what the GPU_CONTROL identity registers read (§2.1, §2.8) plus, for
a CSF part, the parameters the firmware model publishes in its interface (§7), and for a Job
Manager part (``Family.JM``, panfrost) its job slots' registers
(docs/reference/mali-g52-jm.md). ``MODELS`` maps the names accepted on the command line to
models. Values not read from driver source or a real board are marked inferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .regs import (
    CSF_ID_FIELDS,
    GPU_FEATURES_RAY_INTERSECTION,
    GPU_ID_FIELDS,
    MMU_FEATURES_FIELDS,
    Family,
)
from .regs import field as _field

# io-pgtable accepts these output sizes after clamping to 48 (§2.1 MMU_FEATURES).
_VALID_PA_BITS = (32, 36, 40, 42, 44)


@dataclass(frozen=True)
class GpuModel:
    """Register values of one GPU part. Field names are the register names in lower case."""

    key: str
    gpu_id: int
    l2_features: int
    core_features: int
    tiler_features: int
    mem_features: int
    mmu_features: int
    as_present: int
    csf_id: int
    thread_max_threads: int
    thread_max_workgroup_size: int
    thread_max_barrier_size: int
    thread_features: int
    texture_features: tuple[int, int, int, int]
    coherency_features: int
    gpu_features: int
    shader_present: int
    tiler_present: int
    l2_present: int
    gpu_revid: int = 0
    family: Family = Family.CSF
    # Job Manager parts only (0 / empty on CSF parts, where the offsets hold other registers).
    js_present: int = 0
    js_features: tuple[int, ...] = ()  # JS_FEATURES(n) of the slots in js_present
    stack_present: int = 0
    thread_tls_alloc: int = 0
    afbc_features: int = 0
    # Clocks: TIMESTAMP ticks at the guest's CNTFRQ (the driver reports CNTFRQ to userspace as
    # the timestamp frequency): 1 GHz, as QEMU >= 9 runs it for -cpu max and as the arm64 guest
    # sets it for its Neoverse-N1 (cntfrq=1000000000, images/arches.toml).
    timestamp_hz: int = 1_000_000_000
    core_clock_hz: int = 800_000_000  # CYCLE_COUNT rate (the GPU core clock)
    # Firmware interface parameters published by the CSF model (§7.2-§7.4).
    csg_count: int = 8  # GLB group_num
    cs_per_csg: int = 8  # CSG stream_num
    cs_reg_count: int = 96  # CS_FEATURES work registers
    scoreboards: int = 8  # CS_FEATURES scoreboard count
    glb_version: tuple[int, int, int] = (1, 1, 0)
    glb_features: int = 0
    instr_features: int = 0x71
    csg_features: int = 0
    csg_suspend_size: int = 0x4000
    csg_protm_suspend_size: int = 0x4000
    aliases: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"GPU model {self.key!r} is inconsistent: " + "; ".join(problems))

    # -- decoded fields -----------------------------------------------------------------
    @property
    def arch_major(self) -> int:
        return _field(self.gpu_id, GPU_ID_FIELDS, "ARCH_MAJOR")

    @property
    def arch_minor(self) -> int:
        return _field(self.gpu_id, GPU_ID_FIELDS, "ARCH_MINOR")

    @property
    def arch_rev(self) -> int:
        return _field(self.gpu_id, GPU_ID_FIELDS, "ARCH_REV")

    @property
    def prod_major(self) -> int:
        return _field(self.gpu_id, GPU_ID_FIELDS, "PROD_MAJOR")

    @property
    def pwr_control(self) -> bool:
        """Arch 14 and later: power domains in PWR_CONTROL (panthor_hw_has_pwr_ctrl); the
        GPU_CONTROL power-domain registers are gone (read 0, inferred)."""
        return self.family == Family.CSF and self.arch_major >= 14

    @property
    def va_bits(self) -> int:
        return _field(self.mmu_features, MMU_FEATURES_FIELDS, "VA_BITS")

    @property
    def pa_bits(self) -> int:
        return _field(self.mmu_features, MMU_FEATURES_FIELDS, "PA_BITS")

    @property
    def shader_core_count(self) -> int:
        return self.shader_present.bit_count()

    @property
    def csf_id_fields(self) -> dict[str, int]:
        return {name: _field(self.csf_id, CSF_ID_FIELDS, name) for name in CSF_ID_FIELDS}

    @property
    def firmware_path(self) -> str:
        """The file panthor requests: ``arm/mali/arch<major>.<minor>/mali_csffw.bin`` (§1.3)."""
        return f"arm/mali/arch{self.arch_major}.{self.arch_minor}/mali_csffw.bin"

    @property
    def model_name(self) -> str:
        if self.family == Family.JM:
            return panfrost_model_name(self.gpu_id)
        return panthor_model_name(self.gpu_id, self.shader_present, self.gpu_features)

    @property
    def driver(self) -> str:
        """The Linux driver that binds this GPU."""
        return "panfrost" if self.family == Family.JM else "panthor"

    # -- consistency --------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Violations of what the 7.2 driver and this emulator accept (§2.8, §7.1)."""
        out: list[str] = []
        if self.gpu_id == 0:
            out.append("GPU_ID must be non-zero")
        if self.family == Family.JM:
            out += self._jm_problems()
        else:
            if not 10 <= self.arch_major <= 14:
                out.append("arch major must be 10..14 (what panthor 7.2 drives)")
            if self.js_present or self.js_features or self.stack_present:
                out.append("a CSF part has no job slots (JS_PRESENT/JS_FEATURES/STACK_PRESENT)")
        if self.arch_major == 10 and self.gpu_features:
            out.append("GPU_FEATURES does not exist on arch 10 (must read 0)")
        if not 32 <= self.va_bits <= 48:
            out.append("VA bits must be 32..48")
        if self.pa_bits not in _VALID_PA_BITS and self.pa_bits < 48:
            out.append(f"PA bits must be one of {_VALID_PA_BITS} or >= 48")
        asp = self.as_present
        if not asp & 1 or asp & 0xFFFFFFFE == 0 or asp & (asp + 1) or asp >> 16:
            out.append("AS_PRESENT must be contiguous from bit 0 with 2..16 slots")
        for name, present in (("SHADER_PRESENT", self.shader_present),
                              ("TILER_PRESENT", self.tiler_present),
                              ("L2_PRESENT", self.l2_present)):
            if present == 0:
                out.append(f"{name} must be non-zero")
        if len(self.texture_features) != 4:
            out.append("TEXTURE_FEATURES has 4 words")
        if not 3 <= self.csg_count <= 31:
            out.append("csg_count must be 3..31")
        if not 8 <= self.cs_per_csg <= 32:
            out.append("cs_per_csg must be 8..32")
        if not 8 <= self.cs_reg_count <= 256 or self.cs_reg_count % 2:
            out.append("cs_reg_count must be even, 8..256")
        if not 1 <= self.scoreboards <= 8:
            # WAIT's mask is 8 bits [23:16] (Mesa v10.xml); the kernel waits on all of them
            out.append("scoreboards must be 1..8")
        if self.glb_version >= (4, 0, 0):
            # panthor programs CSG priorities through endpoint_req2 from interface 4.0 on,
            # which the firmware model does not read (docs/reference/README.md)
            out.append("glb_version must be below 4.0.0")
        if self.csg_suspend_size <= 0 or self.csg_protm_suspend_size <= 0:
            out.append("suspend sizes must be > 0")
        if self.timestamp_hz <= 0 or self.core_clock_hz <= 0:
            out.append("clock rates must be > 0")
        return out

    def _jm_problems(self) -> list[str]:
        out: list[str] = []
        if not 6 <= self.arch_major <= 9:
            out.append("a Job Manager part has arch major 6..9 (Bifrost, Valhall JM)")
        if panfrost_model_name(self.gpu_id) == UNKNOWN_PANFROST_MODEL:
            out.append("panfrost has no model for this GPU_ID")
        if self.csf_id or self.gpu_features:
            out.append("a Job Manager part has no CSF_ID or GPU_FEATURES")
        jsp = self.js_present
        if not jsp & 1 or jsp & (jsp + 1) or jsp >> 16:
            out.append("JS_PRESENT must be contiguous from bit 0 with 1..16 slots")
        elif len(self.js_features) != jsp.bit_count():
            out.append("JS_FEATURES needs one value per slot in JS_PRESENT")
        return out


def panthor_model_name(gpu_id: int, shader_present: int, gpu_features: int) -> str:
    """``get_gpu_model_name`` of panthor 7.2 (§1.5): key = (ARCH_MAJOR << 24) | PROD_MAJOR."""
    arch = _field(gpu_id, GPU_ID_FIELDS, "ARCH_MAJOR")
    prod = _field(gpu_id, GPU_ID_FIELDS, "PROD_MAJOR")
    cores = shader_present.bit_count()
    ray = bool(gpu_features & GPU_FEATURES_RAY_INTERSECTION)
    fixed = {
        (10, 2): "Mali-G710",
        (10, 3): "Mali-G510",
        (10, 4): "Mali-G310",
        (10, 7): "Mali-G610",
        (11, 3): "Mali-G615",
        (12, 1): "Mali-G620",
        (13, 1): "Mali-G625",
        (14, 0): "Mali-G1-Ultra",
        (14, 1): "Mali-G1-Premium",
        (14, 3): "Mali-G1-Pro",
    }
    # (arch, prod): (immortalis name, big name, big-core threshold, fall-through name)
    tiered = {
        (11, 2): ("Mali-G715-Immortalis", "Mali-G715", 7, "Mali-G615"),
        (12, 0): ("Mali-G720-Immortalis", "Mali-G720", 6, "Mali-G620"),
        (13, 0): ("Mali-G925-Immortalis", "Mali-G725", 6, "Mali-G625"),
    }
    if (arch, prod) in tiered:
        immortalis, big, threshold, small = tiered[(arch, prod)]
        if cores >= 10 and ray:
            return immortalis
        return big if cores >= threshold else small
    return fixed.get((arch, prod), "(Unknown Mali GPU)")


#: panfrost 7.2's gpu_models (panfrost_gpu.c): model id -> name. A GPU_ID's product id
#: (GPU_ID >> 16) matches as panfrost_model_eq does: ids with bits 15:12 set compare
#: under the mask 0xF00F (0x7402 is a "g52"), older Midgard ids exactly.
PANFROST_MODELS: dict[int, str] = {
    0x600: "t600", 0x620: "t620", 0x720: "t720", 0x750: "t760", 0x820: "t820",
    0x830: "t830", 0x860: "t860", 0x880: "t880", 0x6000: "g71", 0x6001: "g72",
    0x7000: "g51", 0x7001: "g76", 0x7002: "g52", 0x7003: "g31", 0x9001: "g57",
    0x9003: "g57", 0x9093: "g57",
}
UNKNOWN_PANFROST_MODEL = "(unknown)"


def panfrost_model_name(gpu_id: int) -> str:
    """The name panfrost prints ("mali-g52") for ``gpu_id``, as its probe looks it up."""
    pid = gpu_id >> 16
    if pid == 0x6956:
        pid = 0x600  # T60x's odd id, fixed up by the driver
    for mid, name in PANFROST_MODELS.items():
        if (pid & 0xF00F == mid) if pid & 0xF000 else pid == mid:
            return f"mali-{name}"
    return UNKNOWN_PANFROST_MODEL


# Mali-G610 MC4 as on RK3588 (§2.8; values from public boot logs / Mesa, inferred).
G610 = GpuModel(
    key="g610",
    gpu_id=0xA8670005,  # arch 10.8 rev 6, prod 7, r0p0 status 5
    l2_features=0x07120306,  # 64-byte lines
    core_features=0x00000000,
    tiler_features=0x00000809,
    mem_features=0x00000301,
    mmu_features=0x00002830,  # VA 48, PA 40
    as_present=0xFF,
    csf_id=0x040A0412,  # CSHW 1.0 rev 10, MCU 1.1.2 (inferred)
    thread_max_threads=2048,
    thread_max_workgroup_size=1024,
    thread_max_barrier_size=1024,
    thread_features=0x04010000,  # 4 tasks/core, 65536 registers/core
    texture_features=(0xC1FFFF9E, 0, 0, 0),
    # ACE-Lite advertised like the real part; the coherency actually used is chosen by the
    # device tree (dma-coherent) and written to COHERENCY_PROTOCOL (31 = NONE by default).
    coherency_features=0x1,
    gpu_features=0,  # arch 10 has no GPU_FEATURES
    shader_present=0x50005,  # 4 cores
    tiler_present=0x1,
    l2_present=0x1,
    gpu_revid=0,
    aliases=("mali-g610", "rk3588"),
)

# Mali-G720 MC6 (arch 12.8): a consistent second value set so nothing is G610-only by
# accident (all values inferred; firmware path arch12.8 is in panthor's MODULE_FIRMWARE).
G720 = GpuModel(
    key="g720",
    gpu_id=0xC8001005,  # arch 12.8 rev 0, prod 0, r1p0 status 5
    l2_features=0x07130206,
    core_features=0x00000000,
    tiler_features=0x00000809,
    mem_features=0x00000101,
    mmu_features=0x00002830,
    as_present=0xFF,
    csf_id=0x0C000823,  # CSHW 3.0, MCU 2.2.3 (inferred)
    thread_max_threads=2048,
    thread_max_workgroup_size=1024,
    thread_max_barrier_size=1024,
    thread_features=0x04010000,
    texture_features=(0xC1FFFF9E, 0, 0, 0),
    coherency_features=0x1,
    gpu_features=GPU_FEATURES_RAY_INTERSECTION,
    shader_present=0x70007,  # 6 cores: "Mali-G720" (Immortalis needs >= 10 with ray)
    tiler_present=0x1,
    l2_present=0x1,
    gpu_revid=0,
    csg_count=16,
    glb_version=(3, 0, 0),
    aliases=("mali-g720",),
)

# Mali-G52 "2EE" as on RK3568/RK3566 (docs/reference/mali-g52-jm.md section 1): GPU_ID,
# L2/CORE/TILER/MEM/MMU_FEATURES, AS/JS_PRESENT and the present masks from real boot logs;
# THREAD_*, TEXTURE_FEATURES and JS_FEATURES are kbase's no-mali model values (inferred).
G52 = GpuModel(
    key="g52",
    gpu_id=0x74021000,  # arch 7.4.0, product 2, r1p0 status 0
    l2_features=0x07110206,
    core_features=0x00000002,
    tiler_features=0x00000209,
    mem_features=0x00000001,
    mmu_features=0x00002823,  # VA 35, PA 40
    as_present=0xFF,
    csf_id=0,
    thread_max_threads=0x180,
    thread_max_workgroup_size=0x180,
    thread_max_barrier_size=0x180,
    thread_features=0x0A046000,
    texture_features=(0x000FFFFF, 0x0000FFFF, 0x9F81FFFF, 0),
    coherency_features=0x1,  # ACE-Lite (inferred); RK3568's DT is not dma-coherent
    gpu_features=0,
    shader_present=0x1,
    tiler_present=0x1,
    l2_present=0x1,
    family=Family.JM,
    js_present=0x7,
    js_features=(0x20E, 0x1FE, 0x7E),  # fragment; vertex/tiler/compute; compute
    stack_present=0x1,  # inferred
    core_clock_hz=594_000_000,  # RK3568's "clock rate = 594000000"
    aliases=("mali-g52", "rk3568", "rk3566"),
)

# Mali-G1-Pro, arch 14 (docs/gpu.md "PWR_CONTROL"): what panthor 7.2 reads of an arch 14 part
# is GPU_CONTROL's identity (the PRESENT masks move to PWR_CONTROL) and PWR_CONTROL; every
# value is the G720 model's (inferred: no public register dump of a G1 exists) but arch 14.8
# (panthor 7.2's MODULE_FIRMWARE names arch14.8), product major 3 ("Mali-G1-Pro" in
# get_gpu_model_name), four shader cores and no ray tracing bit.
G1_PRO = replace(
    G720,
    key="g1-pro",
    gpu_id=0xE8031005,  # arch 14.8 rev 0, prod 3, r1p0 status 5 (inferred)
    gpu_features=0,
    shader_present=0x30003,  # 4 cores
    aliases=("mali-g1-pro", "g1"),
)

MODELS: dict[str, GpuModel] = {m.key: m for m in (G610, G720, G52, G1_PRO)}
#: The GPU served when none is named (the RK3588's Mali-G610).
DEFAULT_MODEL = G610


def lookup_model(name: str) -> GpuModel:
    """Model by key or alias (case-insensitive); ``KeyError`` listing the choices otherwise."""
    want = name.strip().lower()
    for m in MODELS.values():
        if want == m.key or want in m.aliases:
            return m
    raise KeyError(f"unknown GPU model {name!r}; choose one of {', '.join(sorted(MODELS))}")

"""Host <-> firmware interface blocks in the CSF shared section (reference §7).

The shared section (MCU VA 0x04000000) holds the GLB/CSG/CS *control* blocks (written by the
firmware at boot, read-only for the host), their *input* pages (host writes requests) and
*output* pages (firmware writes acknowledgements and status). Every block is declared once
here as data: a table of ``(name, offset, size)`` with a precompiled :class:`struct.Struct`
per field, plus the REQ/ACK bit definitions and the section layout our firmware uses.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..gpu.models import GpuModel

SHARED_SECTION_VA = 0x04000000
MCU_AUTO_VA_END = 0x08000000
GROUP_CONTROL_OFFSET = 0x1000  # CSF_GROUP_CONTROL_OFFSET
STREAM_CONTROL_OFFSET = 0x40  # CSF_STREAM_CONTROL_OFFSET
MIN_CSGS, MAX_CSGS = 3, 31
MIN_CS_PER_CSG, MAX_CS_PER_CSG = 8, 32


def iface_version(major: int, minor: int, patch: int) -> int:
    """``CSF_IFACE_VERSION``: (major << 24) | (minor << 16) | patch."""
    return (major << 24) | (minor << 16) | patch


# ---------------------------------------------------------------------------------------------
# Block declarations
# ---------------------------------------------------------------------------------------------
_FMT = {4: struct.Struct("<I"), 8: struct.Struct("<Q")}


@dataclass(frozen=True)
class BlockField:
    name: str
    offset: int
    size: int  # 4 or 8 bytes

    @property
    def st(self) -> struct.Struct:
        return _FMT[self.size]


class Block:
    """One interface structure: named little-endian u32/u64 fields at fixed offsets."""

    def __init__(self, name: str, size: int, fields: list[tuple[str, int, int]]) -> None:
        self.name = name
        self.size = size
        self.fields: dict[str, BlockField] = {}
        self.off: dict[str, int] = {}
        for fname, off, fsize in fields:
            if off + fsize > size or fsize not in _FMT:
                raise ValueError(f"{name}.{fname}: bad field")
            self.fields[fname] = BlockField(fname, off, fsize)
            self.off[fname] = off

    def get(self, buf: bytes | bytearray | memoryview, name: str) -> int:
        f = self.fields[name]
        return f.st.unpack_from(buf, f.offset)[0]

    def put(self, buf: bytearray | memoryview, name: str, value: int) -> None:
        f = self.fields[name]
        f.st.pack_into(buf, f.offset, value & ((1 << (8 * f.size)) - 1))

    def unpack(self, buf: bytes | bytearray | memoryview) -> dict[str, int]:
        return {n: f.st.unpack_from(buf, f.offset)[0] for n, f in self.fields.items()}

    def pack(self, **values: int) -> bytes:
        buf = bytearray(self.size)
        for n, v in values.items():
            self.put(buf, n, v)
        return bytes(buf)

    def encode(self, name: str, value: int) -> bytes:
        f = self.fields[name]
        return f.st.pack(value & ((1 << (8 * f.size)) - 1))

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Block({self.name}, {self.size:#x})"


GLB_CONTROL = Block("glb_control", 0x20, [
    ("version", 0x00, 4), ("features", 0x04, 4), ("input_va", 0x08, 4),
    ("output_va", 0x0C, 4), ("group_num", 0x10, 4), ("group_stride", 0x14, 4),
    ("perfcnt_size", 0x18, 4), ("instr_features", 0x1C, 4),
])
GLB_INPUT = Block("glb_input", 0x88, [
    ("req", 0x00, 4), ("ack_irq_mask", 0x04, 4), ("doorbell_req", 0x08, 4),
    ("progress_timer", 0x10, 4), ("poweroff_timer", 0x14, 4), ("core_en_mask", 0x18, 8),
    ("perfcnt_as", 0x24, 4), ("perfcnt_base", 0x28, 8), ("perfcnt_extract", 0x30, 4),
    ("perfcnt_config", 0x40, 4), ("perfcnt_csg_select", 0x44, 4),
    ("perfcnt_fw_enable", 0x48, 4), ("perfcnt_csg_enable", 0x4C, 4),
    ("perfcnt_csf_enable", 0x50, 4), ("perfcnt_shader_enable", 0x54, 4),
    ("perfcnt_tiler_enable", 0x58, 4), ("perfcnt_mmu_l2_enable", 0x5C, 4),
    ("idle_timer", 0x80, 4),
])
GLB_OUTPUT = Block("glb_output", 0x1C, [
    ("ack", 0x00, 4), ("doorbell_ack", 0x08, 4), ("halt_status", 0x10, 4),
    ("perfcnt_status", 0x14, 4), ("perfcnt_insert", 0x18, 4),
])
CSG_CONTROL = Block("csg_control", 0x1C, [
    ("features", 0x00, 4), ("input_va", 0x04, 4), ("output_va", 0x08, 4),
    ("suspend_size", 0x0C, 4), ("protm_suspend_size", 0x10, 4), ("stream_num", 0x14, 4),
    ("stream_stride", 0x18, 4),
])
CSG_INPUT = Block("csg_input", 0x58, [
    ("req", 0x00, 4), ("ack_irq_mask", 0x04, 4), ("doorbell_req", 0x08, 4),
    ("cs_irq_ack", 0x0C, 4), ("allow_compute", 0x20, 8), ("allow_fragment", 0x28, 8),
    ("allow_other", 0x30, 4), ("endpoint_req", 0x34, 4), ("endpoint_req2", 0x38, 8),
    ("suspend_buf", 0x40, 8), ("protm_suspend_buf", 0x48, 8), ("config", 0x50, 4),
    ("iter_trace_config", 0x54, 4),
])
CSG_OUTPUT = Block("csg_output", 0x20, [
    ("ack", 0x00, 4), ("doorbell_ack", 0x08, 4), ("cs_irq_req", 0x0C, 4),
    ("status_endpoint_current", 0x10, 4), ("status_endpoint_req", 0x14, 4),
    ("status_state", 0x18, 4), ("resource_dep", 0x1C, 4),
])
CS_CONTROL = Block("cs_control", 0x0C, [
    ("features", 0x00, 4), ("input_va", 0x04, 4), ("output_va", 0x08, 4),
])
CS_INPUT = Block("cs_input", 0x58, [
    ("req", 0x00, 4), ("config", 0x04, 4), ("ack_irq_mask", 0x0C, 4),
    ("ringbuf_base", 0x10, 8), ("ringbuf_size", 0x18, 4), ("heap_start", 0x20, 8),
    ("heap_end", 0x28, 8), ("ringbuf_input", 0x30, 8), ("ringbuf_output", 0x38, 8),
    ("instr_config", 0x40, 4), ("instrbuf_size", 0x44, 4), ("instrbuf_base", 0x48, 8),
    ("instrbuf_offset_ptr", 0x50, 8),
])
CS_OUTPUT = Block("cs_output", 0xD8, [
    ("ack", 0x00, 4), ("status_cmd_ptr", 0x40, 8), ("status_wait", 0x48, 4),
    ("status_req_resource", 0x4C, 4), ("status_wait_sync_ptr", 0x50, 8),
    ("status_wait_sync_value", 0x58, 4), ("status_scoreboards", 0x5C, 4),
    ("status_blocked_reason", 0x60, 4), ("status_wait_sync_value_hi", 0x64, 4),
    ("fault", 0x80, 4), ("fatal", 0x84, 4), ("fault_info", 0x88, 8), ("fatal_info", 0x90, 8),
    ("heap_vt_start", 0xC0, 4), ("heap_vt_end", 0xC4, 4), ("heap_frag_end", 0xCC, 4),
    ("heap_address", 0xD0, 8),
])
# Ring-buffer interface pages (8 KiB kernel BO in the MCU VM: input at +0, output at +0x1000).
RINGBUF_INPUT = Block("ringbuf_input", 0x10, [("insert", 0x0, 8), ("extract", 0x8, 8)])
RINGBUF_OUTPUT = Block("ringbuf_output", 0x0C, [("extract", 0x0, 8), ("active", 0x8, 4)])

BLOCKS = (GLB_CONTROL, GLB_INPUT, GLB_OUTPUT, CSG_CONTROL, CSG_INPUT, CSG_OUTPUT,
          CS_CONTROL, CS_INPUT, CS_OUTPUT, RINGBUF_INPUT, RINGBUF_OUTPUT)

# ---------------------------------------------------------------------------------------------
# REQ / ACK bits
# ---------------------------------------------------------------------------------------------
GLB_HALT = 1 << 0
GLB_CFG_PROGRESS_TIMER = 1 << 1
GLB_CFG_ALLOC_EN = 1 << 2
GLB_CFG_POWEROFF_TIMER = 1 << 3
GLB_PROTM_ENTER = 1 << 4
GLB_PERFCNT_EN = 1 << 5
GLB_PERFCNT_SAMPLE = 1 << 6
GLB_COUNTER_EN = 1 << 7
GLB_PING = 1 << 8
GLB_FWCFG_UPDATE = 1 << 9
GLB_IDLE_EN = 1 << 10
GLB_SLEEP = 1 << 12  # legacy, unused by 7.2 (overlaps STATE)
GLB_STATE_SHIFT = 12
GLB_STATE_MASK = 0x7 << GLB_STATE_SHIFT
GLB_STATE_ACTIVE, GLB_STATE_HALT, GLB_STATE_SLEEP, GLB_STATE_SUSPEND = 0, 1, 2, 3
GLB_INACTIVE_COMPUTE = 1 << 20
GLB_INACTIVE_FRAGMENT = 1 << 21
GLB_INACTIVE_TILER = 1 << 22
GLB_PROTM_EXIT = 1 << 23
GLB_PERFCNT_THRESHOLD = 1 << 24
GLB_PERFCNT_OVERFLOW = 1 << 25
GLB_IDLE = 1 << 26
GLB_DBG_CSF = 1 << 30
GLB_DBG_HOST = 1 << 31
GLB_REQ_MASK = 0x7FF  # bits 0..10
GLB_EVT_MASK = 0x7F00000  # bits 20..26
# Toggle-type requests (req != ack means "pending"); the rest of GLB_REQ_MASK are levels.
GLB_TOGGLE_REQS = (GLB_CFG_PROGRESS_TIMER | GLB_CFG_ALLOC_EN | GLB_CFG_POWEROFF_TIMER
                   | GLB_PROTM_ENTER | GLB_PERFCNT_SAMPLE | GLB_PING | GLB_FWCFG_UPDATE)
GLB_LEVEL_REQS = GLB_HALT | GLB_PERFCNT_EN | GLB_COUNTER_EN | GLB_IDLE_EN

CSG_STATE_MASK = 0x7
CSG_STATE_TERMINATE, CSG_STATE_START, CSG_STATE_SUSPEND, CSG_STATE_RESUME = 0, 1, 2, 3
CSG_ENDPOINT_CONFIG = 1 << 4
CSG_STATUS_UPDATE = 1 << 5
CSG_SYNC_UPDATE = 1 << 28
CSG_IDLE = 1 << 29
CSG_DOORBELL = 1 << 30
CSG_PROGRESS_TIMER_EVENT = 1 << 31
CSG_REQ_MASK = 0x37
CSG_EVT_MASK = CSG_SYNC_UPDATE | CSG_IDLE | CSG_PROGRESS_TIMER_EVENT
CSG_STATUS_STATE_IS_IDLE = 1 << 0
# endpoint_req (iface < 4.0) fields
CSG_EP_COMPUTE_MASK = 0xFF
CSG_EP_FRAGMENT_SHIFT = 8
CSG_EP_TILER_SHIFT = 16
CSG_EP_EXCL_COMPUTE = 1 << 20
CSG_EP_EXCL_FRAGMENT = 1 << 21
CSG_EP_PRIORITY_SHIFT = 28

CS_STATE_MASK = 0x7
CS_STATE_STOP, CS_STATE_START = 0, 1
CS_EXTRACT_EVENT = 1 << 4
CS_IDLE_SYNC_WAIT = 1 << 8
CS_IDLE_PROTM_PEND = 1 << 9
CS_IDLE_EMPTY = 1 << 10
CS_IDLE_RESOURCE_REQ = 1 << 11
CS_TILER_OOM = 1 << 26
CS_PROTM_PENDING = 1 << 27
CS_FATAL = 1 << 30
CS_FAULT = 1 << 31
CS_REQ_MASK = 0xF17
CS_EVT_MASK = CS_TILER_OOM | CS_PROTM_PENDING | CS_FATAL | CS_FAULT
CS_CONFIG_PRIORITY_MASK = 0xF
CS_CONFIG_DOORBELL_SHIFT = 8
CS_CONFIG_DOORBELL_MASK = 0xFF << CS_CONFIG_DOORBELL_SHIFT

# CS_FEATURES
CS_FEATURES_COMPUTE = 1 << 16
CS_FEATURES_FRAGMENT = 1 << 17
CS_FEATURES_TILER = 1 << 18

# status_wait
CS_STATUS_WAIT_SB_MASK = 0xFFFF
CS_STATUS_WAIT_SB_SRC_SHIFT = 16
CS_STATUS_WAIT_SYNC_COND_SHIFT = 24
CS_STATUS_WAIT_SYNC_COND_LE, CS_STATUS_WAIT_SYNC_COND_GT = 0, 1
CS_STATUS_WAIT_PROGRESS = 1 << 28
CS_STATUS_WAIT_PROTM = 1 << 29
CS_STATUS_WAIT_SYNC_64B = 1 << 30
CS_STATUS_WAIT_SYNC = 1 << 31

# status_blocked_reason
CS_BLOCKED_UNBLOCKED, CS_BLOCKED_SB_WAIT, CS_BLOCKED_PROGRESS_WAIT = 0, 1, 2
CS_BLOCKED_SYNC_WAIT, CS_BLOCKED_DEFERRED, CS_BLOCKED_RESOURCE, CS_BLOCKED_FLUSH = 3, 4, 5, 6

def toggle_pending(req: int, ack: int, mask: int) -> int:
    """Bits of ``mask`` where a toggle request is pending (req differs from ack)."""
    return (req ^ ack) & mask


# ---------------------------------------------------------------------------------------------
# Firmware configuration and shared-section layout
# ---------------------------------------------------------------------------------------------
def _align(v: int, a: int) -> int:
    return (v + a - 1) & ~(a - 1)


@dataclass(frozen=True)
class FwConfig:
    """What our firmware publishes in its control blocks (reference §7.2-7.4).

    Every value comes from the :class:`~qemu_panthor.gpu.models.GpuModel` (``from_model``);
    the encodings of the published words (CS_FEATURES, the version word, the suspend size our
    records need) are computed here, once."""

    group_num: int
    stream_num: int
    reg_count: int
    scoreboards: int
    version: int
    features: int
    instr_features: int
    csg_features: int
    csg_suspend_size: int
    protm_suspend_size: int

    def __post_init__(self) -> None:
        if not MIN_CSGS <= self.group_num <= MAX_CSGS:
            raise ValueError(f"group_num must be in [{MIN_CSGS}, {MAX_CSGS}]")
        if not MIN_CS_PER_CSG <= self.stream_num <= MAX_CS_PER_CSG:
            raise ValueError(f"stream_num must be in [{MIN_CS_PER_CSG}, {MAX_CS_PER_CSG}]")
        if not 1 <= self.reg_count <= 256 or not 0 <= self.scoreboards <= 255:
            raise ValueError("bad reg_count/scoreboards")

    @property
    def cs_features(self) -> int:
        """CS_FEATURES: [7:0] work registers - 1, [15:8] scoreboards, 16/17/18 endpoints
        (every stream of our firmware can drive compute, fragment and tiler work)."""
        return ((self.reg_count - 1) | (self.scoreboards << 8) | CS_FEATURES_COMPUTE
                | CS_FEATURES_FRAGMENT | CS_FEATURES_TILER)

    @property
    def suspend_size(self) -> int:
        """Suspend buffer size: at least room for our serialised record of every CS."""
        need = _align(SUSPEND_HEADER_SIZE + self.stream_num * SUSPEND_CS_BUDGET, 0x1000)
        return max(self.csg_suspend_size, need)

    @classmethod
    def from_model(cls, model: GpuModel) -> FwConfig:
        """The firmware configuration the GPU model ``model`` publishes."""
        return cls(
            group_num=model.csg_count,
            stream_num=model.cs_per_csg,
            reg_count=model.cs_reg_count,
            scoreboards=model.scoreboards,
            version=iface_version(*model.glb_version),
            features=model.glb_features,
            instr_features=model.instr_features,
            csg_features=model.csg_features,
            csg_suspend_size=model.csg_suspend_size,
            protm_suspend_size=model.csg_protm_suspend_size,
        )


# Suspend-buffer record budget (our firmware's own format, see mcu.py).
SUSPEND_HEADER_SIZE = 0x40
SUSPEND_CS_BUDGET = 0x700


@dataclass(frozen=True)
class SharedLayout:
    """Placement of every interface block in the shared section (offsets from its start).

    Generalises the reference §7.1 suggested layout: for 8 CSGs x 8 CSs it is exactly
    GLB control/input/output @0/0x100/0x200, CSG control @0x1000 + i*0x100 (CS controls at
    +0x40 + j*0xC), CSG input/output @0x4000/0x5000 + i*0x100, CS input/output
    @0x8000/0xC000 + (i*8+j)*0x100 in 64 KiB; with 16 CSGs the CS outputs move to 0x10000
    and the section is 128 KiB.
    """

    group_num: int
    stream_num: int

    STREAM_STRIDE = 0x0C
    GLB_INPUT_OFF = 0x100
    GLB_OUTPUT_OFF = 0x200
    SLOT = 0x100  # one input or output block per 0x100

    @property
    def group_stride(self) -> int:
        return _align(STREAM_CONTROL_OFFSET + self.stream_num * self.STREAM_STRIDE, 0x100)

    @property
    def csg_input_base(self) -> int:
        ctrl_end = GROUP_CONTROL_OFFSET + self.group_num * self.group_stride
        return max(0x4000, _align(ctrl_end, 0x1000))

    @property
    def _csg_area(self) -> int:
        return max(0x1000, _align(self.group_num * self.SLOT, 0x1000))

    @property
    def csg_output_base(self) -> int:
        return self.csg_input_base + self._csg_area

    @property
    def cs_input_base(self) -> int:
        return max(0x8000, self.csg_output_base + self._csg_area)

    @property
    def cs_output_base(self) -> int:
        return self.cs_input_base + max(
            0x4000, _align(self.group_num * self.stream_num * self.SLOT, 0x1000))

    @property
    def used(self) -> int:
        return self.cs_output_base + self.group_num * self.stream_num * self.SLOT

    @property
    def section_size(self) -> int:
        """Shared section size: the next power of two >= used bytes, at least 64 KiB."""
        size = 0x10000
        while size < self.used:
            size <<= 1
        return size

    # -- offsets ------------------------------------------------------------------------------
    def csg_control(self, i: int) -> int:
        return GROUP_CONTROL_OFFSET + i * self.group_stride

    def cs_control(self, i: int, j: int) -> int:
        return self.csg_control(i) + STREAM_CONTROL_OFFSET + j * self.STREAM_STRIDE

    def csg_input(self, i: int) -> int:
        return self.csg_input_base + i * self.SLOT

    def csg_output(self, i: int) -> int:
        return self.csg_output_base + i * self.SLOT

    def cs_input(self, i: int, j: int) -> int:
        return self.cs_input_base + (i * self.stream_num + j) * self.SLOT

    def cs_output(self, i: int, j: int) -> int:
        return self.cs_output_base + (i * self.stream_num + j) * self.SLOT

    def check(self) -> None:
        """Raise ValueError if two blocks overlap or a block leaves the section."""
        spans: list[tuple[int, int, str]] = [
            (0, GLB_CONTROL.size, "glb control"),
            (self.GLB_INPUT_OFF, GLB_INPUT.size, "glb input"),
            (self.GLB_OUTPUT_OFF, GLB_OUTPUT.size, "glb output"),
        ]
        for i in range(self.group_num):
            spans += [(self.csg_control(i), CSG_CONTROL.size, f"csg{i} control"),
                      (self.csg_input(i), CSG_INPUT.size, f"csg{i} input"),
                      (self.csg_output(i), CSG_OUTPUT.size, f"csg{i} output")]
            for j in range(self.stream_num):
                spans += [(self.cs_control(i, j), CS_CONTROL.size, f"cs{i}.{j} control"),
                          (self.cs_input(i, j), CS_INPUT.size, f"cs{i}.{j} input"),
                          (self.cs_output(i, j), CS_OUTPUT.size, f"cs{i}.{j} output")]
        spans.sort()
        for (a, asz, an), (b, _bsz, bn) in itertools.pairwise(spans):
            if a + asz > b:
                raise ValueError(f"shared layout: {an} overlaps {bn}")
        last = spans[-1]
        if last[0] + last[1] > self.section_size:
            raise ValueError("shared layout does not fit the section")
        if SHARED_SECTION_VA + self.section_size > MCU_AUTO_VA_END:
            raise ValueError("shared section fills the MCU auto-VA region")

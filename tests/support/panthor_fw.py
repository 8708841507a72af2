"""The host <-> CSF firmware interface as the panthor driver declares it, for the test host.

Written from Linux's ``drivers/gpu/drm/panthor/panthor_fw.h`` (the ``panthor_fw_*_iface``
structs and their REQ/ACK bit definitions; 7.2's additions as docs/reference/csf-interface.md
gives them) and ``panthor_fw.c`` (the firmware container, "Firmware image" in the same
reference). Declared here independently of ``qemu_panthor.csf``, so that a wrong offset or
bit in the model is not mirrored by the test (the approach of libvfio-user's test/py, which
declares the protocol structs itself).

The structs are ctypes declarations in the C field order, reserved words included; offsets
and sizes come from the C layout rules (natural alignment), as they do for the driver.
"""

from __future__ import annotations

import struct
from ctypes import LittleEndianStructure, c_uint32, c_uint64, sizeof
from dataclasses import dataclass

u32, u64 = c_uint32, c_uint64


class Iface(LittleEndianStructure):
    """One interface struct; ``off(name)``/``size_of(name)`` give a field's placement."""

    @classmethod
    def off(cls, name: str) -> int:
        return int(getattr(cls, name).offset)

    @classmethod
    def size_of(cls, name: str) -> int:
        return int(getattr(cls, name).size)

    @classmethod
    def names(cls) -> list[str]:
        return [f[0] for f in cls._fields_ if not f[0].startswith("reserved")]

    @classmethod
    def unpack(cls, raw: bytes) -> dict[str, int]:
        """Every named field of ``raw`` (at least ``sizeof(cls)`` bytes)."""
        s = cls.from_buffer_copy(raw[:sizeof(cls)])
        return {n: int(getattr(s, n)) for n in cls.names()}


# -- panthor_fw.h ---------------------------------------------------------------------------
class RingbufInput(Iface):
    _fields_ = [("insert", u64), ("extract", u64)]


class RingbufOutput(Iface):
    _fields_ = [("extract", u64), ("active", u32)]


class CsControl(Iface):
    _fields_ = [("features", u32), ("input_va", u32), ("output_va", u32)]


class CsInput(Iface):
    _fields_ = [
        ("req", u32), ("config", u32), ("reserved1", u32), ("ack_irq_mask", u32),
        ("ringbuf_base", u64), ("ringbuf_size", u32), ("reserved2", u32),
        ("heap_start", u64), ("heap_end", u64), ("ringbuf_input", u64), ("ringbuf_output", u64),
        ("instr_config", u32), ("instrbuf_size", u32), ("instrbuf_base", u64),
        ("instrbuf_offset_ptr", u64),
    ]


class CsOutput(Iface):
    _fields_ = [
        ("ack", u32), ("reserved1", u32 * 15), ("status_cmd_ptr", u64),
        ("status_wait", u32), ("status_req_resource", u32), ("status_wait_sync_ptr", u64),
        ("status_wait_sync_value", u32), ("status_scoreboards", u32),
        ("status_blocked_reason", u32), ("status_wait_sync_value_hi", u32),
        ("reserved2", u32 * 6),
        ("fault", u32), ("fatal", u32), ("fault_info", u64), ("fatal_info", u64),
        ("reserved3", u32 * 10),
        ("heap_vt_start", u32), ("heap_vt_end", u32), ("reserved4", u32), ("heap_frag_end", u32),
        ("heap_address", u64),
    ]


class CsgControl(Iface):
    _fields_ = [
        ("features", u32), ("input_va", u32), ("output_va", u32), ("suspend_size", u32),
        ("protm_suspend_size", u32), ("stream_num", u32), ("stream_stride", u32),
    ]


class CsgInput(Iface):
    _fields_ = [
        ("req", u32), ("ack_irq_mask", u32), ("doorbell_req", u32), ("cs_irq_ack", u32),
        ("reserved1", u32 * 4), ("allow_compute", u64), ("allow_fragment", u64),
        ("allow_other", u32), ("endpoint_req", u32),
        ("endpoint_req2", u64),  # 7.2, iface >= 4.0 (reserved2[2] before)
        ("suspend_buf", u64), ("protm_suspend_buf", u64), ("config", u32),
        ("iter_trace_config", u32),
    ]


class CsgOutput(Iface):
    _fields_ = [
        ("ack", u32), ("reserved1", u32), ("doorbell_ack", u32), ("cs_irq_req", u32),
        ("status_endpoint_current", u32), ("status_endpoint_req", u32), ("status_state", u32),
        ("resource_dep", u32),
    ]


class GlbControl(Iface):
    _fields_ = [
        ("version", u32), ("features", u32), ("input_va", u32), ("output_va", u32),
        ("group_num", u32), ("group_stride", u32), ("perfcnt_size", u32),
        ("instr_features", u32),
    ]


class GlbInput(Iface):
    _fields_ = [
        ("req", u32), ("ack_irq_mask", u32), ("doorbell_req", u32), ("reserved1", u32),
        ("progress_timer", u32), ("poweroff_timer", u32), ("core_en_mask", u64),
        ("reserved2", u32), ("perfcnt_as", u32), ("perfcnt_base", u64),
        ("perfcnt_extract", u32), ("reserved3", u32 * 3), ("perfcnt_config", u32),
        ("perfcnt_csg_select", u32), ("perfcnt_fw_enable", u32), ("perfcnt_csg_enable", u32),
        ("perfcnt_csf_enable", u32), ("perfcnt_shader_enable", u32),
        ("perfcnt_tiler_enable", u32), ("perfcnt_mmu_l2_enable", u32), ("reserved4", u32 * 8),
        ("idle_timer", u32),
    ]


class GlbOutput(Iface):
    _fields_ = [
        ("ack", u32), ("reserved1", u32), ("doorbell_ack", u32), ("reserved2", u32),
        ("halt_status", u32), ("perfcnt_status", u32), ("perfcnt_insert", u32),
    ]


# The block sizes of the reference tables (csf-interface.md): a check on the declarations.
for _st, _size in ((GlbControl, 0x20), (GlbInput, 0x88), (GlbOutput, 0x1C), (CsgControl, 0x1C),
                   (CsgInput, 0x58), (CsgOutput, 0x20), (CsControl, 0x0C), (CsInput, 0x58),
                   (CsOutput, 0xD8)):
    assert sizeof(_st) == _size, (_st.__name__, hex(sizeof(_st)))

# panthor_fw.c: where the control blocks are
CSF_MCU_SHARED_REGION_START = 0x04000000
CSF_GROUP_CONTROL_OFFSET = 0x1000
CSF_STREAM_CONTROL_OFFSET = 0x40
MIN_CSGS, MAX_CSGS = 3, 31
MIN_CS_PER_CSG, MAX_CS_PER_CSG = 8, 32

# GLB_REQ / GLB_ACK
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
GLB_STATE_MASK = 0x7 << 12  # iface >= 4.1
GLB_IDLE = 1 << 26
GLB_REQ_MASK = 0x7FF

# CSG_REQ / CSG_ACK
CSG_STATE_MASK = 0x7
CSG_STATE_TERMINATE, CSG_STATE_START, CSG_STATE_SUSPEND, CSG_STATE_RESUME = 0, 1, 2, 3
CSG_ENDPOINT_CONFIG = 1 << 4
CSG_STATUS_UPDATE = 1 << 5
CSG_SYNC_UPDATE = 1 << 28
CSG_IDLE = 1 << 29
CSG_DOORBELL = 1 << 30
CSG_PROGRESS_TIMER_EVENT = 1 << 31
CSG_STATUS_STATE_IS_IDLE = 1 << 0

# CS_REQ / CS_ACK
CS_STATE_MASK = 0x7
CS_STATE_STOP, CS_STATE_START = 0, 1
CS_EXTRACT_EVENT = 1 << 4
CS_IDLE_SYNC_WAIT = 1 << 8
CS_IDLE_PROTM_PENDING = 1 << 9
CS_IDLE_EMPTY = 1 << 10
CS_IDLE_RESOURCE_REQ = 1 << 11
CS_TILER_OOM = 1 << 26
CS_PROTM_PENDING = 1 << 27
CS_FATAL = 1 << 30
CS_FAULT = 1 << 31
CS_REQ_MASK = CS_STATE_MASK | CS_EXTRACT_EVENT | 0xF00

# CS_FEATURES
CS_FEATURES_COMPUTE = 1 << 16
CS_FEATURES_FRAGMENT = 1 << 17
CS_FEATURES_TILER = 1 << 18

# status_blocked_reason
CS_STATUS_BLOCKED_REASON_SYNC_WAIT = 3


def csg_ep_req_priority(prio: int) -> int:
    """CSG_EP_REQ_PRIORITY(x): endpoint_req [31:28]."""
    return (prio << 28) & 0xF000_0000


def cs_config_doorbell(db: int) -> int:
    """CS_CONFIG_DOORBELL(x): config [15:8]."""
    return (db << 8) & 0xFF00


# -- panthor_fw.c: the firmware container ----------------------------------------------------
CSF_FW_BINARY_HEADER_MAGIC = 0xC3F13A6E
CSF_FW_BINARY_ENTRY_TYPE_IFACE = 0
CSF_FW_BINARY_ENTRY_OPTIONAL = 1 << 31
CSF_FW_BINARY_IFACE_ENTRY_RD = 1 << 0
CSF_FW_BINARY_IFACE_ENTRY_WR = 1 << 1
CSF_FW_BINARY_IFACE_ENTRY_EX = 1 << 2
CSF_FW_BINARY_IFACE_ENTRY_PROT = 1 << 5
CSF_FW_BINARY_IFACE_ENTRY_SHARED = 1 << 30
CSF_FW_BINARY_IFACE_ENTRY_ZERO = 1 << 31


@dataclass(frozen=True)
class FwSection:
    """One IFACE entry: MCU VA range [va_start, va_end), file data [data_start, data_end)."""

    flags: int
    va_start: int
    va_end: int
    data_start: int
    data_end: int
    name: bytes

    @property
    def size(self) -> int:
        return self.va_end - self.va_start

    @property
    def writable(self) -> bool:
        return bool(self.flags & CSF_FW_BINARY_IFACE_ENTRY_WR)

    @property
    def executable(self) -> bool:
        return bool(self.flags & CSF_FW_BINARY_IFACE_ENTRY_EX)


def fw_sections(image: bytes) -> list[FwSection]:
    """The sections panthor loads from ``image``: the IFACE entries with a non-empty VA range
    that are not protected-mode sections (panthor_fw_load_section_entry). Other entry types
    are skipped; the container is assumed valid (its checks are test_fwimage's business)."""
    magic, _minor, major, _pad1, _hash, _pad2, size = struct.unpack_from("<IBBHIII", image, 0)
    assert magic == CSF_FW_BINARY_HEADER_MAGIC and major == 0, "not a CSF firmware image"
    sections: list[FwSection] = []
    off = 20
    while off < size:
        (hdr,) = struct.unpack_from("<I", image, off)
        etype, esize = hdr & 0xFF, (hdr >> 8) & 0xFF
        assert esize >= 4 and off + esize <= size, f"bad entry at {off:#x}"
        if etype == CSF_FW_BINARY_ENTRY_TYPE_IFACE:
            body = image[off + 4:off + esize]
            flags, va_start, va_end, data_start, data_end = struct.unpack_from("<5I", body)
            sec = FwSection(flags, va_start, va_end, data_start, data_end, body[20:])
            if sec.size and not flags & CSF_FW_BINARY_IFACE_ENTRY_PROT:
                sections.append(sec)
        off += esize
    return sections

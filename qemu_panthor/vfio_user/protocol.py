"""vfio-user wire format, declared once as data.

Layouts follow the vfio-user specification shipped with QEMU 11.1
(``interop/vfio-user.html``) and what was seen on the wire (docs/vfio-user.md). All fields are
little-endian (host order on x86-64 and arm64). Message layouts that are off the hot path are
``construct`` structures; REGION_READ/REGION_WRITE use the precompiled ``struct.Struct`` objects
at the end of this module.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag

from construct import Array, Bytes, GreedyBytes, Int16ul, Int32ul, Int64ul, Struct, this


class Command(IntEnum):
    VERSION = 1
    DMA_MAP = 2
    DMA_UNMAP = 3
    DEVICE_GET_INFO = 4
    DEVICE_GET_REGION_INFO = 5
    DEVICE_GET_REGION_IO_FDS = 6
    DEVICE_GET_IRQ_INFO = 7
    DEVICE_SET_IRQS = 8
    REGION_READ = 9
    REGION_WRITE = 10
    DMA_READ = 11
    DMA_WRITE = 12
    DEVICE_RESET = 13
    REGION_WRITE_MULTI = 15
    DEVICE_FEATURE = 16
    MIG_DATA_READ = 17
    MIG_DATA_WRITE = 18


class MsgFlags(IntFlag):
    """Header ``flags``: bits 0-3 are the type, then NO_REPLY and ERROR."""

    COMMAND = 0x0
    REPLY = 0x1
    NO_REPLY = 0x10
    ERROR = 0x20


TYPE_MASK = 0xF


class DmaMapFlags(IntFlag):
    READ = 1
    WRITE = 2
    MODE_MMAP = 4
    MODE_FILE_IO = 8


class DmaUnmapFlags(IntFlag):
    GET_DIRTY_BITMAP = 1  # removed from the protocol; rejected
    ALL = 2


class DeviceFlags(IntFlag):
    RESET = 1
    PCI = 2


class RegionFlags(IntFlag):
    READ = 1
    WRITE = 2
    MMAP = 4
    CAPS = 8


class IrqInfoFlags(IntFlag):
    EVENTFD = 1
    MASKABLE = 2
    AUTOMASKED = 4
    NORESIZE = 8


class IrqSetFlags(IntFlag):
    DATA_NONE = 1
    DATA_BOOL = 2
    DATA_EVENTFD = 4
    ACTION_MASK = 8
    ACTION_UNMASK = 16
    ACTION_TRIGGER = 32


DATA_MASK = int(IrqSetFlags.DATA_NONE | IrqSetFlags.DATA_BOOL | IrqSetFlags.DATA_EVENTFD)
ACTION_MASK = int(
    IrqSetFlags.ACTION_MASK | IrqSetFlags.ACTION_UNMASK | IrqSetFlags.ACTION_TRIGGER
)


class PciRegion(IntEnum):
    """VFIO PCI region indexes."""

    BAR0 = 0
    BAR1 = 1
    BAR2 = 2
    BAR3 = 3
    BAR4 = 4
    BAR5 = 5
    ROM = 6
    CONFIG = 7
    VGA = 8


NUM_PCI_REGIONS = 9


class PciIrq(IntEnum):
    """VFIO PCI interrupt indexes."""

    INTX = 0
    MSI = 1
    MSIX = 2
    ERR = 3
    REQ = 4


NUM_PCI_IRQS = 5

REGION_INFO_CAP_SPARSE_MMAP = 1
REGION_INFO_CAP_SPARSE_MMAP_VERSION = 1

# -- layouts ----------------------------------------------------------------------------------

Header = Struct(
    "id" / Int16ul,
    "command" / Int16ul,
    "size" / Int32ul,
    "flags" / Int32ul,
    "error" / Int32ul,
)
HEADER_SIZE = Header.sizeof()  # 16

Version = Struct(
    "major" / Int16ul,
    "minor" / Int16ul,
    "data" / GreedyBytes,  # NUL-terminated UTF-8 JSON, optional
)
VERSION_FIXED = 4

DmaMap = Struct(
    "argsz" / Int32ul,
    "flags" / Int32ul,
    "offset" / Int64ul,
    "address" / Int64ul,
    "size" / Int64ul,
)

DmaUnmap = Struct(
    "argsz" / Int32ul,
    "flags" / Int32ul,
    "address" / Int64ul,
    "size" / Int64ul,
)

DeviceInfo = Struct(
    "argsz" / Int32ul,
    "flags" / Int32ul,
    "num_regions" / Int32ul,
    "num_irqs" / Int32ul,
)

RegionInfo = Struct(
    "argsz" / Int32ul,
    "flags" / Int32ul,
    "index" / Int32ul,
    "cap_offset" / Int32ul,
    "size" / Int64ul,
    "offset" / Int64ul,
)

CapHeader = Struct(
    "id" / Int16ul,
    "version" / Int16ul,
    "next" / Int32ul,
)

SparseMmapArea = Struct("offset" / Int64ul, "size" / Int64ul)

SparseMmapCap = Struct(
    "header" / CapHeader,
    "nr_areas" / Int32ul,
    "reserved" / Int32ul,
    "areas" / Array(this.nr_areas, SparseMmapArea),
)

IrqInfo = Struct(
    "argsz" / Int32ul,
    "flags" / Int32ul,
    "index" / Int32ul,
    "count" / Int32ul,
)

IrqSet = Struct(
    "argsz" / Int32ul,
    "flags" / Int32ul,
    "index" / Int32ul,
    "start" / Int32ul,
    "count" / Int32ul,
    "data" / GreedyBytes,  # DATA_BOOL: one byte per sub-index
)
IRQ_SET_FIXED = 20

RegionAccess = Struct(
    "offset" / Int64ul,
    "region" / Int32ul,
    "count" / Int32ul,
    "data" / GreedyBytes,
)
REGION_ACCESS_FIXED = 16

WriteMultiEntry = Struct(
    "offset" / Int64ul,
    "region" / Int32ul,
    "count" / Int32ul,
    "data" / Bytes(8),
)
WriteMulti = Struct(
    "wr_cnt" / Int64ul,
    "wrs" / Array(this.wr_cnt, WriteMultiEntry),
)
WRITE_MULTI_ENTRY_SIZE = WriteMultiEntry.sizeof()  # 24

DmaAccess = Struct(
    "address" / Int64ul,
    "count" / Int64ul,
    "data" / GreedyBytes,
)
DMA_ACCESS_FIXED = 16

# -- hot path -------------------------------------------------------------------------------
# Header alone, and header + REGION_READ/WRITE fixed part (offset, region, count) in one go.
HDR = struct.Struct("<HHIII")
RW = struct.Struct("<QII")
HDR_RW = struct.Struct("<HHIIIQII")
# Reply header + access fixed part + 1/2/4/8-byte little-endian value.
HDR_RW_VALUE = {
    1: struct.Struct("<HHIIIQIIB"),
    2: struct.Struct("<HHIIIQIIH"),
    4: struct.Struct("<HHIIIQIII"),
    8: struct.Struct("<HHIIIQIIQ"),
}
U64 = struct.Struct("<Q")
# One REGION_WRITE_MULTI entry (offset, region, count, 8 data bytes), for iter_unpack.
WRITE_MULTI_ENTRY = struct.Struct("<QII8s")

# Spec default of the max_data_xfer_size capability when a peer does not state it.
DEFAULT_MAX_DATA_XFER = 1 << 20

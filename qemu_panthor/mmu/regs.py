"""MMU register map, AS_COMMAND codes, TRANSCFG / FAULTSTATUS fields.

Exception codes live in :mod:`qemu_panthor.exceptions` (one code space for every unit).

Declared once, as data (reference §4.1-§4.4). Offsets are relative to the MMU block base
(GPU offset 0x2000): MMU_INT at +0x0, address space n at +0x400 + n*0x40.
"""

from __future__ import annotations

from enum import IntEnum

from ..register import Reg, RegAccess

# -- MMU_INT: an irqblock.IrqBlock at +0 ------------------------------------------------------

#: MMU_INT bits 0..15: page fault on AS n. Bits 16..31: kbase's per-AS bus-fault bits
#: (panthor calls them REQ_COMPLETE and never unmasks them). See docs/mmu.md.
MMU_INT_PAGE_FAULT_SHIFT = 0
MMU_INT_BUS_FAULT_SHIFT = 16

# -- address-space slots ----------------------------------------------------------------------
AS_BASE = 0x400
AS_STRIDE = 0x40
#: The MMU_INT layout has 16 page-fault bits, so hardware has at most 16 AS slots.
MAX_AS = 16
AS_END = AS_BASE + MAX_AS * AS_STRIDE

# Per-AS register offsets (relative to the AS base). 64-bit registers: LO at off, HI at off+4.
AS_TRANSTAB = 0x00
AS_MEMATTR = 0x08
AS_LOCKADDR = 0x10
AS_COMMAND = 0x18
AS_FAULTSTATUS = 0x1C
AS_FAULTADDRESS = 0x20
AS_STATUS = 0x28
AS_TRANSCFG = 0x30
AS_FAULTEXTRA = 0x38

#: The per-AS register set, for decode and traces.
AS_REGS: tuple[Reg, ...] = (
    Reg("AS_TRANSTAB", AS_TRANSTAB, 64, RegAccess.RW),
    Reg("AS_MEMATTR", AS_MEMATTR, 64, RegAccess.RW),
    Reg("AS_LOCKADDR", AS_LOCKADDR, 64, RegAccess.RW),
    Reg("AS_COMMAND", AS_COMMAND, access=RegAccess.WO),
    Reg("AS_FAULTSTATUS", AS_FAULTSTATUS),
    Reg("AS_FAULTADDRESS", AS_FAULTADDRESS, 64),
    Reg("AS_STATUS", AS_STATUS),
    Reg("AS_TRANSCFG", AS_TRANSCFG, 64, RegAccess.RW),
    Reg("AS_FAULTEXTRA", AS_FAULTEXTRA, 64),
)

AS_STATUS_AS_ACTIVE = 1 << 0


def as_reg(as_nr: int, reg: int) -> int:
    """Offset (relative to the MMU block) of register ``reg`` of address space ``as_nr``."""
    return AS_BASE + as_nr * AS_STRIDE + reg


class AsCommand(IntEnum):
    """AS_COMMAND codes (§4.1)."""

    NOP = 0
    UPDATE = 1
    LOCK = 2
    UNLOCK = 3
    FLUSH_PT = 4
    FLUSH_MEM = 5


# -- AS_TRANSCFG (§4.2) -----------------------------------------------------------------------
TRANSCFG_ADRMODE_MASK = 0xF


class AdrMode(IntEnum):
    """TRANSCFG[3:0] ADRMODE."""

    UNMAPPED = 1
    IDENTITY = 2
    AARCH64_4K = 6
    AARCH64_64K = 8


#: TRANSCFG ADRMODE 0 on a JM part (Midgard/Bifrost): the legacy Mali LPAE format, its mode
#: in AS_TRANSTAB[1:0] (LpaeMode). Reserved on the CSF parts (not an AdrMode member, so their
#: introspection still names it RESERVED_0).
ADRMODE_LEGACY = 0


class LpaeMode(IntEnum):
    """AS_TRANSTAB[1:0] under ADRMODE LEGACY (the Mali LPAE format; 1 is reserved)."""

    UNMAPPED = 0
    IDENTITY = 2
    TABLE = 3


#: AS_TRANSTAB bits of the legacy mode beside the table address (panfrost sets READ_INNER)
TRANSTAB_LPAE_MODE_MASK = 0x3
TRANSTAB_LPAE_READ_INNER = 1 << 2
TRANSTAB_LPAE_SHARE_OUTER = 1 << 4

TRANSCFG_INA_BITS_SHIFT = 6
TRANSCFG_INA_BITS_MASK = 0x1F  # [10:6]: va_bits = 55 - field
TRANSCFG_OUTA_BITS_SHIFT = 14
TRANSCFG_PTW_MEMATTR_SHIFT = 24  # [25:24] 1 NC, 2 WB
TRANSCFG_PTW_SH_SHIFT = 28  # [29:28] 0 NS, 2 OS, 3 IS
TRANSCFG_PTW_RA = 1 << 30
TRANSCFG_DISABLE_HIER_AP = 1 << 33
TRANSCFG_DISABLE_AF_FAULT = 1 << 34
TRANSCFG_WXN = 1 << 35
TRANSCFG_XREADABLE = 1 << 36


def transcfg_va_bits(transcfg: int) -> int:
    """Input address size encoded in TRANSCFG.INA_BITS (va_bits = 55 - field)."""
    return 55 - ((transcfg >> TRANSCFG_INA_BITS_SHIFT) & TRANSCFG_INA_BITS_MASK)


def transcfg_for(va_bits: int, *, coherent: bool = False) -> int:
    """The TRANSCFG value panthor writes for an enabled AS (§4.2)."""
    value = (
        AdrMode.AARCH64_4K
        | (55 - va_bits) << TRANSCFG_INA_BITS_SHIFT
        | 2 << TRANSCFG_PTW_MEMATTR_SHIFT
        | TRANSCFG_PTW_RA
    )
    if coherent:
        value |= 2 << TRANSCFG_PTW_SH_SHIFT
    return value


# -- AS_FAULTSTATUS (§4.4) --------------------------------------------------------------------
FAULTSTATUS_EXCEPTION_TYPE_MASK = 0xFF
FAULTSTATUS_ACCESS_TYPE_SHIFT = 8
FAULTSTATUS_ACCESS_TYPE_MASK = 0x3
FAULTSTATUS_DECODER_FAULT = 1 << 10  # set: "DECODER FAULT" (AXI DECERR), clear: "SLAVE FAULT"
FAULTSTATUS_SOURCE_ID_SHIFT = 16


# -- lock region (§4.3) ----------------------------------------------------------------------
LOCKADDR_WIDTH_MASK = 0x3F
#: AS_LOCK_REGION_MIN_SIZE = 32 KiB, i.e. width field 14. Smaller encodings are rounded up.
LOCK_REGION_MIN_WIDTH = 14


def decode_lock_region(lockaddr: int) -> tuple[int, int]:
    """AS_LOCKADDR -> (base, size): size = 2^(LOCKADDR[5:0]+1), base = LOCKADDR & ~(size-1).

    Widths below the 32 KiB hardware minimum are rounded up to it (the region only grows, so
    the TLB invalidation it drives can only over-invalidate, which hardware may always do).
    """
    width = max(lockaddr & LOCKADDR_WIDTH_MASK, LOCK_REGION_MIN_WIDTH)
    size = 1 << (width + 1)
    base = lockaddr & ~(size - 1) & 0xFFFFFFFFFFFFFFFF
    return base, size

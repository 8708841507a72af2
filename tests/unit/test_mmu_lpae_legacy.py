"""The legacy Mali LPAE format (ADRMODE LEGACY) a JM GPU is driven with by panfrost.

Tables are written by the tests' independent writer in its ARM_MALI_LPAE mode (io-pgtable's
encoding: HAP permissions, no AF, block-type leaves at every level, a full 4-level table,
TRANSTAB = pgd | READ_INNER | ADRMODE_TABLE) and programmed the way panfrost_mmu_enable does:
TRANSTAB, MEMATTR 0x888D88, TRANSCFG 0, UPDATE. docs/reference/mali-g52-jm.md, section 4.
"""

from __future__ import annotations

import struct

import pytest
from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.mmu import Access, Mmu, MmuFault, Translation, introspect

# Fault codes, written out from the reference (docs/reference/mali-g52-jm.md section 3.4,
# docs/reference/exceptions.md): per-level families are base + level.
TRANSLATION_FAULT_0, TRANSLATION_FAULT_3 = 0xC0, 0xC3
PERM_FAULT_3 = 0xCB  # PERM_FAULT 0xC8 + level 3
ADDR_SIZE_FAULT_IN = 0xE0
AS = 3
ASB = 0x400 + AS * 0x40
RW = ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE
RO = ptw.IOMMU_READ | ptw.IOMMU_CACHE
WO = ptw.IOMMU_WRITE | ptw.IOMMU_CACHE
MEMATTR = 0x0088_8D88  # panfrost: idx0 IMP_DEF, idx1 WRITE_ALLOC, idx2 IMP_DEF
BASE = 0x8000_0000


def w64(mmu: Mmu, off: int, v: int) -> None:
    mmu.write32(off, v & 0xFFFFFFFF)
    mmu.write32(off + 4, v >> 32)


def setup(*, legacy: bool = True, va_bits: int = 35, strict: bool = False,
          transtab: int | None = None):
    """A G52-like MMU (35-bit VA, 40-bit PA, 8 AS) with AS3 enabled as panfrost does."""
    ram = ptw.TableRam(base=BASE, size=8 << 20, tables=2 << 20)
    w = ptw.LpaeWriter(ram, ias=va_bits, oas=40, mali=True)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0xFF, va_bits=va_bits, pa_bits=40,
              legacy_lpae=legacy, strict=strict)
    w64(mmu, ASB + 0x00, w.transtab if transtab is None else transtab)
    w64(mmu, ASB + 0x08, MEMATTR)
    w64(mmu, ASB + 0x30, 0)  # TRANSCFG: ADRMODE LEGACY
    mmu.write32(ASB + 0x18, 1)  # UPDATE
    return ram, w, mmu


def code(r: object) -> int:
    assert isinstance(r, MmuFault), r
    return r.exception_type


def test_writer_encoding_is_io_pgtable_mali() -> None:
    """The writer's leaves are what arm_lpae_prot_to_pte gives for ARM_MALI_LPAE."""
    ram, w, _ = setup()
    w.map(0x200_0000, BASE + 0x1000, 0x1000, RW | ptw.IOMMU_NOEXEC)
    assert w.transtab & 0xFFF == 0x7 and w.start_level == 0
    pte = ram.mem.read_u64(w._leaf_at(0x200_0000)[0])  # type: ignore[index]
    assert pte == BASE + 0x1000 | 1 << 6 | 2 << 6 | 1 << 2 | 2 << 8 | 3 << 53 | 1


@pytest.mark.parametrize("size,level", [(0x1000, 3), (ptw.SZ_2M, 2)])
def test_pages_and_blocks_translate_and_carry_data(size: int, level: int) -> None:
    ram, w, mmu = setup()
    va = 0x400_0000
    pa = BASE + 0x20_0000
    w.map(va, pa, size, RW)
    t = mmu.translate(AS, va + 0x18, Access.READ)
    assert isinstance(t, Translation)
    assert (t.pa, t.level, t.readable, t.writable, t.executable, t.attr_index) == (
        pa + 0x18, level, True, True, True, 1)
    ram.buf[0x20_0018:0x20_0020] = b"legacy!!"
    assert mmu.read(AS, va + 0x18, 8) == b"legacy!!"
    assert mmu.write(AS, va + 0x20, b"ok") is None
    assert ram.buf[0x20_0020:0x20_0022] == b"ok"


def test_hap_permissions_and_xn() -> None:
    """No HAP write: writes fault; no HAP read: reads fault (also after a write filled the
    TLB); XN: execution faults. The permission fault is at the leaf's level."""
    _, w, mmu = setup()
    w.map(0x100_0000, BASE + 0x1000, 0x1000, RO)
    w.map(0x100_1000, BASE + 0x2000, 0x1000, WO)
    w.map(0x100_2000, BASE + 0x3000, 0x1000, RW | ptw.IOMMU_NOEXEC)
    assert mmu.read(AS, 0x100_0000, 4) == bytes(4)
    assert code(mmu.write(AS, 0x100_0000, b"x")) == PERM_FAULT_3
    mmu.write32(0x4, 0xFFFF)  # MMU_INT_CLEAR
    assert mmu.write(AS, 0x100_1000, b"x") is None  # write-only: the write lands
    assert code(mmu.read(AS, 0x100_1000, 1)) == PERM_FAULT_3
    mmu.write32(0x4, 0xFFFF)
    assert code(mmu.read_u32(AS, 0x100_1000)) == PERM_FAULT_3
    mmu.write32(0x4, 0xFFFF)
    assert code(mmu.translate(AS, 0x100_2000, Access.EXECUTE)) == PERM_FAULT_3
    assert isinstance(mmu.translate(AS, 0x100_2000, Access.WRITE), Translation)
    wo = mmu.translate(AS, 0x100_1000, Access.WRITE)
    assert isinstance(wo, Translation) and not wo.readable


def test_no_access_flag_and_aarch64_page_encoding_faults() -> None:
    """The format has no access flag (a leaf without bit 10 translates); an AArch64-style
    level-3 page (type 3) is no leaf here: a translation fault at level 3 (inferred)."""
    ram, w, mmu = setup()
    w.map(0x300_0000, BASE + 0x4000, 0x2000, RW)
    ptep, pte, lvl = w._leaf_at(0x300_1000)  # type: ignore[misc]
    assert lvl == 3 and not pte & (1 << 10)
    assert isinstance(mmu.translate(AS, 0x300_1000, Access.READ), Translation)
    ram.mem.write_u64(ptep, pte | 3)
    mmu.write32(ASB + 0x18, 1)  # UPDATE: drop the TLB
    assert code(mmu.translate(AS, 0x300_1000, Access.READ)) == TRANSLATION_FAULT_3


def test_block_at_level_0_and_invalid_types_fault() -> None:
    ram, w, mmu = setup(va_bits=48)
    l0 = w.pgd
    va = 5 << 39
    ram.mem.write_u64(l0 + 5 * 8, BASE | 1 << 6 | 1)  # a "block" at L0
    assert code(mmu.translate(AS, va, Access.READ)) == TRANSLATION_FAULT_0
    ram.mem.write_u64(l0 + 5 * 8, BASE | 2)  # type 2: invalid
    mmu.write32(ASB + 0x18, 1)
    assert code(mmu.translate(AS, va, Access.READ)) == TRANSLATION_FAULT_0


def test_four_levels_whatever_the_va_size() -> None:
    """35-bit VA (G52's MMU_FEATURES): still walked from L0 (io-pgtable's 'Mali seems to need
    a full 4-level table'), so a 48-bit VA outside every mapping (IGT's 0xdeadbeef0000) is a
    translation fault at L0 (inferred), and only VAs from 2^48 an input address size fault."""
    _, w, mmu = setup(va_bits=35)
    w.map(0x7_FFFF_F000, BASE, 0x1000, RW)
    assert introspect.as_state(mmu, AS)["active"]["start_level"] == 0
    t = mmu.translate(AS, 0x7_FFFF_F008, Access.READ)
    assert isinstance(t, Translation) and t.pa == BASE + 8
    assert code(mmu.translate(AS, 0xDEAD_BEEF_0000, Access.WRITE)) == TRANSLATION_FAULT_0
    assert code(mmu.translate(AS, 1 << 48, Access.READ)) == ADDR_SIZE_FAULT_IN


@pytest.mark.parametrize("mode,expect", [(0, "fault"), (1, "fault"), (2, "identity")])
def test_transtab_modes(mode: int, expect: str) -> None:
    """TRANSTAB[1:0]: 0 unmapped, 2 identity, 1 reserved (unmapped, inferred), 3 table."""
    _, _, mmu = setup(transtab=BASE | mode)
    r = mmu.translate(AS, 0x1234_5678, Access.READ)
    if expect == "identity":
        assert isinstance(r, Translation) and r.pa == 0x1234_5678
        assert introspect.mappings(mmu, AS)[0].size == 1 << 40
    else:  # unmapped: TRANSLATION_FAULT_0 (reference/mmu.md "Walk" step 1, docs/mmu.md)
        assert code(r) == TRANSLATION_FAULT_0


def test_a_csf_gpu_has_no_legacy_mode() -> None:
    """ADRMODE 0 on an MMU without the legacy format (the CSF parts) is reserved: nothing
    translates, and introspection names it RESERVED_0, as before the legacy format existed."""
    _, w, mmu = setup(legacy=False)
    w.map(0x200_0000, BASE, 0x1000, RW)
    # a reserved ADRMODE gives TRANSLATION_FAULT_0 (docs/mmu.md "Walk")
    assert code(mmu.translate(AS, 0x200_0000, Access.READ)) == TRANSLATION_FAULT_0
    assert introspect.as_state(mmu, AS)["active"]["adrmode"] == "RESERVED_0"


@pytest.mark.parametrize("mode,name,enabled", [
    (3, "LEGACY_TABLE", True), (2, "LEGACY_IDENTITY", True), (0, "LEGACY_UNMAPPED", False),
    (1, "LEGACY_RESERVED_1", False)])
def test_introspection_names_the_legacy_mode(mode: int, name: str, enabled: bool) -> None:
    _, _, mmu = setup(transtab=BASE | mode)
    assert introspect.as_state(mmu, AS)["active"]["adrmode"] == name
    assert mmu.binding(AS).enabled is enabled
    assert mmu.binding(0).enabled is False  # AS0 at reset: TRANSTAB 0, legacy unmapped


def test_partial_unmap_of_a_block_keeps_the_format() -> None:
    """The writer's block split and widened unmap keep Mali encodings (type 1 at L3, HAP
    bits), so the rest of a split block still translates with its permissions."""
    _, w, mmu = setup()
    w.map(0x400_0000, BASE + 0x20_0000, ptw.SZ_2M, RO)
    w.unmap(0x400_0000, 0x1000)  # splits the block (pre-6.14 io-pgtable behaviour)
    mmu.write32(ASB + 0x18, 1)
    assert code(mmu.translate(AS, 0x400_0000, Access.READ)) == TRANSLATION_FAULT_3
    t = mmu.translate(AS, 0x400_1000, Access.READ)
    assert isinstance(t, Translation) and t.level == 3 and not t.writable and t.readable
    w.map(0x600_0000, BASE + 0x40_0000, ptw.SZ_2M, WO)
    w.unmap_widened(0x600_0000, 0x1000)
    mmu.write32(ASB + 0x18, 1)
    t = mmu.translate(AS, 0x600_1000, Access.WRITE)
    assert isinstance(t, Translation) and t.writable and not t.readable


def test_mappings_list_the_legacy_tables() -> None:
    _, w, mmu = setup()
    w.map(0x200_0000, BASE + 0x1000, 0x2000, RW)
    w.map(0x400_0000, BASE + 0x20_0000, ptw.SZ_2M, RO | ptw.IOMMU_NOEXEC)
    w.map(0x600_0000, BASE + 0x5000, 0x1000, WO)
    got = [(m.va, m.pa, m.size, m.attrs.readable, m.attrs.writable, m.attrs.executable)
           for m in introspect.mappings(mmu, AS)]
    assert got == [(0x200_0000, BASE + 0x1000, 0x2000, True, True, True),
                   (0x400_0000, BASE + 0x20_0000, ptw.SZ_2M, True, False, False),
                   (0x600_0000, BASE + 0x5000, 0x1000, False, True, True)]


def test_fast_and_strict_paths_agree_on_legacy_tables() -> None:
    """The non-strict MMU's fast paths (walk_fast declines this format) and a strict MMU give
    the same results and counters for the same accesses."""
    runs = []
    for strict in (False, True):
        ram, w, mmu = setup(strict=strict)
        w.map(0x200_0000, BASE + 0x1000, 0x1000, RW)
        w.map(0x200_1000, BASE + 0x2000, 0x1000, WO)
        out = []
        for va, op in ((0x200_0000, "r"), (0x200_0000, "r"), (0x200_1000, "w"),
                       (0x200_1000, "r"), (0x200_0008, "w"), (0x200_0008, "r")):
            r = (mmu.write(AS, va, struct.pack("<Q", va)) if op == "w"
                 else mmu.read(AS, va, 8))
            out.append(r.exception_type if isinstance(r, MmuFault) else r)
            mmu.write32(0x4, 0xFFFF)
        tlb = mmu.slot(AS).tlb  # type: ignore[union-attr]
        runs.append((out, tlb.hits, tlb.misses, bytes(ram.buf[0x1000:0x3000])))
    assert runs[0] == runs[1]
    assert runs[0][0][3] == PERM_FAULT_3

"""Walker matrix in the spirit of io-pgtable's arm_lpae_run_tests: tables written by the
independent tests/support/pgtable_writer.py, translations checked against what the writer chose and
fault codes against the reference (§4.4, §5.3)."""

from __future__ import annotations

import pytest
from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.mmu import Access, Mmu, MmuFault, Translation, introspect

RW = ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE
RO = ptw.IOMMU_READ | ptw.IOMMU_CACHE
RW_NX = RW | ptw.IOMMU_NOEXEC
AS = 1
ASB = 0x400 + AS * 0x40  # AS1 registers relative to MMU base 0x2000 (§4.1)


def transcfg(va_bits: int) -> int:
    """§4.2: AARCH64_4K | INA_BITS(55-va) | PTW_MEMATTR WB | PTW_RA."""
    return 6 | (55 - va_bits) << 6 | 2 << 24 | 1 << 30


def w64(mmu: Mmu, off: int, v: int) -> None:
    mmu.write32(off, v & 0xFFFFFFFF)
    mmu.write32(off + 4, v >> 32)


def setup(va_bits: int = 48, pa_bits: int = 40, pgsizes=(ptw.SZ_4K, ptw.SZ_2M), **kw):
    ram = ptw.TableRam(base=0x8000_0000, size=8 << 20, tables=2 << 20)
    writer = ptw.LpaeWriter(ram, ias=va_bits, oas=pa_bits, pgsizes=pgsizes)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0xFF, va_bits=48, pa_bits=pa_bits, **kw)
    w64(mmu, ASB + 0x00, writer.transtab)
    w64(mmu, ASB + 0x30, transcfg(va_bits))
    mmu.write32(ASB + 0x18, 1)  # UPDATE
    return ram, writer, mmu


def code(r: Translation | MmuFault) -> int:
    assert isinstance(r, MmuFault), r
    return r.exception_type


def test_transcfg_values_match_reference():
    assert transcfg(48) == 0x420001C6
    assert transcfg(39) == 0x42000406
    assert transcfg(32) == 0x420005C6


def test_pte_bits_match_reference_table():
    """§5.2: RW cached page 0xF47 | PA; RO NOEXEC uncached 2M block 0xEC1 | 3<<53 | PA."""
    ram, w, _ = setup()
    w.map(0x1000_0000, 0x8000_0000, 0x1000, RW)
    w.map(0x4000_0000, 0x8020_0000, 0x20_0000, ptw.IOMMU_READ | ptw.IOMMU_NOEXEC)
    assert ram.mem.read_u64(w.pte_addr(0x1000_0000)) == 0x8000_0F47
    assert ram.mem.read_u64(w.pte_addr(0x4000_0000)) == 0x0060_0000_8020_0EC1


VA_BITS = [32, 33, 36, 39, 40, 42, 44, 47, 48]
PA_BITS = [32, 36, 40, 42, 44, 48]


@pytest.mark.parametrize("va_bits", VA_BITS)
@pytest.mark.parametrize("pa_bits", PA_BITS)
def test_matrix_map_translate_unmap(va_bits: int, pa_bits: int):
    ram, w, mmu = setup(va_bits, pa_bits, pgsizes=(ptw.SZ_4K, ptw.SZ_2M, ptw.SZ_1G))
    top = 1 << va_bits
    cases = [
        (0x1000, 0x8000_1000, 0x1000, RW),  # first page after 0
        (top - 0x1000, 0x8000_3000, 0x1000, RO),  # last page of the VA space
        (0x4000_0000 - 0x20_0000 if va_bits > 31 else 0, 0x8020_0000, 0x20_0000, RW_NX),  # 2M
    ]
    if va_bits >= 32:
        cases.append((top - 2 * ptw.SZ_1G, 0x4000_0000, ptw.SZ_1G, RW))  # 1G block, L1
    for va, pa, size, prot in cases:
        w.map(va, pa, size, prot)
    for va, pa, size, prot in cases:
        for off in (0, 0x123, size - 8):
            t = mmu.translate(AS, va + off, Access.READ)
            assert isinstance(t, Translation), (hex(va), t)
            assert t.pa == pa + off
            assert t.writable == bool(prot & ptw.IOMMU_WRITE)
            assert t.executable == (not prot & ptw.IOMMU_NOEXEC)
            assert t.attr_index == 1
            assert t.level == {0x1000: 3, ptw.SZ_2M: 2, ptw.SZ_1G: 1}[size]
    # data through the translation, last byte of the VA space included
    assert mmu.write(AS, 0x1FFC, b"\x11\x22\x33\x44") is None
    assert ram.mem.read(0x8000_1FFC, 4) == b"\x11\x22\x33\x44"
    ram.mem.write(0x8000_3FFF, b"\x5a")
    assert mmu.read(AS, top - 1, 1) == b"\x5a"
    # beyond the VA space: input address size fault
    assert code(mmu.translate(AS, top, Access.READ)) == 0xE0
    # an unmapped hole: translation fault at the level the writer left empty
    hole = 0x10_0000
    assert code(mmu.translate(AS, hole, Access.READ)) == 0xC0 + w.missing_level(hole)
    # unmap everything, UPDATE (drops the TLB), all fault at the right level
    for va, _pa, size, _prot in cases:
        assert w.unmap(va, size) == size
    mmu.write32(ASB + 0x18, 1)
    for va, _pa, _size, _prot in cases:
        lvl = w.missing_level(va)
        assert lvl is not None
        assert code(mmu.translate(AS, va, Access.READ)) == 0xC0 + lvl
    # remap at another PA
    w.map(0x1000, 0x8000_5000, 0x1000, RW)
    mmu.write32(ASB + 0x18, 1)
    assert mmu.translate(AS, 0x1008, Access.WRITE).pa == 0x8000_5008


def test_start_level_geometry():
    """ias 48 -> 4 levels; 39 -> 3 (L1 start); 32 -> 3 levels with a 4-entry L1 table; 30 -> 2."""
    for va_bits, start in ((48, 0), (40, 0), (39, 1), (32, 1), (30, 2)):
        _ram, w, mmu = setup(va_bits)
        assert w.start_level == start
        w.map(0x1000, 0x8000_1000, 0x1000, RW)
        assert introspect.as_state(mmu, AS)["active"]["start_level"] == start
        assert mmu.translate(AS, 0x1000, Access.READ).pa == 0x8000_1000
        # missing top-level entry faults at the start level
        far = (1 << va_bits) - 0x1000
        assert code(mmu.translate(AS, far, Access.READ)) == 0xC0 + start


@pytest.mark.parametrize("size,level", [(0x1000, 3), (ptw.SZ_2M, 2), (ptw.SZ_1G, 1)])
def test_access_flag_fault(size: int, level: int):
    ram, w, mmu = setup(pgsizes=(ptw.SZ_4K, ptw.SZ_2M, ptw.SZ_1G))
    va = 0x80_0000_0000
    w.map(va, 0x4000_0000 if size == ptw.SZ_1G else 0x8000_0000, size, RW)
    p = w.pte_addr(va)
    ram.mem.write_u64(p, ram.mem.read_u64(p) & ~(1 << 10))
    assert code(mmu.translate(AS, va + 0x10, Access.READ)) == 0xD8 + level
    # DISABLE_AF_FAULT (bit 34) turns it off
    w64(mmu, ASB + 0x30, transcfg(48) | 1 << 34)
    mmu.write32(ASB + 0x18, 1)
    assert isinstance(mmu.translate(AS, va + 0x10, Access.READ), Translation)


@pytest.mark.parametrize("size,level", [(0x1000, 3), (ptw.SZ_2M, 2), (ptw.SZ_1G, 1)])
def test_permission_faults(size: int, level: int):
    _, w, mmu = setup(pgsizes=(ptw.SZ_4K, ptw.SZ_2M, ptw.SZ_1G))
    pa = 0x4000_0000 if size == ptw.SZ_1G else 0x8000_0000
    ro, nx = 0x80_0000_0000, 0x100_0000_0000
    w.map(ro, pa, size, RO)
    w.map(nx, pa, size, RW_NX)
    assert isinstance(mmu.translate(AS, ro, Access.READ), Translation)
    assert isinstance(mmu.translate(AS, ro, Access.EXECUTE), Translation)
    assert code(mmu.translate(AS, ro, Access.WRITE)) == 0xC8 + level
    assert code(mmu.translate(AS, ro, Access.ATOMIC)) == 0xC8 + level
    assert code(mmu.translate(AS, nx, Access.EXECUTE)) == 0xC8 + level
    assert isinstance(mmu.translate(AS, nx, Access.WRITE), Translation)
    assert isinstance(mmu.translate(AS, nx, Access.ATOMIC), Translation)


def test_output_address_size_faults():
    ram, w, mmu = setup(48, 36)
    va = 0x1234_5000
    w.map(va, 0x8000_0000, 0x1000, RW)
    p = w.pte_addr(va)
    ram.mem.write_u64(p, (ram.mem.read_u64(p) & ~ptw.PTE_ADDR_MASK) | 1 << 36)  # OA bit 36
    assert code(mmu.translate(AS, va, Access.READ)) == 0xE4 + 3
    # a next-level table address beyond pa_bits: fault at the level holding the pointer
    p1 = w.table_entry_addr(va, 1)
    ram.mem.write_u64(p1, (1 << 40) | 3)
    assert code(mmu.translate(AS, va, Access.READ)) == 0xE4 + 1
    # TRANSTAB beyond pa_bits: level 0
    w64(mmu, ASB, 1 << 37)
    mmu.write32(ASB + 0x18, 1)
    assert code(mmu.translate(AS, va, Access.READ)) == 0xE4


def test_adrmodes():
    _ram, w, mmu = setup()
    w.map(0x1000, 0x8000_1000, 0x1000, RW)
    for mode in (1, 0, 8, 15):  # UNMAPPED, reset value, AARCH64_64K (not modelled), reserved
        w64(mmu, ASB + 0x30, mode)
        mmu.write32(ASB + 0x18, 1)
        assert code(mmu.translate(AS, 0x1000, Access.READ)) == 0xC0
    w64(mmu, ASB + 0x30, 2)  # IDENTITY
    mmu.write32(ASB + 0x18, 1)
    t = mmu.translate(AS, 0x8000_1234, Access.WRITE)
    assert t.pa == 0x8000_1234
    assert code(mmu.translate(AS, 1 << 40, Access.READ)) == 0xE4


def test_hostile_tables():
    ram, w, mmu = setup()
    va = 0x5000_0000
    # 1. L0 entry pointing at the L0 table itself: the walk ends within 4 reads
    l0 = w.table_entry_addr(va, 0)
    ram.mem.write_u64(l0, w.pgd | 3)
    r = mmu.translate(AS, va, Access.READ)
    assert isinstance(r, MmuFault | Translation)
    assert introspect.mappings(mmu, AS) is not None
    # 2. table outside RAM -> page-table-walk bus fault at the level reading it
    ram.mem.write_u64(l0, 0x1_0000_0000 | 3)  # L1 table at 4 GiB: no RAM there
    mmu.write32(ASB + 0x18, 1)
    f = mmu.read(AS, va, 4)
    assert isinstance(f, MmuFault) and f.bus and f.exception_type == 0xD1
    assert mmu.read32(ASB + 0x1C) == 0xD1 | 2 << 8 | 1 << 10  # decoder fault bit
    assert mmu.read32(0x0) == 1 << AS
    mmu.write32(0x4, 1 << AS)
    # 3. a block at L0 is a translation fault at L0
    ram.mem.write_u64(l0, 0x8000_0000 | 1 | 1 << 10)
    mmu.write32(ASB + 0x18, 1)
    assert code(mmu.translate(AS, va, Access.READ)) == 0xC0
    # 4. a type-0b01 descriptor at L3 is reserved: TRANSLATION_FAULT_3
    ram.mem.write_u64(l0, 0)
    w.map(va, 0x8000_0000, 0x1000, RW)
    p = w.pte_addr(va)
    ram.mem.write_u64(p, ram.mem.read_u64(p) & ~2)
    mmu.write32(ASB + 0x18, 1)
    assert code(mmu.translate(AS, va, Access.READ)) == 0xC3
    # 5. translated PA outside RAM: GPU bus fault on the data access
    ram.mem.write_u64(p, 0xF000_0000 | 0xF47)
    mmu.write32(ASB + 0x18, 1)
    f = mmu.read(AS, va, 8)
    assert isinstance(f, MmuFault) and f.bus and f.exception_type == 0x80


def test_self_referencing_dag_mappings_are_bounded():
    ram, w, mmu = setup()
    w.map(0, 0x8000_0000, 0x1000, RW)
    # every L1/L2 entry points at the same table, which maps itself: 512^3 aliases
    l1 = w.table_entry_addr(0, 1) & ~0xFFF
    l2 = w.table_entry_addr(0, 2) & ~0xFFF
    for i in range(512):
        ram.mem.write_u64(l1 + 8 * i, l2 | 3)
        ram.mem.write_u64(l2 + 8 * i, l2 | 3)
    mmu.write32(ASB + 0x18, 1)
    maps = introspect.mappings(mmu, AS, max_entries=1 << 14)
    assert maps.truncated
    assert isinstance(mmu.translate(AS, 0x1234_5678, Access.READ), MmuFault | Translation)

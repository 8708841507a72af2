"""Property tests: random mappings written by the independent writer translate to exactly the
PA the writer chose; unmapped VAs fault at the level the writer left empty; garbage memory,
garbage registers and garbage VAs never make the model raise."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.memory import RamRegion, SparseRam
from qemu_panthor.mmu import Access, Mmu, MmuFault, Translation, introspect

ASB = 0x400 + 1 * 0x40
FAULT_CODES = (
    set(range(0xC0, 0xC4)) | set(range(0xC8, 0xCC)) | set(range(0xD0, 0xD4))
    | set(range(0xD9, 0xDC)) | {0xE0} | set(range(0xE4, 0xE8)) | {0x80}
)


def program(mmu: Mmu, transtab: int, transcfg: int) -> None:
    for off, v in ((0x00, transtab), (0x30, transcfg)):
        mmu.write32(ASB + off, v & 0xFFFFFFFF)
        mmu.write32(ASB + off + 4, (v >> 32) & 0xFFFFFFFF)
    mmu.write32(ASB + 0x18, 1)


mapping = st.tuples(
    st.integers(0, (1 << 36) - 1),  # VA page index (48-bit space)
    st.integers(0, 0x7FF),  # PA page index inside the 8 MiB data area
    st.integers(1, 4),  # pages, or 2M blocks when big
    st.booleans(),  # big (2 MiB)
    st.sampled_from([0, ptw.IOMMU_WRITE, ptw.IOMMU_NOEXEC, ptw.IOMMU_WRITE | ptw.IOMMU_NOEXEC]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(maps=st.lists(mapping, min_size=1, max_size=12), probes=st.lists(
    st.integers(0, (1 << 48) - 1), max_size=20), va_bits=st.sampled_from([36, 39, 42, 48]))
def test_random_mappings_translate_exactly(maps, probes, va_bits):
    ram = ptw.TableRam(base=0x8000_0000, size=16 << 20, tables=4 << 20)
    w = ptw.LpaeWriter(ram, ias=va_bits, oas=40)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40)
    program(mmu, w.transtab, 6 | (55 - va_bits) << 6 | 2 << 24 | 1 << 30)
    done = []
    for vpi, ppi, n, big, extra in maps:
        unit = ptw.SZ_2M if big else ptw.SZ_4K
        va = (vpi << 12) % (1 << va_bits) & ~(unit - 1)
        pa = 0x8000_0000 + ((ppi << 12) & ~(unit - 1)) % (8 << 20)
        size = min(n * unit, (1 << va_bits) - va)
        prot = ptw.IOMMU_READ | ptw.IOMMU_CACHE | extra
        try:
            w.map(va, pa, size, prot)
        except ptw.WriterError:
            continue  # overlapping an earlier mapping: rejected, nothing written
        done.append((va, pa, size, prot))
    for va, pa, size, prot in done:
        for off in (0, size // 2 & ~7, size - 8):
            t = mmu.translate(1, va + off, Access.READ)
            assert isinstance(t, Translation)
            assert t.pa == pa + off
            assert t.writable == bool(prot & ptw.IOMMU_WRITE)
            assert t.executable == (not prot & ptw.IOMMU_NOEXEC)
    for v in probes:
        look = w.lookup(v) if v < 1 << va_bits else None
        r = mmu.translate(1, v, Access.READ)
        if v >> va_bits:
            assert isinstance(r, MmuFault) and r.exception_type == 0xE0
        elif look is None:
            assert isinstance(r, MmuFault) and r.exception_type == 0xC0 + w.missing_level(v)
        else:
            assert isinstance(r, Translation) and r.pa == look[0]
    # unmap half, UPDATE, check faults at the right level and survivors unchanged
    for va, _pa, size, _prot in done[::2]:
        assert w.unmap(va, size) == size
    mmu.write32(ASB + 0x18, 1)
    for i, (va, pa, _size, _prot) in enumerate(done):
        r = mmu.translate(1, va, Access.READ)
        if i % 2 == 0:
            assert isinstance(r, MmuFault) and r.exception_type == 0xC0 + w.missing_level(va)
        else:
            assert r.pa == pa
    ranges = {(m.va, m.size) for m in introspect.mappings(mmu, 1)}
    covered = sum(s for _, s in ranges)
    assert covered == sum(s for _, _, s, _ in done[1::2])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.large_base_example, HealthCheck.too_slow])
@given(
    garbage=st.binary(max_size=0x4000),
    # a table page, with the legacy format's TRANSTAB mode bits (ignored by the AArch64 modes)
    transtab=st.one_of(st.integers(0, 15).map(lambda i: 0x1000_0000 + (i >> 2) * 0x1000 | i & 3),
                       st.integers(0, (1 << 64) - 1)),
    transcfg=st.one_of(st.sampled_from([0x420001C6, 0x420005C6, 0x42000406, 0]),
                       st.integers(0, (1 << 64) - 1)),
    vas=st.lists(st.integers(-(1 << 64), 1 << 65), min_size=1, max_size=8),
    access=st.sampled_from(list(Access)),
    cmds=st.lists(st.tuples(st.integers(0, 0xFFF), st.integers(0, 0xFFFFFFFF)), max_size=8),
    legacy=st.booleans(),
    strict=st.booleans(),
)
def test_garbage_never_raises(garbage, transtab, transcfg, vas, access, cmds, legacy, strict):
    """Also for a JM part's legacy format (ADRMODE 0) and on the non-strict fast paths."""
    mem = SparseRam()
    mem.add(RamRegion(0x1000_0000, bytearray(garbage.ljust(0x4000, b"\xff"))))
    mmu = Mmu(mem, IrqBlock("mmu"), as_present=0xFF, va_bits=48, pa_bits=40, strict=strict,
              legacy_lpae=legacy)
    program(mmu, transtab, transcfg)
    for off, val in cmds:
        mmu.write32(off & ~3, val)
        mmu.read32(off & ~3)
    for va in vas:
        r = mmu.translate(1, va, access)
        if isinstance(r, MmuFault):
            assert r.exception_type in FAULT_CODES
        else:
            assert 0 <= r.pa < 1 << 40
        r2 = mmu.read(1, va, 16, access)
        assert isinstance(r2, bytes) or r2.exception_type in FAULT_CODES
        r3 = mmu.write(1, va, b"z" * 9)
        assert r3 is None or r3.exception_type in FAULT_CODES
    maps = introspect.mappings(mmu, 1, max_entries=4096)
    assert all(m.size > 0 for m in maps)
    introspect.as_state(mmu, 1)

"""The MMU's speed caches keep the documented TLB semantics (docs/mmu.md "TLB"):

* the walk cache (last-level table of a 2 MiB region) is not coherent with memory and is
  dropped exactly by UPDATE and by UNLOCK/FLUSH of a region overlapping that 2 MiB;
* strict mode reports stale walk-cache use like stale TLB hits;
* the hit fast path (page views) counts hits like the general path, honours permissions, and
  never serves memory a DMA unmap removed.
Codes and offsets are written from the reference (§4, §5.3), not imported from the model.
"""

from __future__ import annotations

import logging
import mmap

from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.memory import BusError, RamRegion, SparseRam
from qemu_panthor.mmu import Access, Mmu, MmuFault, introspect

ASB = 0x400 + 1 * 0x40  # AS1
TRANSTAB, LOCKADDR, COMMAND, TRANSCFG = 0x00, 0x10, 0x18, 0x30
UPDATE, LOCK, UNLOCK, FLUSH_PT = 1, 2, 3, 4
TRANSCFG_48 = 0x420001C6
RW = ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE
RO = ptw.IOMMU_READ | ptw.IOMMU_CACHE
VA = 0x7F12_3440_0000  # 2 MiB aligned


def w64(mmu: Mmu, off: int, v: int) -> None:
    mmu.write32(off, v & 0xFFFFFFFF)
    mmu.write32(off + 4, v >> 32)


def enable(mmu: Mmu, transtab: int) -> None:
    w64(mmu, ASB + TRANSTAB, transtab)
    w64(mmu, ASB + TRANSCFG, TRANSCFG_48)
    mmu.write32(ASB + COMMAND, UPDATE)


def lock_unlock(mmu: Mmu, va: int, width: int = 14, cmd: int = UNLOCK) -> None:
    """LOCK 2^(width+1) bytes at va (AS_LOCKADDR encoding, §4.3), then ``cmd``."""
    w64(mmu, ASB + LOCKADDR, va | width)
    mmu.write32(ASB + COMMAND, LOCK)
    mmu.write32(ASB + COMMAND, cmd)


class CountingMem:
    """A PhysMem (not a SparseRam, so no page views) that counts 64-bit reads."""

    def __init__(self, inner: SparseRam) -> None:
        self.inner = inner
        self.reads64 = 0

    def read(self, pa: int, size: int) -> bytes:
        return self.inner.read(pa, size)

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        self.inner.write(pa, data)

    def read_u32(self, pa: int) -> int:
        return self.inner.read_u32(pa)

    def read_u64(self, pa: int) -> int:
        self.reads64 += 1
        return self.inner.read_u64(pa)

    def write_u32(self, pa: int, value: int) -> None:
        self.inner.write_u32(pa, value)

    def write_u64(self, pa: int, value: int) -> None:
        self.inner.write_u64(pa, value)


def tlb(mmu: Mmu) -> dict:
    return introspect.as_state(mmu, 1)["tlb"]


def test_walk_cache_shortens_misses_in_a_cached_2m_region():
    ram = ptw.TableRam(base=0x8000_0000, size=8 << 20, tables=2 << 20)
    mem = CountingMem(ram.mem)
    mmu = Mmu(mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40)
    w = ptw.LpaeWriter(ram)
    w.map(VA, 0x8000_0000, 0x2000, RW)
    w.map(VA + ptw.SZ_2M, 0x8001_0000, 0x1000, RW)
    enable(mmu, w.transtab)
    assert mmu.read(1, VA, 4) == b"\0" * 4
    assert mem.reads64 == 4  # 48-bit VA: levels 0..3
    assert tlb(mmu)["walk_cache_entries"] == 1
    assert mmu.read(1, VA + 0x1000, 4) == b"\0" * 4  # TLB miss, same L3 table
    assert mem.reads64 == 5
    assert mmu.read(1, VA + ptw.SZ_2M, 4) == b"\0" * 4  # another 2 MiB region: full walk
    assert mem.reads64 == 9
    assert (tlb(mmu)["misses"], tlb(mmu)["hits"]) == (3, 0)
    # a faulting walk caches nothing
    f = mmu.read(1, VA + 2 * ptw.SZ_2M + 0x5000, 4, report=False)
    assert isinstance(f, MmuFault)
    assert tlb(mmu)["walk_cache_entries"] == 2


def _repoint_l3(ram: ptw.TableRam, w: ptw.LpaeWriter, new_pa: dict[int, int]) -> int:
    """Copy VA's L3 table, change the pages in ``new_pa`` (va -> pa), and switch the L2
    descriptor to the copy without any TLB maintenance (a driver bug). Returns the copy."""
    l2e = w.table_entry_addr(VA, 2)
    old = ram.mem.read_u64(l2e) & ptw.PTE_ADDR_MASK
    new = ram.alloc_table()
    ram.mem.write(new, ram.mem.read(old, 0x1000))
    for va, pa in new_pa.items():
        p = new + 8 * ((va >> 12) & 0x1FF)
        ram.mem.write_u64(p, (ram.mem.read_u64(p) & ~ptw.PTE_ADDR_MASK) | pa)
    ram.mem.write_u64(l2e, (ram.mem.read_u64(l2e) & ~ptw.PTE_ADDR_MASK) | new)
    return new


def _pages_env(strict: bool = False):
    ram = ptw.TableRam(base=0x8000_0000, size=8 << 20, tables=2 << 20)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40, strict=strict)
    w = ptw.LpaeWriter(ram)
    old = {VA + i * 0x1000: 0x8000_0000 + i * 0x1000 for i in range(4)}
    new = {VA + i * 0x1000: 0x8010_0000 + i * 0x1000 for i in range(1, 4)}
    for va, pa in old.items():
        w.map(va, pa, 0x1000, RW)
        ram.mem.write(pa, b"old%d" % (va >> 12 & 0xF))
    for va, pa in new.items():
        ram.mem.write(pa, b"new%d" % (va >> 12 & 0xF))
    enable(mmu, w.transtab)
    return ram, mmu, w, new


def test_walk_cache_is_stale_until_invalidation_covers_the_2m_region():
    ram, mmu, w, new = _pages_env()
    a, b, c, d = (VA + i * 0x1000 for i in range(4))
    assert mmu.read(1, a, 4) == b"old0"  # walk fills the TLB and the walk cache
    _repoint_l3(ram, w, new)
    # TLB miss on b: the cached L3 table is used, as a hardware walk cache may
    assert mmu.read(1, b, 4) == b"old1"
    assert introspect.walk(mmu, 1, b).pa == new[b]  # the tables say otherwise
    # invalidating a region outside this 2 MiB changes nothing
    lock_unlock(mmu, VA + 2 * ptw.SZ_2M)
    assert mmu.read(1, c, 4) == b"old2"
    # a region inside the 2 MiB (32 KiB at +1 MiB) covers the changed L2 descriptor's range:
    # the walk cache entry goes, the TLB entries of pages outside the region stay
    lock_unlock(mmu, VA + 0x10_0000, cmd=FLUSH_PT)
    assert tlb(mmu)["walk_cache_entries"] == 0
    assert mmu.read(1, d, 4) == b"new3"
    assert mmu.read(1, b, 4) == b"old1"  # stale TLB entry (page outside the lock region)
    assert tlb(mmu)["walk_cache_entries"] == 1
    # UPDATE drops everything
    mmu.write32(ASB + COMMAND, UPDATE)
    assert tlb(mmu)["walk_cache_entries"] == 0
    assert mmu.read(1, b, 4) == b"new1"
    assert mmu.read(1, c, 4) == b"new2"


def test_strict_mode_reports_stale_walk_cache_use(caplog):
    ram, mmu, w, new = _pages_env(strict=True)
    b = VA + 0x1000
    assert mmu.read(1, VA, 4) == b"old0"
    assert mmu.read(1, VA, 4) == b"old0"
    assert mmu.stats["stale_hits"] == 0
    _repoint_l3(ram, w, new)
    with caplog.at_level(logging.WARNING, logger="qemu_panthor.mmu"):
        assert mmu.read(1, b, 4) == b"old1"  # still served from the stale walk cache
    assert tlb(mmu)["stale_hits"] == 1 and mmu.stats["stale_hits"] == 1
    assert "stale walk-cache entry" in caplog.text


def test_fast_path_counts_hits_and_keeps_permissions():
    ram = ptw.TableRam(base=0x8000_0000, size=8 << 20, tables=2 << 20)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40)
    w = ptw.LpaeWriter(ram)
    w.map(VA, 0x8000_0000, 0x1000, RO | ptw.IOMMU_NOEXEC)
    w.map(VA + 0x1000, 0x8000_1000, 0x1000, RW)
    enable(mmu, w.transtab)
    ram.mem.write(0x8000_0000, bytes(range(16)))
    for _ in range(5):
        assert mmu.read(1, VA, 8) == bytes(range(8))
    assert mmu.read_u32(1, VA + 4) == 0x07060504
    assert mmu.read_u64(1, VA + 8) == 0x0F0E0D0C0B0A0908
    assert (tlb(mmu)["misses"], tlb(mmu)["hits"]) == (1, 6)
    # a read-only page: writes and atomics fault with PERM_FAULT level 3 (0xCB), nothing stored
    f = mmu.write(1, VA, b"zz")
    assert isinstance(f, MmuFault) and f.exception_type == 0xCB and f.access == Access.WRITE
    mmu.write32(0x4, 1 << 1)  # MMU_INT_CLEAR AS1
    f = mmu.read(1, VA, 4, Access.ATOMIC)
    assert isinstance(f, MmuFault) and f.exception_type == 0xCB
    mmu.write32(0x4, 1 << 1)
    f = mmu.read(1, VA, 4, Access.EXECUTE)  # XN
    assert isinstance(f, MmuFault) and f.exception_type == 0xCB
    assert ram.mem.read(0x8000_0000, 2) == b"\0\1"
    # a writable page: the fast path writes where the general path would
    assert mmu.write(1, VA + 0x1000, b"abcd") is None
    assert mmu.write(1, VA + 0x1002, b"XY") is None
    assert mmu.write_u32(1, VA + 0x1004, 0x11223344) is None
    assert ram.mem.read(0x8000_1000, 8) == b"abXY\x44\x33\x22\x11"
    # a page-crossing access still splits and translates both pages
    ram.mem.write(0x8000_0FFC, b"tail")
    assert mmu.read(1, VA + 0xFFC, 8) == b"tailabXY"


def test_unlock_drops_fast_path_entries():
    ram = ptw.TableRam(base=0x8000_0000, size=8 << 20, tables=2 << 20)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40)
    w = ptw.LpaeWriter(ram)
    w.map(VA, 0x8000_0000, 0x1000, RW)
    enable(mmu, w.transtab)
    ram.mem.write(0x8000_0000, b"AAAA")
    ram.mem.write(0x8000_7000, b"BBBB")
    assert mmu.read(1, VA, 4) == b"AAAA"
    assert mmu.read(1, VA, 4) == b"AAAA"  # fast path primed
    p = w.pte_addr(VA)
    ram.mem.write_u64(p, (ram.mem.read_u64(p) & ~ptw.PTE_ADDR_MASK) | 0x8000_7000)
    assert mmu.read(1, VA, 4) == b"AAAA"  # stale until invalidated, as documented
    lock_unlock(mmu, VA)
    assert mmu.read(1, VA, 4) == b"BBBB"
    assert mmu.write(1, VA, b"CC") is None
    assert ram.mem.read(0x8000_7000, 4) == b"CCBB"
    # made read-only without invalidation: the cached writable entry still serves writes...
    ram.mem.write_u64(p, ram.mem.read_u64(p) | ptw.PTE_AP_RDONLY)
    assert mmu.write(1, VA, b"D") is None
    # ...until UPDATE, after which the write faults (PERM_FAULT level 3)
    mmu.write32(ASB + COMMAND, UPDATE)
    f = mmu.write(1, VA, b"E")
    assert isinstance(f, MmuFault) and f.exception_type == 0xCB
    assert ram.mem.read(0x8000_7000, 1) == b"D"


def test_dma_unmap_drops_page_views_and_releases_the_mapping():
    """A removed RAM window is never read through a cached view: the access becomes the bus
    fault (GPU_BUS_FAULT 0x80), and the window's mmap can be closed at once."""
    mem = SparseRam()
    tables = ptw.TableRam(base=0x8000_0000, size=4 << 20, tables=2 << 20)
    mem.add(RamRegion(0x8000_0000, tables.buf))
    tables.mem = mem
    w = ptw.LpaeWriter(tables)
    data_pa = 0x1_0000_0000
    w.map(VA, data_pa, 0x2000, RW)
    mmu = Mmu(mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40)
    enable(mmu, w.transtab)
    mm = mmap.mmap(-1, 0x2000)
    mm[0:4] = b"win1"
    window = memoryview(mm)
    mem.add(RamRegion(data_pa, window))
    assert mmu.read(1, VA, 4) == b"win1"
    assert mmu.read(1, VA, 4) == b"win1"
    assert mmu.write(1, VA + 0x1000, b"w") is None
    mm[0:4] = b"WIN1"  # the other side writes guest RAM: views alias it
    assert mmu.read_u32(1, VA) == int.from_bytes(b"WIN1", "little")
    (gone,) = mem.remove(data_pa, 0x2000)
    gone.view.release()  # what DmaWindow.release does
    window.release()
    mm.close()  # no view of the window is left anywhere (BufferError otherwise)
    f = mmu.read(1, VA, 4)
    assert isinstance(f, MmuFault) and f.exception_type == 0x80 and f.bus
    mmu.write32(0x4, 1 << 1)
    f = mmu.write(1, VA + 0x1000, b"x")
    assert isinstance(f, MmuFault) and f.exception_type == 0x80
    mmu.write32(0x4, 1 << 1)
    # a new window at the same address is seen at once
    buf = bytearray(b"win2".ljust(0x2000, b"\0"))
    mem.add(RamRegion(data_pa, buf))
    assert mmu.read(1, VA, 4) == b"win2"
    assert mmu.write(1, VA, b"W") is None and buf[:4] == b"Win2"


def test_sparse_ram_listener_is_weak_for_bound_methods():
    mem = SparseRam()
    calls: list[str] = []

    class Owner:
        def changed(self) -> None:
            calls.append("owner")

    owner = Owner()
    mem.add_listener(owner.changed)
    mem.add_listener(lambda: calls.append("fn"))
    mem.add(RamRegion(0x1000, bytearray(0x1000)))
    assert calls == ["owner", "fn"]
    del owner
    mem.remove(0x1000, 0x1000)
    assert calls == ["owner", "fn", "fn"]
    try:
        mem.read(0x1000, 1)
    except BusError:
        pass
    else:
        raise AssertionError("removed region still readable")

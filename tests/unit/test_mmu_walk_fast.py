"""The TLB-miss fast path (walker.walk_fast, Mmu._fill) against the reference walk.

walk_fast may decline any walk (None), but a result it gives must be exactly walk()'s, walk
cache included, on any table contents: descriptors here are drawn from valid tables, pages,
blocks, invalid and reserved encodings with random attribute, access-flag, permission and
high output-address bits. A non-strict MMU (fast paths on) and a strict one (general path
only) over the same RAM then return the same data, faults and TLB counts.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.memory import RamRegion, SparseRam
from qemu_panthor.mmu import Mmu, MmuFault, regs, walker
from qemu_panthor.mmu.regs import AdrMode

BASE = 0x8000_0000
NPAGES = 6  # table pages 0..4, data page 5
PA_BITS = 40
ASB = 0x400 + 1 * 0x40
TRANSCFG_48 = int(AdrMode.AARCH64_4K) | (55 - 48) << 6 | 2 << 24 | 1 << 30


def test_literals_match_named_bits():
    """The fast paths spell these bit values as literals."""
    assert walker.DESC_VALID | walker.DESC_TABLE == 3
    assert walker.OA_MASK == 0xFFFF_FFFF_F000
    assert walker.AF == 0x400
    assert walker.AP_RDONLY | walker.XN_BITS == 0x0060_0000_0000_0080
    assert walker.PERM_W | walker.PERM_X == 3 and walker.PERM_W == 1 and walker.PERM_R == 4
    assert walker.PERM_R | walker.PERM_W | walker.PERM_X == 7
    assert walker.WALK_SHIFT == 21 and walker.PAGE_SHIFT == 12
    assert min(walker.PXN_TABLE, walker.UXN_TABLE, walker.AP_TABLE_RDONLY) >> 59 == 1


def _page(i: int) -> int:
    return BASE + i * 0x1000


# A descriptor: a kind, a target page (or an address above PA_BITS), and attribute bits.
desc_st = st.tuples(
    st.sampled_from(["table", "table", "table", "block_or_invalid", "zero", "reserved1"]),
    st.integers(0, NPAGES - 1),
    st.booleans(),  # output address above PA_BITS
    st.sampled_from([0, walker.AF, walker.AF, walker.AF | walker.AP_RDONLY,
                     walker.AF | (1 << 54), walker.AF | walker.PXN_TABLE,
                     walker.AF | walker.AP_TABLE_RDONLY, walker.AF | 0x1C]),
)


def _encode(d: tuple[str, int, bool, int]) -> int:
    kind, page, high, bits = d
    oa = (1 << PA_BITS) | _page(page) if high else _page(page)
    low = {"table": 3, "block_or_invalid": 1, "zero": 0, "reserved1": 2}[kind]
    return oa | bits | low


def _ram(descs: list[tuple[int, int, tuple[str, int, bool, int]]]) -> tuple[bytearray, SparseRam]:
    buf = bytearray(NPAGES * 0x1000)
    for page, idx, d in descs:
        struct.pack_into("<Q", buf, page * 0x1000 + idx * 8, _encode(d))
    mem = SparseRam()
    mem.add(RamRegion(BASE, buf))
    return buf, mem


# Every level's index is one of two, so random descriptors at those slots meet.
idx_st = st.sampled_from([0, 7])
va_st = st.tuples(idx_st, idx_st, idx_st, idx_st, st.integers(0, 0xFF8)).map(
    lambda t: t[0] << 39 | t[1] << 30 | t[2] << 21 | t[3] << 12 | t[4]
)
slots_st = st.lists(st.tuples(st.integers(0, NPAGES - 1), idx_st, desc_st), max_size=24)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slots=slots_st, vas=st.lists(va_st, min_size=1, max_size=8),
       check_af=st.booleans(), wxn=st.booleans())
def test_walk_fast_agrees_with_walk(slots, vas, check_af, wxn):
    _, mem = _ram(slots)
    transcfg = (TRANSCFG_48 | (0 if check_af else regs.TRANSCFG_DISABLE_AF_FAULT)
                | (regs.TRANSCFG_WXN if wxn else 0))
    cfg = walker.WalkConfig(_page(0), transcfg, 0, hw_va_bits=48, hw_pa_bits=PA_BITS)
    assert cfg.check_af == check_af and cfg.wxn == wxn
    view = mem.view(BASE, NPAGES * 0x1000)
    tviews = {_page(i): view[i * 0x1000:(i + 1) * 0x1000].cast("Q") for i in range(NPAGES)}
    wc_fast: dict[int, tuple[int, int]] = {}
    wc_ref: dict[int, tuple[int, int]] = {}
    for va in vas:
        ref = walker.walk(mem.read_u64, cfg, va, wc_ref)
        fast = walker.walk_fast(tviews.get, cfg, va, wc_fast)
        if fast is None:
            # declined: the caller walks with walk(), which fills the walk cache the same way
            walker.walk(mem.read_u64, cfg, va, wc_fast)
        else:
            assert fast == ref
        assert wc_fast == wc_ref


LEAF_BITS = (0, walker.AF, walker.AF | walker.AP_RDONLY, walker.AF | (1 << 53),
             walker.AF | (1 << 54), walker.AF | 0x1C, walker.AF | walker.PXN_TABLE)
TABLE_BITS = (0, walker.AF, walker.PXN_TABLE, walker.UXN_TABLE, walker.AP_TABLE_RDONLY)


@pytest.mark.parametrize("check_af", [True, False])
@pytest.mark.parametrize("wxn", [True, False])
@pytest.mark.parametrize("high_level", [None, 0, 1, 2, 3])
@pytest.mark.parametrize("leaf_low", [3, 1, 0, 2])
def test_walk_fast_on_a_chain(check_af, wxn, high_level, leaf_low):
    """A chain L0 -> L1 -> L2 -> L3 (pages 0..3, data page 5) with every attribute variation
    at one level at a time, an output address above PA_BITS at one level, every leaf
    encoding: walk_fast gives walk()'s result or declines, and it does not decline the plain
    chain."""
    va = 7 << 39 | 7 << 30 | 7 << 21 | 7 << 12
    transcfg = (TRANSCFG_48 | (0 if check_af else regs.TRANSCFG_DISABLE_AF_FAULT)
                | (regs.TRANSCFG_WXN if wxn else 0))
    cfg = walker.WalkConfig(_page(0), transcfg, 0, hw_va_bits=48, hw_pa_bits=PA_BITS)
    variations = [(lvl, bits) for lvl in range(3) for bits in TABLE_BITS]
    variations += [(3, bits) for bits in LEAF_BITS]
    taken = 0
    for at, bits in variations:
        buf = bytearray(NPAGES * 0x1000)
        for lvl in range(4):
            nxt = _page(5 if lvl == 3 else lvl + 1)
            if high_level == lvl:
                nxt |= 1 << PA_BITS
            low = leaf_low if lvl == 3 else 3
            extra = bits if lvl == at else (walker.AF if lvl == 3 else 0)
            struct.pack_into("<Q", buf, lvl * 0x1000 + 7 * 8, nxt | extra | low)
        mem = SparseRam()
        mem.add(RamRegion(BASE, buf))
        view = mem.view(BASE, NPAGES * 0x1000)
        tviews = {_page(i): view[i * 0x1000:(i + 1) * 0x1000].cast("Q") for i in range(NPAGES)}
        wc_fast: dict[int, tuple[int, int]] = {}
        wc_ref: dict[int, tuple[int, int]] = {}
        ref = walker.walk(mem.read_u64, cfg, va, wc_ref)
        fast = walker.walk_fast(tviews.get, cfg, va, wc_fast)
        if fast is not None:
            taken += 1
            assert fast == ref, (at, bits)
            assert wc_fast == wc_ref
            # again through the walk cache
            assert walker.walk_fast(tviews.get, cfg, va, wc_fast) == ref
        elif at < 3 and bits in (0, walker.AF) and high_level is None and leaf_low == 3 and (
            check_af
        ):
            pytest.fail(f"declined a plain chain: level {at} bits {bits:#x}")
    if high_level is None and leaf_low == 3:
        assert taken >= 2


def test_walk_fast_takes_the_common_walk():
    """A writer-built 4-level mapping is walked by the fast path, from L0 and from the walk
    cache, with the same result as walk()."""
    ram = ptw.TableRam(base=BASE, size=4 << 20, tables=1 << 20)
    w = ptw.LpaeWriter(ram, ias=48, oas=PA_BITS)
    va = 0x7F12_3450_0000
    w.map(va, BASE, 0x2000, ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE)
    cfg = walker.WalkConfig(w.transtab, TRANSCFG_48, 0, hw_va_bits=48, hw_pa_bits=PA_BITS)
    view = ram.mem.view(BASE, 4 << 20)
    tviews = {BASE + o: view[o:o + 0x1000].cast("Q") for o in range(0, 4 << 20, 0x1000)}
    wc: dict[int, tuple[int, int]] = {}
    first = walker.walk_fast(tviews.get, cfg, va, wc)
    assert first is not None and first == walker.walk(ram.mem.read_u64, cfg, va)
    assert len(wc) == 1
    second = walker.walk_fast(tviews.get, cfg, va + 0x1000, wc)  # through the walk cache
    assert second == walker.walk(ram.mem.read_u64, cfg, va + 0x1000)
    assert second is not None and second[2] == BASE + 0x1000


def _mmu(mem: SparseRam, strict: bool) -> Mmu:
    mmu = Mmu(mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=PA_BITS, strict=strict)
    for off, v in ((0x00, _page(0)), (0x30, TRANSCFG_48)):
        mmu.write32(ASB + off, v & 0xFFFFFFFF)
        mmu.write32(ASB + off + 4, v >> 32)
    mmu.write32(ASB + 0x18, 1)  # UPDATE
    return mmu


ops_st = st.lists(st.tuples(st.sampled_from(["read", "read_u32", "read_u64", "write"]),
                            va_st, st.sampled_from([1, 4, 8, 16])), min_size=1, max_size=16)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(slots=slots_st, ops=ops_st)
def test_fast_and_general_paths_agree(slots, ops):
    """Same accesses through a non-strict MMU (hit and miss fast paths) and a strict one
    (general path only), each over its own copy of the RAM: same results, same RAM after,
    same hit and miss counts."""
    buf_a, mem_a = _ram(slots)
    buf_b, mem_b = _ram(slots)
    fast, ref = _mmu(mem_a, strict=False), _mmu(mem_b, strict=True)
    for n, (op, va, size) in enumerate(ops):
        if op == "write":
            data = bytes([n + 1]) * size
            a, b = fast.write(1, va, data), ref.write(1, va, data)
        elif op == "read":
            a, b = fast.read(1, va, size), ref.read(1, va, size)
        else:
            a, b = getattr(fast, op)(1, va), getattr(ref, op)(1, va)
        if isinstance(a, MmuFault) or isinstance(b, MmuFault):
            assert (a.exception_type, a.access) == (b.exception_type, b.access)  # type: ignore[union-attr]
            for m in (fast, ref):
                m.write32(0x4, 0xFFFF)  # MMU_INT_CLEAR: let the next fault latch
        else:
            assert a == b
        assert buf_a == buf_b
    ta, tb = fast.slot(1).tlb, ref.slot(1).tlb  # type: ignore[union-attr]
    # (a write may land in a live table page: the strict MMU then counts stale hits, which
    # the non-strict one never looks for, so those are not compared)
    assert (ta.hits, ta.misses, ta.evictions, dict(ta.entries), dict(ta.walks)) == (
        tb.hits, tb.misses, tb.evictions, dict(tb.entries), dict(tb.walks))


def test_fast_path_is_exercised():
    """The agreement above means something only if the fast miss path runs: a page-table
    mapping read twice on a non-strict MMU fills the TLB through _fill the second time the
    walk cache is warm, and every later read hits the view."""
    ram = ptw.TableRam(base=BASE, size=4 << 20, tables=1 << 20)
    w = ptw.LpaeWriter(ram, ias=48, oas=PA_BITS)
    va = 0x7F12_3450_0000
    w.map(va, BASE, 0x3000, ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=PA_BITS)
    for off, v in ((0x00, w.transtab), (0x30, TRANSCFG_48)):
        mmu.write32(ASB + off, v & 0xFFFFFFFF)
        mmu.write32(ASB + off + 4, v >> 32)
    mmu.write32(ASB + 0x18, 1)
    ram.buf[0x1010:0x1018] = b"ABCDEFGH"
    assert mmu.read(1, va, 8) == bytes(8)  # first: general path (fills the table views)
    tlb = mmu.slot(1).tlb  # type: ignore[union-attr]
    assert va + 0x1000 >> 12 not in tlb.entries
    calls = []
    real_fill = mmu._fill

    def spy(*a):  # type: ignore[no-untyped-def]
        v = real_fill(*a)
        calls.append(v is not None)
        return v

    mmu._fill = spy  # type: ignore[method-assign]
    assert mmu.read(1, va + 0x1010, 8) == b"ABCDEFGH"
    assert calls == [True] and (tlb.hits, tlb.misses) == (0, 2)
    assert mmu.write(1, va + 0x2000, b"xy") is None and ram.buf[0x2000:0x2002] == b"xy"
    assert calls == [True, True] and tlb.misses == 3
    assert mmu.read_u64(1, va + 0x1010) == int.from_bytes(b"ABCDEFGH", "little")
    assert calls == [True, True] and tlb.hits == 1

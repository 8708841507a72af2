"""MMU cost: a TLB-miss walk (4 levels) and a TLB hit, beside a plain dict lookup.

Goals (not asserted): miss <= 1.5 us, hit <= 0.25 us. Absolute times depend on the machine and
its load; the "x dict" column is the ratio to the dict lookup measured in the same run.
Run: PYTHONPATH=tests .venv/bin/python bench/bench_mmu.py (the LPAE writer is the tests' support
package)
"""

from __future__ import annotations

import timeit

from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.mmu import Access, Mmu

N = 200_000


def per_call(fn, n: int = N) -> float:
    return min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6


def main() -> None:
    ram = ptw.TableRam(base=0x8000_0000, size=16 << 20, tables=2 << 20)
    w = ptw.LpaeWriter(ram, ias=48, oas=40)
    va = 0x7F12_3450_0000
    w.map(va, 0x8000_0000, 0x1000, ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40)
    base = 0x400 + 0x40
    for off, v in ((0x00, w.transtab), (0x30, 0x420001C6)):
        mmu.write32(base + off, v & 0xFFFFFFFF)
        mmu.write32(base + off + 4, v >> 32)
    mmu.write32(base + 0x18, 1)
    slot = mmu.slot(1)
    assert slot is not None
    tlb = slot.tlb  # bench-only peek: drop the page's TLB entry before each miss
    vpn = va >> 12

    def drop_entry() -> None:  # the TLB entry (and the fast-path views of it) only
        tlb.entries.pop(vpn, None)
        tlb.rviews.pop(vpn, None)
        tlb.wviews.pop(vpn, None)

    def drop_all() -> None:  # the TLB entry and the walk-cache entry
        drop_entry()
        tlb.walks.pop(va >> 21, None)

    def miss_read_cold() -> object:
        drop_all()  # a full 4-level walk
        return mmu.read(1, va + 0x10, 8)

    def miss_read_warm() -> object:
        drop_entry()  # the walk cache still holds the L3 table: 1 descriptor read
        return mmu.read(1, va + 0x10, 8)

    def miss_translate() -> object:
        drop_all()
        return mmu.translate(1, va + 0x10, Access.READ)

    d = {va >> 12: 1}
    mmu.read(1, va + 0x10, 8)  # fill the TLB (and the fast-path view)
    results = {
        "dict lookup": per_call(lambda: d.get(va >> 12)),
        "translate, TLB miss (4-level walk)": per_call(miss_translate) - per_call(drop_all),
        "read 8 bytes, TLB miss (4-level walk)": per_call(miss_read_cold) - per_call(drop_all),
        "read 8 bytes, TLB miss, walk cache hit": per_call(miss_read_warm)
        - per_call(drop_entry),
        "translate, TLB hit": per_call(lambda: mmu.translate(1, va + 0x10, Access.READ)),
        "read 8 bytes, TLB hit": per_call(lambda: mmu.read(1, va + 0x10, 8)),
        "read_u64, TLB hit": per_call(lambda: mmu.read_u64(1, va + 0x10)),
        "write 8 bytes, TLB hit": per_call(lambda: mmu.write(1, va + 0x10, b"01234567")),
    }
    goals = {
        "read 8 bytes, TLB miss (4-level walk)": 1.5,
        "read 8 bytes, TLB hit": 0.25,
    }
    base = results["dict lookup"]
    for name, us in results.items():
        goal = f"(goal <= {goals[name]} us)" if name in goals else ""
        print(f"{name:40s} {us:7.3f} us {us / base:6.1f}x dict {goal}")


if __name__ == "__main__":
    main()

"""Test doubles for the CS interpreter tests: an identity-mapped MMU over a SparseRam, GPU hooks,
and a ring-buffer harness."""

from __future__ import annotations

import struct

from qemu_panthor.memory import BusError, RamRegion, SparseRam
from qemu_panthor.mmu import Access, MmuFault

PAGE = 4096
TRANSLATION_FAULT_3 = 0xC3
PERM_FAULT_3 = 0xCB


class FakeMmu:
    """GPU VA == PA; pages must be mapped (VA -> writable flag); RAM behind them is a SparseRam.

    An unmapped page gives a level-3 translation fault, a write to a read-only page a level-3
    permission fault, a mapped page with no RAM behind it a bus fault (``bus=True``).
    """

    def __init__(self) -> None:
        self.ram = SparseRam()
        self.pages: dict[int, bool] = {}
        self.faults: list[MmuFault] = []
        self.reads: list[tuple[int, int, int]] = []
        self.locked: list[tuple[int, int]] = []  # regions locked by AS_COMMAND LOCK
        self.locked_ases = 0

    def lock(self, base: int, size: int) -> None:
        self.locked.append((base, size))
        self.locked_ases = 0xFFFF  # the fake's one address space answers for every AS number

    def unlock(self) -> None:
        self.locked = []
        self.locked_ases = 0

    def lock_stalls(self, as_nr: int, va: int, size: int) -> bool:
        return any(b < va + size and va < b + n for b, n in self.locked)

    def map(self, va: int, size: int, *, writable: bool = True, ram: bool = True) -> None:
        start, end = va & ~(PAGE - 1), (va + size + PAGE - 1) & ~(PAGE - 1)
        if ram:
            for p in range(start, end, PAGE):
                if p not in self.pages and not self._backed(p):
                    self.ram.add(RamRegion(p, bytearray(PAGE)))
        for p in range(start, end, PAGE):
            self.pages[p] = writable

    def unmap(self, va: int, size: int) -> None:
        for p in range(va & ~(PAGE - 1), va + size, PAGE):
            self.pages.pop(p, None)

    def _backed(self, p: int) -> bool:
        return any(r.base <= p < r.end for r in self.ram.regions)

    def _check(self, as_nr: int, va: int, size: int, access: Access) -> MmuFault | None:
        for p in range(va & ~(PAGE - 1), va + max(size, 1), PAGE):
            w = self.pages.get(p)
            if w is None or (not w and access in (Access.WRITE, Access.ATOMIC)):
                f = MmuFault(
                    as_nr,
                    max(va, p),
                    access,
                    TRANSLATION_FAULT_3 if w is None else PERM_FAULT_3,
                )
                self.faults.append(f)
                return f
        return None

    def read(
        self, as_nr: int, va: int, size: int, access: Access = Access.READ, *, report: bool = True
    ) -> bytes | MmuFault:
        self.reads.append((va, size, int(access)))
        f = self._check(as_nr, va, size, access)
        if f is not None:
            return f
        try:
            return self.ram.read(va, size)
        except BusError:
            f = MmuFault(as_nr, va, access, 0x80, bus=True)
            self.faults.append(f)
            return f

    def write(self, as_nr: int, va: int, data: bytes, *, report: bool = True) -> MmuFault | None:
        f = self._check(as_nr, va, len(data), Access.WRITE)
        if f is not None:
            return f
        try:
            self.ram.write(va, data)
        except BusError:
            f = MmuFault(as_nr, va, Access.WRITE, 0x80, bus=True)
            self.faults.append(f)
            return f
        return None

    # direct (CPU-side) helpers
    def r32(self, va: int) -> int:
        return self.ram.read_u32(va)

    def r64(self, va: int) -> int:
        return self.ram.read_u64(va)

    def w32(self, va: int, v: int) -> None:
        self.ram.write_u32(va, v)

    def w64(self, va: int, v: int) -> None:
        self.ram.write_u64(va, v)

    def put(self, va: int, words: list[int]) -> None:
        self.ram.write(va, struct.pack(f"<{len(words)}Q", *words))


class FakeHooks:
    """GPU hooks: counts flushes and bumps LATEST_FLUSH_ID on each (like MaliGpu; 5 is the
    value of the §8.2 worked example); timestamp/cycle counters advance by a fixed step."""

    def __init__(self, ts: int = 0x1_0000_0000, cycles: int = 0x55_0000_0000,
                 latest_flush_id: int = 5) -> None:
        self.flushes = 0
        self.ts = ts
        self.cycles = cycles
        self.latest_flush_id = latest_flush_id

    def flush_caches(self) -> None:
        self.flushes += 1
        self.latest_flush_id += 1

    def timestamp(self) -> int:
        self.ts += 100
        return self.ts

    def cycle_count(self) -> int:
        self.cycles += 7
        return self.cycles


RING = 0x100000


class Rig:
    """An interpreter + one CS whose ring lives at RING (identity mapped)."""

    def __init__(
        self,
        ring_size: int = PAGE,
        reg_count: int = 96,
        scoreboards: int = 8,
        hooks: FakeHooks | None = None,
        work_scale: float = 0.0,
    ) -> None:
        """``work_scale`` 0: work items complete at once (instruction semantics alone);
        otherwise they take time on ``self.now``, a clock the test advances."""
        from qemu_panthor.csf.interp import CsInterpreter, new_state

        self.mmu = FakeMmu()
        self.hooks = hooks if hooks is not None else FakeHooks()
        self.now = 1000.0
        self.it = CsInterpreter(self.mmu, self.hooks, work_scale=work_scale,
                                clock=lambda: self.now)
        self.st = new_state(reg_count=reg_count, scoreboards=scoreboards)
        self.st.ring_base = RING
        self.st.ring_size = ring_size
        self.st.as_nr = 3
        self.mmu.map(RING, ring_size, writable=False)

    def push(self, words: list[int]) -> None:
        """Append instructions at insert (wrapping in the ring) and advance insert."""
        st = self.st
        for w in words:
            va = st.ring_base + (st.insert & (st.ring_size - 1))
            self.mmu.ram.write_u64(va, w)
            st.insert += 8

    def run(self, budget: int = 10_000):
        return self.it.run(self.st, budget)

"""A per-AS translation lookaside buffer that behaves like the hardware one.

It caches successful walks and is *not* coherent with the page tables in memory: only
AS_COMMAND UPDATE (whole AS) and UNLOCK / FLUSH_PT / FLUSH_MEM (the locked region) drop
entries, so a driver that edits live tables without LOCK/UNLOCK keeps seeing the old
translation, as on real hardware. Faulting walks are never cached.

A 2 MiB / 1 GiB block is cached as one block entry (so every page of the block hits it, even
pages never touched before, like a hardware TLB entry for a block); lookups go through a per-page
index filled from those entries. An invalidation drops every entry whose *block* overlaps the
region. Capacity is bounded (oldest entries are evicted first); eviction
is invisible except that a stale entry may disappear early, which hardware also allows.

Beside the leaf entries it keeps a *walk cache*: for each 2 MiB VA region whose walk reached a
last-level (L3) table, that table's address and the hierarchical attributes collected on the
way (``walks``, keyed by ``va >> 21``). A TLB miss in such a region reads one descriptor instead
of up to four. Like a hardware walk cache it is not coherent with memory either and is dropped
by exactly the same commands: UPDATE drops all of it, an invalidation drops the entries whose
2 MiB region overlaps the invalidated range.

``rviews`` / ``wviews`` are lookup aids for the MMU's hit fast path, not TLB state: for a page
with an entry (``rviews`` readable ones, ``wviews`` writable ones) the memoryview of the
guest page it maps, filled by the MMU after a slow-path access. They are kept a subset of
``entries`` (every drop of an entry drops them too) and emptied with :meth:`drop_views`.
"""

from __future__ import annotations

from .walker import PAGE_SHIFT, PAGE_SIZE, WALK_CACHE_CAPACITY, WALK_SHIFT

#: (page_pa, perm, level, block_va, block_size, attr_index)
TlbEntry = tuple[int, int, int, int, int, int]

DEFAULT_CAPACITY = 1 << 16
__all__ = ["DEFAULT_CAPACITY", "WALK_CACHE_CAPACITY", "WALK_SHIFT", "Tlb", "TlbEntry"]


class Tlb:
    """One address space's TLB plus its hit/miss counters."""

    __slots__ = (
        "_max_block",
        "blocks",
        "capacity",
        "entries",
        "evictions",
        "flushes",
        "hits",
        "invalidations",
        "misses",
        "rviews",
        "stale_hits",
        "walks",
        "wviews",
    )

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.entries: dict[int, TlbEntry] = {}  # by 4 KiB VPN
        self.blocks: dict[tuple[int, int], TlbEntry] = {}  # by (size, va // size)
        #: walk cache: va >> WALK_SHIFT -> (L3 table PA, OR of the table descriptors above it)
        self.walks: dict[int, tuple[int, int]] = {}
        #: VPN -> view of the mapped guest page, for entries that allow reads / writes
        self.rviews: dict[int, memoryview] = {}
        self.wviews: dict[int, memoryview] = {}
        self.capacity = capacity
        self._max_block = PAGE_SIZE
        self.hits = 0
        self.misses = 0
        self.flushes = 0
        self.invalidations = 0
        self.evictions = 0
        self.stale_hits = 0

    def insert(
        self, va: int, oa: int, size: int, perm: int, level: int, attr_index: int
    ) -> TlbEntry:
        """Cache the walk result for the 4 KiB page containing ``va``."""
        entries = self.entries
        if len(entries) >= self.capacity:
            self._evict()
        if size == PAGE_SIZE:
            entry = (oa, perm, level, va & ~(PAGE_SIZE - 1), size, attr_index)
            entries[va >> PAGE_SHIFT] = entry
            return entry
        block_va = va & ~(size - 1)
        entry = (oa + ((va - block_va) & ~(PAGE_SIZE - 1)), perm, level, block_va, size, attr_index)
        entries[va >> PAGE_SHIFT] = entry
        if size > PAGE_SIZE:
            blocks = self.blocks
            if len(blocks) >= self.capacity:
                del blocks[next(iter(blocks))]
                self.evictions += 1
            blocks[(size, va // size)] = (oa, perm, level, block_va, size, attr_index)
            if size > self._max_block:
                self._max_block = size
        return entry

    def block_hit(self, va: int) -> TlbEntry | None:
        """A cached block covering ``va`` (the page index missed); indexes the page too."""
        for size in (1 << 21, 1 << 30):
            b = self.blocks.get((size, va // size))
            if b is not None:
                entry = (b[0] + ((va - b[3]) & ~(PAGE_SIZE - 1)), b[1], b[2], b[3], b[4], b[5])
                if len(self.entries) >= self.capacity:
                    self._evict()
                self.entries[va >> PAGE_SHIFT] = entry
                return entry
        return None

    def _evict(self) -> None:
        k = next(iter(self.entries))
        del self.entries[k]
        self.rviews.pop(k, None)
        self.wviews.pop(k, None)
        self.evictions += 1

    def drop_views(self) -> None:
        self.rviews.clear()
        self.wviews.clear()

    def flush(self) -> None:
        """Drop everything (AS_COMMAND UPDATE)."""
        self.entries.clear()
        self.blocks.clear()
        self.walks.clear()
        self.rviews.clear()
        self.wviews.clear()
        self._max_block = PAGE_SIZE
        self.flushes += 1

    def invalidate(self, base: int, size: int) -> int:
        """Drop every entry whose page/block overlaps [base, base+size); return how many."""
        self.invalidations += 1
        end = base + size
        walks = self.walks
        if walks and size > 0:
            lo = base >> WALK_SHIFT
            hi = (end - 1) >> WALK_SHIFT
            if hi - lo < len(walks):
                for k in range(max(lo, 0), hi + 1):
                    walks.pop(k, None)
            else:
                for w in [w for w in walks if lo <= w <= hi]:
                    del walks[w]
        blocks = self.blocks
        if blocks:
            for bk in [bk for bk, b in blocks.items() if b[3] < end and base < b[3] + b[4]]:
                del blocks[bk]
        entries = self.entries
        if not entries:
            return 0
        blk = self._max_block
        lo = base & ~(blk - 1)
        hi = (end + blk - 1) & ~(blk - 1)
        npages = (hi - lo) >> PAGE_SHIFT
        if npages <= len(entries):
            keys = [k for k in range(lo >> PAGE_SHIFT, hi >> PAGE_SHIFT) if k in entries]
        else:
            keys = list(entries)
        dropped = 0
        rviews = self.rviews
        wviews = self.wviews
        for k in keys:
            e = entries[k]
            if e[3] < end and base < e[3] + e[4]:
                del entries[k]
                rviews.pop(k, None)
                wviews.pop(k, None)
                dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self.entries)

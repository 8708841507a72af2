"""Zero-copy windows on guest pages for the MMU's hot paths (not hardware state).

``pages``: guest page PA -> memoryview of that 4 KiB page, or NO_VIEW when the page is not
wholly inside one RAM region. ``tables``: pages the walker read descriptors from, as 512
native 64-bit words, so a descriptor is one subscript (little-endian hosts only; elsewhere
descriptors are unpacked from ``pages``). Only over a SparseRam, which hands out views and tells
its listeners when its regions change; the MMU then calls :meth:`clear` before the removed
regions are released. Other PhysMems get every access through read/write.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable

from ..memory import BusError, PhysMem, SparseRam
from .walker import NO_VIEW, PAGE_SIZE

#: most guest pages each cache keeps (a full cache is emptied)
VIEW_CACHE_CAPACITY = 1 << 16
_NATIVE_LE = sys.byteorder == "little"
_PAGE_MASK = PAGE_SIZE - 1
_U64_UNPACK = struct.Struct("<Q").unpack_from


class PageViews:
    """The page and table view caches over one PhysMem."""

    __slots__ = ("_mem_view", "_read_u64", "pages", "tables")

    def __init__(self, mem: PhysMem) -> None:
        self.pages: dict[int, memoryview] = {}
        self.tables: dict[int, memoryview] = {}
        self._read_u64 = mem.read_u64
        self._mem_view: Callable[[int, int], memoryview] | None = (
            mem.view if isinstance(mem, SparseRam) else None
        )

    def clear(self) -> None:
        """Forget every view (the dictionaries stay the same objects)."""
        self.pages.clear()
        self.tables.clear()

    def page(self, page: int) -> memoryview:
        """The memoryview of the guest page at ``page`` (4 KiB aligned), or NO_VIEW."""
        v = self.pages.get(page)
        if v is None:
            mem_view = self._mem_view
            if mem_view is None:
                return NO_VIEW
            pages = self.pages
            if len(pages) >= VIEW_CACHE_CAPACITY:
                pages.clear()
            try:
                v = mem_view(page, PAGE_SIZE)
            except BusError:
                v = NO_VIEW
            pages[page] = v
        return v

    def read_desc(self, pa: int) -> int:
        """Read one 64-bit descriptor for the walker (BusError outside RAM); the first read of
        a table page indexes its table view for the walks after it."""
        page = pa & ~_PAGE_MASK
        v = self.pages.get(page)
        if v is None:
            v = self.page(page)
        if v:
            if _NATIVE_LE and not pa & 7:
                tables = self.tables
                if len(tables) >= VIEW_CACHE_CAPACITY:
                    tables.clear()
                tables[page] = v.cast("Q")
            return _U64_UNPACK(v, pa & _PAGE_MASK)[0]
        return self._read_u64(pa)

"""Guest physical memory as a bus master sees it.

Every device-side access to guest RAM (page-table walks, firmware shared section, command
streams) goes through a :class:`PhysMem`. Implementations bounds-check each access against the
regions actually mapped: an access outside them raises :class:`BusError`, which the caller turns
into the fault real hardware would raise (an MMU bus fault, a CS bus fault). It never reads
other memory and never escapes as an unexpected exception.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Callable
from types import MethodType
from typing import Protocol

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class BusError(Exception):
    """A bus-master access hit no mapped guest RAM (the AXI 'decode error' case)."""

    def __init__(self, pa: int, size: int, write: bool) -> None:
        super().__init__(f"bus error: {'write' if write else 'read'} of {size} bytes at PA {pa:#x}")
        self.pa = pa
        self.size = size
        self.write = write


class PhysMem(Protocol):
    """Guest-physical address space (DMA) as seen by the device."""

    def read(self, pa: int, size: int) -> bytes: ...

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None: ...

    def read_u32(self, pa: int) -> int: ...

    def read_u64(self, pa: int) -> int: ...

    def write_u32(self, pa: int, value: int) -> None: ...

    def write_u64(self, pa: int, value: int) -> None: ...


class RamRegion:
    """One contiguous guest-physical range backed by a writable buffer (bytearray or mmap)."""

    __slots__ = ("base", "buf", "end", "size", "view")

    def __init__(self, base: int, buf: bytearray | memoryview) -> None:
        self.base = base
        self.buf = buf
        self.view = memoryview(buf).cast("B")
        self.size = len(self.view)
        self.end = base + self.size


class SparseRam:
    """A :class:`PhysMem` over a set of non-overlapping :class:`RamRegion`.

    Used by the vfio-user DMA accessor (regions are the client's DMA_MAP'd memfd windows) and
    by tests (regions are bytearrays). Lookups hit a one-entry cache first: accesses cluster.

    Users that keep :meth:`view` windows (the MMU's page cache) register with
    :meth:`add_listener` and drop them when the regions change.
    """

    def __init__(self) -> None:
        self._regions: list[RamRegion] = []
        self._last: RamRegion | None = None
        self._listeners: list[Callable[[], Callable[[], None] | None]] = []

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after every :meth:`add`, :meth:`remove` and :meth:`clear`.

        It runs before ``remove``/``clear`` return the removed regions, so a cache can drop
        its views before the caller releases them. A bound method is held weakly.
        """
        if isinstance(fn, MethodType):
            self._listeners.append(weakref.WeakMethod(fn))
        else:
            self._listeners.append(lambda: fn)

    def _changed(self) -> None:
        if not self._listeners:
            return
        alive = []
        for ref in self._listeners:
            fn = ref()
            if fn is not None:
                fn()
                alive.append(ref)
        self._listeners = alive

    # -- map management ---------------------------------------------------------------
    def add(self, region: RamRegion) -> None:
        for r in self._regions:
            if region.base < r.end and r.base < region.end:
                raise ValueError(
                    f"region {region.base:#x}+{region.size:#x} overlaps {r.base:#x}+{r.size:#x}"
                )
        self._regions.append(region)
        self._regions.sort(key=lambda r: r.base)
        self._changed()

    def remove(self, base: int, size: int) -> list[RamRegion]:
        """Remove the regions lying inside [base, base+size); return them (caller releases)."""
        end = base + size
        gone = [r for r in self._regions if r.base >= base and r.end <= end]
        self._regions = [r for r in self._regions if not (r.base >= base and r.end <= end)]
        self._last = None
        self._changed()
        return gone

    def clear(self) -> list[RamRegion]:
        gone, self._regions, self._last = self._regions, [], None
        self._changed()
        return gone

    @property
    def regions(self) -> tuple[RamRegion, ...]:
        return tuple(self._regions)

    # -- access -----------------------------------------------------------------------
    def _find(self, pa: int, size: int, write: bool) -> tuple[RamRegion, int]:
        r = self._last
        if r is not None and r.base <= pa and pa + size <= r.end:
            return r, pa - r.base
        if pa >= 0 and size >= 0:
            for r in self._regions:
                if r.base <= pa and pa + size <= r.end:
                    self._last = r
                    return r, pa - r.base
        raise BusError(pa, size, write)

    def view(self, pa: int, size: int, write: bool = False) -> memoryview:
        """A zero-copy window; valid until the next unmap."""
        r, off = self._find(pa, size, write)
        return r.view[off : off + size]

    def read(self, pa: int, size: int) -> bytes:
        r, off = self._find(pa, size, False)
        return bytes(r.view[off : off + size])

    def write(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        r, off = self._find(pa, n, True)
        r.view[off : off + n] = data

    def read_u32(self, pa: int) -> int:
        r, off = self._find(pa, 4, False)
        return _U32.unpack_from(r.view, off)[0]

    def read_u64(self, pa: int) -> int:
        r, off = self._find(pa, 8, False)
        return _U64.unpack_from(r.view, off)[0]

    def write_u32(self, pa: int, value: int) -> None:
        r, off = self._find(pa, 4, True)
        _U32.pack_into(r.view, off, value & 0xFFFFFFFF)

    def write_u64(self, pa: int, value: int) -> None:
        r, off = self._find(pa, 8, True)
        _U64.pack_into(r.view, off, value & 0xFFFFFFFFFFFFFFFF)

"""The client's DMA windows (VFIO_USER_DMA_MAP / DMA_UNMAP).

A window passed with a file descriptor is mmap'ed MAP_SHARED (read-only windows MAP_PRIVATE,
so a device write to guest ROM is dropped instead of faulting) and added to the device's
``dma`` :class:`~qemu_panthor.memory.SparseRam`. A window without an fd is only reachable
through DMA_READ/DMA_WRITE messages (``PciFunction.dma_read``/``dma_write``); the synchronous
PhysMem raises BusError for it.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from dataclasses import dataclass, field

from ..memory import RamRegion, SparseRam

log = logging.getLogger(__name__)

MAX_DMA_MAPS = 65535


class DmaError(Exception):
    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


@dataclass
class DmaWindow:
    address: int
    size: int
    flags: int
    mm: mmap.mmap | None = None
    view: memoryview | None = None
    region: RamRegion | None = field(default=None, repr=False)

    @property
    def end(self) -> int:
        return self.address + self.size

    def release(self) -> None:
        if self.region is not None:
            self.region.view.release()
            self.region = None
        if self.view is not None:
            self.view.release()
            self.view = None
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:  # the device still holds a window view: GC unmaps it later
                log.warning("DMA window %#x+%#x still referenced", self.address, self.size)
            self.mm = None


class DmaMaps:
    """All windows of one connection; fd-backed ones are mirrored into ``ram``."""

    def __init__(self, ram: SparseRam, *, max_maps: int = MAX_DMA_MAPS) -> None:
        self.ram = ram
        self.max_maps = max_maps
        self.windows: list[DmaWindow] = []

    def map(self, address: int, size: int, flags: int, offset: int, fd: int | None) -> DmaWindow:
        """Add a window; ``fd`` is borrowed (mmap keeps its own duplicate)."""
        if size == 0 or address + size > 1 << 64 or offset + size > 1 << 63:
            raise DmaError(errno.EINVAL, f"bad DMA window {address:#x}+{size:#x}")
        if len(self.windows) >= self.max_maps:
            raise DmaError(errno.ENOSPC, "too many DMA windows")
        end = address + size
        for w in self.windows:
            if address < w.end and w.address < end:
                raise DmaError(errno.EEXIST, f"DMA window {address:#x}+{size:#x} overlaps")
        win = DmaWindow(address, size, flags)
        if fd is not None:
            writable = bool(flags & 2)
            base = offset - offset % mmap.ALLOCATIONGRANULARITY
            try:
                mm = mmap.mmap(
                    fd,
                    size + (offset - base),
                    flags=mmap.MAP_SHARED if writable else mmap.MAP_PRIVATE,
                    prot=mmap.PROT_READ | mmap.PROT_WRITE,
                    offset=base,
                )
            except (OSError, ValueError, OverflowError) as e:
                err = e.errno if isinstance(e, OSError) and e.errno else errno.EINVAL
                raise DmaError(err, f"cannot mmap DMA window: {e}") from e
            win.mm = mm
            win.view = memoryview(mm)[offset - base : offset - base + size]
            win.region = RamRegion(address, win.view)
            self.ram.add(win.region)
        self.windows.append(win)
        return win

    def unmap(self, address: int, size: int) -> None:
        for i, w in enumerate(self.windows):
            if w.address == address and w.size == size:
                del self.windows[i]
                self._drop(w)
                return
        raise DmaError(errno.ENOENT, f"no DMA window {address:#x}+{size:#x}")

    def unmap_all(self) -> None:
        windows, self.windows = self.windows, []
        for w in windows:
            self._drop(w)

    def _drop(self, w: DmaWindow) -> None:
        if w.region is not None:
            self.ram.remove(w.address, w.size)
        w.release()

    def message_window(self, address: int, size: int) -> DmaWindow | None:
        """The fd-less window wholly containing [address, address+size), if any."""
        for w in self.windows:
            if w.mm is None and w.address <= address and address + size <= w.end:
                return w
        return None


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass

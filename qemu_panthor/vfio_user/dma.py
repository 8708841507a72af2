"""The client's DMA windows (VFIO_USER_DMA_MAP / DMA_UNMAP).

A window passed with a file descriptor is mmap'ed MAP_SHARED (read-only windows MAP_PRIVATE,
so a device write to guest ROM is dropped instead of faulting) and added to the device's
``dma`` :class:`~qemu_panthor.memory.SparseRam`. A window without an fd is only reachable
through DMA_READ/DMA_WRITE messages (``PciFunction.dma_read``/``dma_write``); the synchronous
PhysMem raises BusError for it.

An access through a mapping past the end of its file is a SIGBUS, which kills the process.
So an fd is only mapped if it is a regular file covering ``offset + size`` that can never
shrink: sealed with F_SEAL_SHRINK, as QEMU's ``memory-backend-memfd`` (seal=on, the default)
seals guest RAM. Anything else is refused with EINVAL.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import logging
import mmap
import os
import stat
from dataclasses import dataclass, field

from ..memory import RamRegion, SparseRam

log = logging.getLogger(__name__)

MAX_DMA_MAPS = 65535


class DmaError(Exception):
    """A DMA_MAP/DMA_UNMAP that fails with ``errno``."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


class UnsafeFd(DmaError):
    """An fd that cannot back a mapping safely (would risk SIGBUS): refused with EINVAL."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EINVAL, message)


def check_fd(fd: int, offset: int, size: int) -> None:
    """Raise :class:`UnsafeFd` unless ``fd`` is a regular file that covers ``offset + size``
    and is sealed against shrinking (so no access through the mapping can ever fault)."""
    try:
        st = os.fstat(fd)
    except OSError as e:
        raise UnsafeFd(f"DMA_MAP fd: fstat failed: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeFd("DMA_MAP fd is not a regular file (memory-backend-memfd expected)")
    if st.st_size < offset + size:
        raise UnsafeFd(
            f"DMA_MAP fd of {st.st_size:#x} bytes is smaller than offset+size "
            f"{offset:#x}+{size:#x}"
        )
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        seals = 0  # not a memfd/shmem file: it cannot be sealed
    if not seals & fcntl.F_SEAL_SHRINK:
        raise UnsafeFd(
            "DMA_MAP fd is not sealed with F_SEAL_SHRINK: a shrink would fault the device "
            "(use memory-backend-memfd with seal=on)"
        )


@dataclass
class DmaWindow:
    """One DMA_MAP'd range of client memory (mmap'ed when it came with an fd)."""

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
    """All windows of one connection, sorted by address; fd-backed ones mirrored in ``ram``."""

    def __init__(self, ram: SparseRam, *, max_maps: int = MAX_DMA_MAPS) -> None:
        self.ram = ram
        self.max_maps = max_maps
        self.windows: list[DmaWindow] = []  # sorted by address, never overlapping
        self._starts: list[int] = []

    def map(self, address: int, size: int, flags: int, offset: int, fd: int | None) -> DmaWindow:
        """Add a window; ``fd`` is borrowed (mmap keeps its own duplicate)."""
        if size == 0 or address + size > 1 << 64 or offset + size > 1 << 63:
            raise DmaError(errno.EINVAL, f"bad DMA window {address:#x}+{size:#x}")
        if len(self.windows) >= self.max_maps:
            raise DmaError(errno.ENOSPC, "too many DMA windows")
        end = address + size
        i = bisect.bisect_right(self._starts, address)
        if (i > 0 and self.windows[i - 1].end > address) or (
            i < len(self.windows) and self.windows[i].address < end
        ):
            raise DmaError(errno.EEXIST, f"DMA window {address:#x}+{size:#x} overlaps")
        win = DmaWindow(address, size, flags)
        if fd is not None:
            check_fd(fd, offset, size)
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
        self.windows.insert(i, win)
        self._starts.insert(i, address)
        return win

    def unmap(self, address: int, size: int) -> None:
        i = bisect.bisect_left(self._starts, address)
        if i < len(self.windows) and self._starts[i] == address and self.windows[i].size == size:
            w = self.windows.pop(i)
            del self._starts[i]
            self._drop(w)
            return
        raise DmaError(errno.ENOENT, f"no DMA window {address:#x}+{size:#x}")

    def unmap_all(self) -> None:
        windows, self.windows, self._starts = self.windows, [], []
        for w in windows:
            self._drop(w)

    def _drop(self, w: DmaWindow) -> None:
        if w.region is not None:
            self.ram.remove(w.address, w.size)
        w.release()

    def message_window(self, address: int, size: int) -> DmaWindow | None:
        """The fd-less window wholly containing [address, address+size), if any."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0:
            w = self.windows[i]
            if w.mm is None and address + size <= w.end:
                return w
        return None


def close_fds(fds: list[int]) -> None:
    """Close fds we own (those a message brought and no one kept)."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass

"""DMA_MAP and DMA_UNMAP: the client tells the server which of its memory the device may use.

A window comes with an fd (mmap'ed, reached synchronously through ``PciFunction.dma``) or
without one (reached by DMA_READ/DMA_WRITE messages, see ``dma_requests``). DMA_UNMAP needs
an exact match; its ALL flag drops every window, the dirty-bitmap flag is not supported.
"""

from __future__ import annotations

import errno
import logging

from . import protocol as P
from .dma import DmaError, DmaMaps, UnsafeFd
from .errors import ProtocolError
from .stats import ServerStats
from .version import PGSIZES

PAGE_SIZE = PGSIZES & -PGSIZES  # the smallest page size we advertise: DMA_MAP granularity

tlog = logging.getLogger("qemu_panthor.vfio_user.trace")
log = logging.getLogger(__name__)


class DmaCommands:
    """DMA_MAP/DMA_UNMAP handlers over one connection's :class:`DmaMaps`."""

    def __init__(self, maps: DmaMaps, stats: ServerStats, *, trace: bool = False) -> None:
        self.maps = maps
        self.stats = stats
        self.trace = trace
        self.warned_unsafe_fd = False
        self.warned_no_fd = False

    def dma_map(self, payload: bytes, fds: list[int]) -> bytes:
        """DMA_MAP: 32-byte payload, argsz 32, page-aligned address/size/offset, at most one
        fd (a sealed memfd, see ``dma.check_fd``), no offset without an fd. The fd is only
        borrowed: the mmap holds its own reference and the connection closes ours."""
        fixed = P.DmaMap.sizeof()
        if len(payload) < fixed:
            raise ProtocolError(errno.EINVAL, "short DMA_MAP")
        m = P.DmaMap.parse(payload)
        F = P.DmaMapFlags
        if m.argsz != fixed or len(payload) != fixed or m.flags & ~0xF:
            raise ProtocolError(
                errno.EINVAL,
                f"bad DMA_MAP argsz/size/flags {m.argsz}/{len(payload)}/{m.flags:#x}",
            )
        if len(fds) > 1:
            raise ProtocolError(errno.EINVAL, "DMA_MAP with more than one fd")
        mode = m.flags & (F.MODE_MMAP | F.MODE_FILE_IO)
        if mode == F.MODE_MMAP | F.MODE_FILE_IO or (mode and not fds):
            raise ProtocolError(errno.EINVAL, "DMA_MAP access mode needs exactly one fd")
        if (m.address | m.size | m.offset) % PAGE_SIZE:
            raise ProtocolError(
                errno.EINVAL,
                f"DMA_MAP {m.address:#x}+{m.size:#x} offset {m.offset:#x} is not page-aligned",
            )
        if m.offset and not fds:
            raise ProtocolError(errno.EINVAL, f"DMA_MAP offset {m.offset:#x} without an fd")
        fd = fds[0] if fds else None
        try:
            self.maps.map(m.address, m.size, m.flags, m.offset, fd)
        except UnsafeFd as e:
            # What an operator must fix (guest RAM not a sealed memfd): said once loudly.
            level = logging.INFO if self.warned_unsafe_fd else logging.WARNING
            self.warned_unsafe_fd = True
            raise ProtocolError(e.errno, str(e), level=level) from None
        except DmaError as e:
            raise ProtocolError(e.errno, str(e)) from None
        if fd is None:
            self.stats.dma_maps_without_fd += 1
            if not self.warned_no_fd:
                # Only the async DMA_READ/DMA_WRITE messages reach such a window (laid out as
                # the spec says, which QEMU 11.1's client does not follow: docs/vfio-user.md);
                # device models that read guest memory in place (the GPU's MMU) see a bus
                # error there. What an operator must fix: said once per connection.
                self.warned_no_fd = True
                log.warning("DMA_MAP %#x+%#x without an fd: the GPU reads guest memory in "
                            "place and cannot reach it (its accesses bus-fault); share guest "
                            "RAM by fd (-object memory-backend-memfd,share=on)",
                            m.address, m.size)
        else:
            self.stats.dma_maps_with_fd += 1
        if self.trace:
            tlog.debug("DMA_MAP %#x+%#x flags=%#x fd=%s", m.address, m.size, m.flags, fd)
        return b""

    def dma_unmap(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "DMA_UNMAP carries no fds")
        if len(payload) < P.DmaUnmap.sizeof():
            raise ProtocolError(errno.EINVAL, "short DMA_UNMAP")
        u = P.DmaUnmap.parse(payload)
        F = P.DmaUnmapFlags
        if u.argsz < P.DmaUnmap.sizeof():
            raise ProtocolError(errno.EINVAL, "DMA_UNMAP argsz too small")
        if u.flags & F.GET_DIRTY_BITMAP:
            raise ProtocolError(errno.ENOTSUP, "dirty bitmaps are not supported")
        if u.flags & ~int(F.ALL):
            raise ProtocolError(errno.EINVAL, f"bad DMA_UNMAP flags {u.flags:#x}")
        if u.flags & F.ALL:
            if u.address or u.size:
                raise ProtocolError(errno.EINVAL, "unmap-all with an address or size")
            self.maps.unmap_all()
        else:
            try:
                self.maps.unmap(u.address, u.size)
            except DmaError as e:
                raise ProtocolError(e.errno, str(e)) from None
        return payload[: P.DmaUnmap.sizeof()]

"""Server -> client DMA_READ/DMA_WRITE: the device reaching client memory mapped without an fd.

Requests are split to the smaller of both sides' ``max_data_xfer_size`` and their replies are
awaited asynchronously (with a timeout); a region reply never waits on them, which would
deadlock QEMU's main loop. A failed, refused or timed-out request is a ``BusError`` for the
device, as an aborted bus transaction would be.
"""

from __future__ import annotations

import asyncio
import logging

from ..memory import BusError
from . import protocol as P
from .dma import DmaMaps
from .outbox import Outbox
from .pci import DmaPort

log = logging.getLogger("qemu_panthor.vfio_user.server")

Reply = tuple[int, int, bytes]  # flags, errno, payload


class DmaRequests(DmaPort):
    """One connection's outstanding DMA_READ/DMA_WRITE requests, by message id."""

    def __init__(
        self, outbox: Outbox, maps: DmaMaps, loop: asyncio.AbstractEventLoop, *,
        max_data_xfer_size: int, timeout: float,
    ) -> None:
        self.outbox = outbox
        self.maps = maps
        self.loop = loop
        self.max_data_xfer_size = max_data_xfer_size
        self.timeout = timeout
        self.client_max_xfer = P.DEFAULT_MAX_DATA_XFER  # set by VERSION
        self.pending: dict[int, asyncio.Future[Reply]] = {}
        self.next_id = 0
        self.closed = False

    def close(self) -> None:
        """The client went: every outstanding request fails."""
        self.closed = True
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError("vfio-user client disconnected"))

    def on_reply(self, mid: int, cmd: int, flags: int, err: int, payload: bytes) -> None:
        """A reply from the client: completes the request with that id."""
        fut = self.pending.pop(mid, None)
        if fut is None:
            log.info("vfio-user: unexpected reply id=%d command=%d", mid, cmd)
            return
        if not fut.done():
            fut.set_result((flags, err, payload))

    async def _request(self, cmd: int, payload: bytes) -> Reply:
        if self.closed:
            raise ConnectionResetError("vfio-user client disconnected")
        mid = self.next_id
        self.next_id = (mid + 1) & 0xFFFF
        fut: asyncio.Future[Reply] = self.loop.create_future()
        self.pending[mid] = fut
        self.outbox.send(P.HDR.pack(mid, cmd, 16 + len(payload), 0, 0) + payload)
        try:
            return await asyncio.wait_for(fut, self.timeout)
        finally:
            self.pending.pop(mid, None)

    def _chunks(self, addr: int, size: int) -> list[tuple[int, int]]:
        step = max(1, min(self.client_max_xfer, self.max_data_xfer_size))
        return [(addr + o, min(step, size - o)) for o in range(0, size, step)]

    async def dma_read(self, addr: int, size: int) -> bytes:
        if self.maps.message_window(addr, size) is None:
            raise BusError(addr, size, False)
        out = bytearray()
        for a, n in self._chunks(addr, size):
            try:
                flags, _err, payload = await self._request(
                    P.Command.DMA_READ, P.DmaAccess.build({"address": a, "count": n, "data": b""})
                )
            except (TimeoutError, ConnectionError) as e:
                raise BusError(a, n, False) from e
            if flags & P.MsgFlags.ERROR or len(payload) != 16 + n:
                raise BusError(a, n, False)
            out += payload[16:]
        return bytes(out)

    async def dma_write(self, addr: int, data: bytes) -> None:
        if self.maps.message_window(addr, len(data)) is None:
            raise BusError(addr, len(data), True)
        for a, n in self._chunks(addr, len(data)):
            chunk = data[a - addr : a - addr + n]
            try:
                flags, _err, _payload = await self._request(
                    P.Command.DMA_WRITE, P.DmaAccess.build({"address": a, "count": n,
                                                            "data": chunk})
                )
            except (TimeoutError, ConnectionError) as e:
                raise BusError(a, n, True) from e
            if flags & P.MsgFlags.ERROR:
                raise BusError(a, n, True)

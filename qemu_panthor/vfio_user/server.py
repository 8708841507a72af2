"""asyncio vfio-user server: one client at a time, one :class:`PciFunction`.

The server listens (a socket path, or an inherited fd) and serves each accepted client with a
:class:`~.connection.Connection` until it disconnects; then it accepts the next one. Device
state survives a disconnect, as the specification asks. Module map (docs/vfio-user.md):
``connection`` (framing, fds, dispatch, fast path), ``outbox`` (sends), ``version``,
``region_commands``, ``irq_commands``, ``dma_commands`` (the message families),
``dma_requests`` (server -> client DMA), ``irq``, ``dma``, ``pci``, ``protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat

from . import protocol as P
from .connection import Connection
from .errors import ProtocolError
from .pci import PciFunction
from .stats import ServerStats

__all__ = ["DEFAULT_MAX_DATA_XFER", "DEFAULT_MAX_MSG_FDS", "Connection", "ProtocolError",
           "ServerStats", "VfioUserServer"]

DEFAULT_MAX_DATA_XFER = P.DEFAULT_MAX_DATA_XFER
DEFAULT_MAX_MSG_FDS = 16

log = logging.getLogger(__name__)


class VfioUserServer:
    """Serve ``device`` to vfio-user clients, one at a time.

    ``await serve_path(path)`` / ``await serve_fd(fd)`` accept clients until :meth:`close`
    (``once=True``: return when the first client disconnects). ``serve_connection(sock)``
    serves an already-connected socket (e.g. one end of a socketpair).
    """

    def __init__(
        self,
        device: PciFunction,
        *,
        trace: bool = False,
        max_data_xfer_size: int = DEFAULT_MAX_DATA_XFER,
        max_msg_fds: int = DEFAULT_MAX_MSG_FDS,
        dma_timeout: float = 5.0,
    ) -> None:
        self.device = device
        self.trace = trace
        self.max_data_xfer_size = max_data_xfer_size
        self.max_msg_fds = max_msg_fds
        self.max_msg_size = P.HEADER_SIZE + P.REGION_ACCESS_FIXED + max_data_xfer_size
        self.dma_timeout = dma_timeout
        self.stats = ServerStats()
        self.connection: Connection | None = None
        self._listener: socket.socket | None = None
        self._pending_conn: socket.socket | None = None
        self._path: str | None = None
        self._closed = asyncio.Event()
        self._accept_failed = False

    # -- listening -----------------------------------------------------------------------
    async def listen_path(self, path: str | os.PathLike[str]) -> None:
        """Bind and listen on a UNIX socket path (a stale socket file is replaced)."""
        path = os.fspath(path)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(path)
            sock.listen(4)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._listener = sock
        self._path = path

    async def listen_fd(self, fd: int) -> bool:
        """Adopt an inherited socket fd; True if it is a listening socket."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            self._listener = sock
            return True
        self._pending_conn = sock
        return False

    async def serve_path(self, path: str | os.PathLike[str], *, once: bool = False) -> None:
        await self.listen_path(path)
        await self.serve(once=once)

    async def serve_fd(self, fd: int, *, once: bool = False) -> None:
        """Serve on an inherited fd: a listening socket, or one connected socket."""
        if await self.listen_fd(fd):
            await self.serve(once=once)
        elif self._pending_conn is not None:
            sock, self._pending_conn = self._pending_conn, None
            await self.serve_connection(sock)

    async def serve(self, *, once: bool = False) -> None:
        """Accept and serve clients one at a time until :meth:`close` (or one, if ``once``)."""
        if self._listener is None:
            raise RuntimeError("not listening")
        loop = asyncio.get_running_loop()
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            while not self._closed.is_set():
                accept = asyncio.ensure_future(loop.sock_accept(self._listener))
                await asyncio.wait({accept, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not accept.done():
                    accept.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await accept
                    break
                try:
                    conn_sock, _ = accept.result()
                except OSError as e:  # e.g. EMFILE: keep listening, say so once
                    if not self._accept_failed:
                        log.warning("vfio-user accept failed: %s", e.strerror or e)
                    self._accept_failed = True
                    await asyncio.sleep(0.1)
                    continue
                self._accept_failed = False
                await self.serve_connection(conn_sock)
                if once:
                    break
        finally:
            closed.cancel()

    async def serve_connection(self, sock: socket.socket) -> None:
        """Serve one connected socket until the client disconnects (or :meth:`close`)."""
        conn = Connection(self, sock)
        self.connection = conn
        self.stats.connections += 1
        try:
            await conn.run()
        finally:
            conn.close()
            if self.connection is conn:
                self.connection = None

    async def close(self) -> None:
        """Drop the current client, stop listening, remove the socket file we created."""
        self._closed.set()
        if self.connection is not None:
            self.connection.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None
        await asyncio.sleep(0)

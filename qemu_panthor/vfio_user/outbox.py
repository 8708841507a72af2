"""The server's side of the stream: replies and server requests, in order, with their fds.

A message is sent at once when the socket takes it; what the socket does not take is queued
and written when the loop reports the socket writable, so nothing ever blocks the loop. Fds
(SCM_RIGHTS) go with the first byte of their message.
"""

from __future__ import annotations

import array
import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable, Sequence

log = logging.getLogger("qemu_panthor.vfio_user.server")

_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)


class _Chunk:
    """The unsent tail of one message and the fds still to go with it."""

    __slots__ = ("data", "fds")

    def __init__(self, data: memoryview, fds: list[int]) -> None:
        self.data = data
        self.fds = fds


class Outbox:
    """Ordered, non-blocking sends on one connected socket.

    ``on_error`` is called once when the socket fails (the connection then closes);
    ``on_drained`` (if set) when a backlog has been fully written. The fds queued here are
    borrowed (the device's BAR memfds), never closed by the outbox.
    """

    def __init__(
        self,
        sock: socket.socket,
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.fileno = sock.fileno()
        self.loop = loop
        self._sock_send = sock.send
        self.queue: deque[_Chunk] = deque()
        self.queued_bytes = 0
        self.writer_armed = False
        self.closed = False
        self.on_error = on_error
        self.on_drained: Callable[[], None] | None = None
        self.attempts = 0  # messages handed to send/send_fast (the reader's "did we reply?")

    def close(self) -> None:
        """Drop what is queued and stop watching the socket (the owner closes it)."""
        if self.closed:
            return
        self.closed = True
        if self.writer_armed:
            self.writer_armed = False
            try:
                self.loop.remove_writer(self.fileno)
            except (OSError, ValueError, RuntimeError):  # loop already closed or fd gone
                pass
        self.queue.clear()
        self.queued_bytes = 0
        self.on_error = None  # no reference back to the owner once closed
        self.on_drained = None

    def send_fast(self, data: bytes) -> None:
        """Send a small reply without fds (hot path)."""
        self.attempts += 1
        if self.queue or self.closed:
            self.send(data)
            return
        try:
            n = self._sock_send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self._failed(e)
            return
        if n < len(data):
            self._enqueue(memoryview(data)[n:], [])

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send one whole message; ``fds`` travel with its first byte."""
        self.attempts += 1
        if self.closed:
            return
        if self.queue:
            self._enqueue(memoryview(data), list(fds))
            return
        n = self._send_some(memoryview(data), fds)
        if n is None:
            return
        if n < len(data):
            self._enqueue(memoryview(data)[n:], [] if n else list(fds))

    def _enqueue(self, data: memoryview, fds: list[int]) -> None:
        self.queue.append(_Chunk(data, fds))
        self.queued_bytes += len(data)
        if not self.writer_armed:
            self.writer_armed = True
            self.loop.add_writer(self.fileno, self._on_writable)

    def _send_some(self, data: memoryview, fds: Sequence[int]) -> int | None:
        """Bytes the socket took (0 if full), or None if it failed."""
        try:
            if fds:
                anc = [(_SOL_SOCKET, _SCM_RIGHTS, array.array("i", fds))]
                return self.sock.sendmsg([data], anc)
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            self._failed(e)
            return None

    def _failed(self, e: OSError) -> None:
        log.info("vfio-user send failed: %s", e)
        on_error = self.on_error
        self.close()
        if on_error is not None:
            on_error()

    def _on_writable(self) -> None:
        while self.queue and not self.closed:
            entry = self.queue[0]
            n = self._send_some(entry.data, entry.fds)
            if not n:  # full again, or failed (then closed)
                return
            self.queued_bytes -= n
            if n < len(entry.data):
                entry.data = entry.data[n:]
                entry.fds = []
                return
            self.queue.popleft()
        if self.writer_armed and not self.closed:
            self.writer_armed = False
            self.loop.remove_writer(self.fileno)
            if self.on_drained is not None:
                self.on_drained()

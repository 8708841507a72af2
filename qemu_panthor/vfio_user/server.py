"""asyncio vfio-user server: one client at a time, one :class:`PciFunction`.

Messages are read with ``recvmsg`` (file descriptors arrive as SCM_RIGHTS ancillary data) from
a non-blocking socket watched by ``loop.add_reader``; every client command is handled
synchronously in that callback, in arrival order, so replies never wait on anything (in
particular never on a DMA_READ reply from the client). REGION_READ/WRITE to BARs take a fast
path with precompiled structs. Bad messages get an ERROR reply carrying an errno and the
connection keeps serving.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import struct
from collections import Counter, deque
from dataclasses import dataclass, field

from ..memory import BusError
from . import protocol as P
from .dma import DmaError, DmaMaps, close_fds
from .irq import IrqRouter
from .pci import DmaPort, PciFunction

log = logging.getLogger(__name__)
tlog = logging.getLogger("qemu_panthor.vfio_user.trace")

_REPLY = int(P.MsgFlags.REPLY)
_NO_REPLY = int(P.MsgFlags.NO_REPLY)
_ERROR_REPLY = int(P.MsgFlags.REPLY | P.MsgFlags.ERROR)
_REGION_READ = int(P.Command.REGION_READ)
_REGION_WRITE = int(P.Command.REGION_WRITE)
_HDR = P.HDR
_HDR_RW = P.HDR_RW
_RW = P.RW
_HDR_RW_UNPACK = P.HDR_RW.unpack_from
_HDR_RW_VALUE_PACK = {n: st.pack for n, st in P.HDR_RW_VALUE.items()}
_VALUE_S = {n: struct.Struct(f) for n, f in ((1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q"))}
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}

DEFAULT_MAX_DATA_XFER = 1 << 20
DEFAULT_MAX_MSG_FDS = 16
PGSIZES = 4096


class ProtocolError(Exception):
    """A command that fails with ``errno``; becomes an ERROR reply."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


@dataclass
class ServerStats:
    """What the server has seen, across connections (for tests and diagnostics)."""

    connections: int = 0
    commands: Counter[int] = field(default_factory=Counter)  # except the fast path below
    bar_reads: int = 0  # 1/2/4/8-byte REGION_READ/WRITE to plain BARs (fast path)
    bar_writes: int = 0
    errors: Counter[int] = field(default_factory=Counter)  # errno -> count
    dma_maps_with_fd: int = 0
    dma_maps_without_fd: int = 0
    resets: int = 0


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
                conn_sock, _ = accept.result()
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


class Connection(DmaPort):
    """One client session: framing, fds, dispatch, IRQ routing and DMA windows."""

    def __init__(self, server: VfioUserServer, sock: socket.socket) -> None:
        self.server = server
        self.dev = dev = server.device
        self.trace = server.trace
        self.stats = server.stats
        self.sock = sock
        sock.setblocking(False)
        self._sock_send = sock.send
        self._sock_recvmsg_into = sock.recvmsg_into
        self.fileno = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()
        cap = server.max_msg_size + 65536
        self.cap = cap
        self.buf = bytearray(cap)
        self.mv = memoryview(self.buf)
        self.iov0 = [self.mv]
        self.start = 0
        self.end = 0
        self.base = 0  # stream offset of buf[0]
        self.anc_size = socket.CMSG_SPACE(server.max_msg_fds * 4)
        # (stream offset of the last byte of the recvmsg chunk the fds came with, fds, truncated)
        self.fdq: deque[tuple[int, list[int], bool]] = deque()
        self.drain = 0
        self.drain_end = 0
        self.wq: deque[list] = deque()  # [memoryview, fds]
        self.writer_armed = False
        self.negotiated = False
        self.client_max_xfer = DEFAULT_MAX_DATA_XFER
        self.client_max_fds = 1
        self.pending: dict[int, asyncio.Future[tuple[int, int, bytes]]] = {}
        self.next_id = 0
        self.closed = False
        self.router = IrqRouter(dev, trace=self.trace)
        self.dma = DmaMaps(dev.dma)
        # Fast path: BAR index -> size if plain (no sparse areas), else 0.
        self.fast_bars = [0] * 6
        for i, spec in dev.bars.items():
            if not spec.mmap_areas:
                self.fast_bars[i] = spec.size
        self.handlers = {
            P.Command.VERSION: self.h_version,
            P.Command.DMA_MAP: self.h_dma_map,
            P.Command.DMA_UNMAP: self.h_dma_unmap,
            P.Command.DEVICE_GET_INFO: self.h_device_get_info,
            P.Command.DEVICE_GET_REGION_INFO: self.h_get_region_info,
            P.Command.DEVICE_GET_IRQ_INFO: self.h_get_irq_info,
            P.Command.DEVICE_SET_IRQS: self.h_set_irqs,
            P.Command.REGION_READ: self.h_region_read,
            P.Command.REGION_WRITE: self.h_region_write,
            P.Command.REGION_WRITE_MULTI: self.h_region_write_multi,
            P.Command.DEVICE_RESET: self.h_device_reset,
        }
        dev.attach_irq_sink(self.router)
        dev.attach_dma_port(self)

    # -- lifetime --------------------------------------------------------------------------
    async def run(self) -> None:
        self.loop.add_reader(self.fileno, self.on_readable)
        await self.done

    def close(self) -> None:
        """Release everything the client gave us; device state is kept."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.fileno)
        if self.writer_armed:
            with contextlib.suppress(Exception):
                self.loop.remove_writer(self.fileno)
        self.sock.close()
        for _, fds, _ in self.fdq:
            close_fds(fds)
        self.fdq.clear()
        self.wq.clear()  # only our own fds (BAR memfds) can be queued: nothing to close
        self.router.detach()
        self.dma.unmap_all()
        if self.dev._irq_sink is self.router:
            self.dev.attach_irq_sink(None)
        if self.dev._dma_port is self:
            self.dev.attach_dma_port(None)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError("vfio-user client disconnected"))
        self.pending.clear()
        if not self.done.done():
            self.done.set_result(None)

    # -- receive -----------------------------------------------------------------------------
    def on_readable(self) -> None:
        if self.closed:
            return
        start, end = self.start, self.end
        if end == start:
            self.base += start
            self.start = self.end = start = end = 0
        elif self.cap - end < 65536:
            end -= start
            self.buf[:end] = self.buf[start : self.end]
            self.base += start
            self.start, self.end, start = 0, end, 0
        try:
            n, anc, flags, _ = self._sock_recvmsg_into(
                self.iov0 if end == 0 else [self.mv[end:]], self.anc_size
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.info("vfio-user connection error: %s", e)
            self.close()
            return
        if anc or flags & _MSG_CTRUNC:
            fds: list[int] = []
            for level, typ, data in anc:
                if level == _SOL_SOCKET and typ == _SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(data[: len(data) - len(data) % a.itemsize])
                    fds.extend(a)
            self.fdq.append((self.base + end + max(n, 1) - 1, fds, bool(flags & _MSG_CTRUNC)))
        if n == 0:
            self.close()
            return
        self.end = end + n
        self.process()

    def take_fds(self, msg_end: int) -> tuple[list[int], bool]:
        """Fds that arrived with bytes before stream offset ``msg_end``."""
        fds: list[int] = []
        trunc = False
        q = self.fdq
        while q and q[0][0] < msg_end:
            _, f, t = q.popleft()
            fds.extend(f)
            trunc = trunc or t
        return fds, trunc

    def process(self) -> None:
        buf = self.buf
        hdr_unpack = _HDR.unpack_from
        while not self.closed:
            s = self.start
            avail = self.end - s
            if self.drain:
                take = min(self.drain, avail)
                self.start = s + take
                self.drain -= take
                if self.drain:
                    return
                close_fds(self.take_fds(self.drain_end)[0])
                continue
            if avail < 32:
                if avail < 16:
                    return
                mid, cmd, size, flags, _ = hdr_unpack(buf, s)
            else:
                mid, cmd, size, flags, _, off, region, count = _HDR_RW_UNPACK(buf, s)
                # -- hot path: 1/2/4/8-byte accesses to plain BARs, no fds pending ---------
                # (inlined: this is most of the traffic while the driver probes and runs)
                if (
                    cmd == _REGION_READ
                    and size == 32
                    and not flags & 0xF
                    and region < 6
                    and count in _MASK
                    and off + count <= self.fast_bars[region]
                    and not self.fdq
                    and self.negotiated
                ):
                    self.start = s + 32
                    self.stats.bar_reads += 1
                    try:
                        value = self.dev.bar_read(region, off, count) & _MASK[count]
                    except Exception:
                        log.exception("bar_read(%d, %#x, %d) failed", region, off, count)
                        self.error(mid, _REGION_READ, flags, errno.EIO, "device read failed")
                        continue
                    if self.trace:
                        tlog.debug("read  BAR%d+%#x/%d -> %#x", region, off, count, value)
                    if not flags & _NO_REPLY:
                        self.send_fast(
                            _HDR_RW_VALUE_PACK[count](
                                mid, _REGION_READ, 32 + count, _REPLY, 0, off, region, count, value
                            )
                        )
                    continue
                if (
                    cmd == _REGION_WRITE
                    and size == 32 + count
                    and size <= avail
                    and not flags & 0xF
                    and region < 6
                    and count in _MASK
                    and off + count <= self.fast_bars[region]
                    and not self.fdq
                    and self.negotiated
                ):
                    self.start = s + size
                    self.fast_write(mid, flags, off, region, count, s + 32)
                    continue
            if size < 16:
                self.start = s + 16
                close_fds(self.take_fds(self.base + s + 16)[0])
                self.error(mid, cmd, flags, errno.EINVAL, f"message size {size} < header")
                continue
            if size > self.server.max_msg_size:
                self.drain = size
                self.drain_end = self.base + s + size
                self.error(mid, cmd, flags, errno.E2BIG, f"message of {size} bytes too large")
                continue
            if avail < size:
                return
            self.start = s + size
            fds, trunc = self.take_fds(self.base + s + size)
            self.dispatch(mid, cmd, size, flags, s, fds, trunc)

    # -- hot path ---------------------------------------------------------------------------
    def fast_write(
        self, mid: int, flags: int, off: int, region: int, count: int, data_at: int
    ) -> None:
        self.stats.bar_writes += 1
        value = _VALUE_S[count].unpack_from(self.buf, data_at)[0]
        if self.trace:
            tlog.debug("write BAR%d+%#x/%d <- %#x", region, off, count, value)
        try:
            self.dev.bar_write(region, off, count, value)
        except Exception:
            log.exception("bar_write(%d, %#x, %d) failed", region, off, count)
            self.error(mid, _REGION_WRITE, flags, errno.EIO, "device write failed")
            return
        if not flags & _NO_REPLY:
            self.send_fast(_HDR_RW.pack(mid, _REGION_WRITE, 32, _REPLY, 0, off, region, count))

    # -- general dispatch -------------------------------------------------------------------
    def dispatch(
        self, mid: int, cmd: int, size: int, flags: int, s: int, fds: list[int], trunc: bool
    ) -> None:
        mtype = flags & P.TYPE_MASK
        payload = bytes(self.buf[s + 16 : s + size])
        if mtype == _REPLY:
            close_fds(fds)
            self.on_reply(mid, cmd, flags, _HDR.unpack_from(self.buf, s)[4], payload)
            return
        self.server.stats.commands[cmd] += 1
        if self.trace:
            tlog.debug("cmd %s id=%d size=%d fds=%d", _cmd_name(cmd), mid, size, len(fds))
        try:
            if mtype != 0:
                raise ProtocolError(errno.EINVAL, f"unknown message type {mtype}")
            if trunc:
                raise ProtocolError(errno.EINVAL, "too many file descriptors")
            handler = self.handlers.get(cmd)  # type: ignore[call-overload]
            if handler is None:
                raise ProtocolError(errno.ENOTSUP, f"unsupported command {cmd}")
            if not self.negotiated and cmd != P.Command.VERSION:
                raise ProtocolError(errno.EINVAL, "command before VERSION negotiation")
            result = handler(payload, fds)
        except ProtocolError as e:
            close_fds(fds)
            self.error(mid, cmd, flags, e.errno, str(e))
            return
        except Exception as e:  # a device-model bug must not kill the connection
            close_fds(fds)
            log.exception("vfio-user command %s failed", _cmd_name(cmd))
            self.error(mid, cmd, flags, errno.EIO, f"internal error: {e}")
            return
        if flags & _NO_REPLY:
            return
        if isinstance(result, tuple):
            reply, out_fds = result
        else:
            reply, out_fds = result, ()
        self.send(_HDR.pack(mid, cmd, 16 + len(reply), _REPLY, 0) + reply, out_fds)

    def error(self, mid: int, cmd: int, flags: int, err: int, why: str) -> None:
        self.server.stats.errors[err] += 1
        if log.isEnabledFor(logging.INFO):
            log.info("vfio-user %s id=%d: %s (%s)", _cmd_name(cmd), mid, why,
                     errno.errorcode.get(err, err))
        if not flags & _NO_REPLY:
            self.send(_HDR.pack(mid, cmd, 16, _ERROR_REPLY, err))

    # -- send ---------------------------------------------------------------------------------
    def send_fast(self, data: bytes) -> None:
        """Send a small reply without fds (hot path)."""
        if self.wq or self.closed:
            self.send(data)
            return
        try:
            n = self._sock_send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            log.info("vfio-user send failed: %s", e)
            self.close()
            return
        if n < len(data):
            self.wq.append([memoryview(data)[n:], []])
            self._arm_writer()

    def send(self, data: bytes, fds: tuple[int, ...] | list[int] = ()) -> None:
        if self.closed:
            return
        if self.wq:
            self.wq.append([memoryview(data), list(fds)])
            return
        n = self._send_some(memoryview(data), fds)
        if n is None:
            return
        if n < len(data):
            self.wq.append([memoryview(data)[n:], [] if n else list(fds)])
            self._arm_writer()

    def _send_some(self, data: memoryview, fds: tuple[int, ...] | list[int]) -> int | None:
        try:
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                return self.sock.sendmsg([data], anc)
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            log.info("vfio-user send failed: %s", e)
            self.close()
            return None

    def _arm_writer(self) -> None:
        if not self.writer_armed:
            self.writer_armed = True
            self.loop.add_writer(self.fileno, self._on_writable)

    def _on_writable(self) -> None:
        while self.wq and not self.closed:
            entry = self.wq[0]
            n = self._send_some(entry[0], entry[1])
            if n is None:
                return
            if n == 0:
                return
            if n < len(entry[0]):
                entry[0] = entry[0][n:]
                entry[1] = []
                return
            self.wq.popleft()
        if self.writer_armed and not self.closed:
            self.writer_armed = False
            self.loop.remove_writer(self.fileno)

    # -- commands -------------------------------------------------------------------------------
    def h_version(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "VERSION carries no fds")
        if self.negotiated:
            raise ProtocolError(errno.EINVAL, "VERSION already negotiated")
        if len(payload) < P.VERSION_FIXED:
            raise ProtocolError(errno.EINVAL, "short VERSION")
        msg = P.Version.parse(payload)
        if msg.major != 0:
            raise ProtocolError(errno.ENOTSUP, f"unsupported major version {msg.major}")
        caps: dict = {}
        if msg.data:
            raw = msg.data
            if raw[-1] != 0:
                raise ProtocolError(errno.EINVAL, "VERSION JSON is not NUL-terminated")
            try:
                obj = json.loads(raw[:-1].decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ProtocolError(errno.EINVAL, f"bad VERSION JSON: {e}") from e
            if not isinstance(obj, dict):
                raise ProtocolError(errno.EINVAL, "VERSION JSON is not an object")
            caps = obj.get("capabilities", {})
            if not isinstance(caps, dict):
                raise ProtocolError(errno.EINVAL, "capabilities is not an object")
        max_fds = caps.get("max_msg_fds", 1)
        max_xfer = caps.get("max_data_xfer_size", DEFAULT_MAX_DATA_XFER)
        for name, v in (("max_msg_fds", max_fds), ("max_data_xfer_size", max_xfer)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ProtocolError(errno.EINVAL, f"bad capability {name}={v!r}")
        if max_xfer == 0:
            raise ProtocolError(errno.EINVAL, "max_data_xfer_size is 0")
        self.client_max_fds = max_fds
        self.client_max_xfer = max_xfer
        self.negotiated = True
        reply = self._version_reply(len(payload))
        return reply

    def _version_reply(self, limit: int) -> bytes:
        """Our VERSION payload, capabilities trimmed so it is no longer than the request's."""
        ours: list[tuple[str, object]] = [
            ("write_multiple", True),
            ("max_msg_fds", self.server.max_msg_fds),
            ("max_data_xfer_size", self.server.max_data_xfer_size),
            ("pgsizes", PGSIZES),
            ("max_dma_maps", self.dma.max_maps),
        ]
        head = P.Version.build({"major": 0, "minor": 0, "data": b""})
        for n in range(len(ours), -1, -1):
            doc = json.dumps({"capabilities": dict(ours[:n])}, separators=(",", ":"))
            out = head + doc.encode() + b"\0"
            if len(out) <= limit:
                return out
        return head

    def h_dma_map(self, payload: bytes, fds: list[int]) -> bytes:
        if len(payload) < P.DmaMap.sizeof():
            raise ProtocolError(errno.EINVAL, "short DMA_MAP")
        m = P.DmaMap.parse(payload)
        F = P.DmaMapFlags
        if m.argsz < P.DmaMap.sizeof() or m.flags & ~0xF:
            raise ProtocolError(errno.EINVAL, f"bad DMA_MAP argsz/flags {m.argsz}/{m.flags:#x}")
        if len(fds) > 1:
            raise ProtocolError(errno.EINVAL, "DMA_MAP with more than one fd")
        mode = m.flags & (F.MODE_MMAP | F.MODE_FILE_IO)
        if mode == F.MODE_MMAP | F.MODE_FILE_IO or (mode and not fds):
            raise ProtocolError(errno.EINVAL, "DMA_MAP access mode needs exactly one fd")
        fd = fds[0] if fds else None
        try:
            self.dma.map(m.address, m.size, m.flags, m.offset, fd)
        except DmaError as e:
            raise ProtocolError(e.errno, str(e)) from e
        finally:
            close_fds(fds)  # mmap holds its own reference
        if fd is None:
            self.server.stats.dma_maps_without_fd += 1
        else:
            self.server.stats.dma_maps_with_fd += 1
        if self.trace:
            tlog.debug("DMA_MAP %#x+%#x flags=%#x fd=%s", m.address, m.size, m.flags, fd)
        return b""

    def h_dma_unmap(self, payload: bytes, fds: list[int]) -> bytes:
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
            self.dma.unmap_all()
        else:
            try:
                self.dma.unmap(u.address, u.size)
            except DmaError as e:
                raise ProtocolError(e.errno, str(e)) from e
        return payload[: P.DmaUnmap.sizeof()]

    def h_device_get_info(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "DEVICE_GET_INFO carries no fds")
        if len(payload) < 4:
            raise ProtocolError(errno.EINVAL, "short DEVICE_GET_INFO")
        argsz = int.from_bytes(payload[:4], "little")
        if argsz < P.DeviceInfo.sizeof():
            raise ProtocolError(errno.EINVAL, f"DEVICE_GET_INFO argsz {argsz} too small")
        return P.DeviceInfo.build(
            {
                "argsz": P.DeviceInfo.sizeof(),
                "flags": P.DeviceFlags.RESET | P.DeviceFlags.PCI,
                "num_regions": P.NUM_PCI_REGIONS,
                "num_irqs": P.NUM_PCI_IRQS,
            }
        )

    def h_get_region_info(self, payload: bytes, fds: list[int]) -> bytes | tuple[bytes, list]:
        if fds:
            raise ProtocolError(errno.EINVAL, "GET_REGION_INFO carries no fds")
        fixed = P.RegionInfo.sizeof()
        if len(payload) < 12:
            raise ProtocolError(errno.EINVAL, "short GET_REGION_INFO")
        payload = payload.ljust(fixed, b"\0")
        q = P.RegionInfo.parse(payload)
        if q.argsz < fixed:
            raise ProtocolError(errno.EINVAL, f"GET_REGION_INFO argsz {q.argsz} too small")
        if q.index >= P.NUM_PCI_REGIONS:
            raise ProtocolError(errno.EINVAL, f"no region {q.index}")
        R = P.RegionFlags
        flags, size, caps, out_fds = 0, 0, b"", []
        if q.index == P.PciRegion.CONFIG:
            flags, size = R.READ | R.WRITE, self.dev.config_size
        elif q.index < 6 and q.index in self.dev.bars:
            spec = self.dev.bars[q.index]
            flags, size = R.READ | R.WRITE, spec.size
            if spec.mmap_areas:
                flags |= R.MMAP
                caps = P.SparseMmapCap.build(
                    {
                        "header": {
                            "id": P.REGION_INFO_CAP_SPARSE_MMAP,
                            "version": P.REGION_INFO_CAP_SPARSE_MMAP_VERSION,
                            "next": 0,
                        },
                        "nr_areas": len(spec.mmap_areas),
                        "reserved": 0,
                        "areas": [{"offset": o, "size": n} for o, n in spec.mmap_areas],
                    }
                )
                fd = self.dev.bar_memfd(q.index)
                if fd is not None:
                    out_fds = [fd]
        needed = fixed + len(caps)
        if caps and q.argsz < needed:
            # vfio argsz negotiation: say how much is needed, send no caps (and no fd).
            info = P.RegionInfo.build(
                {"argsz": needed, "flags": flags, "index": q.index, "cap_offset": 0,
                 "size": size, "offset": 0}
            )
            return info
        if caps:
            flags |= R.CAPS
        info = P.RegionInfo.build(
            {"argsz": needed, "flags": flags, "index": q.index,
             "cap_offset": fixed if caps else 0, "size": size, "offset": 0}
        )
        return info + caps, out_fds

    def h_get_irq_info(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "GET_IRQ_INFO carries no fds")
        if len(payload) < P.IrqInfo.sizeof():
            raise ProtocolError(errno.EINVAL, "short GET_IRQ_INFO")
        q = P.IrqInfo.parse(payload)
        if q.argsz < P.IrqInfo.sizeof():
            raise ProtocolError(errno.EINVAL, "GET_IRQ_INFO argsz too small")
        if q.index >= P.NUM_PCI_IRQS:
            raise ProtocolError(errno.EINVAL, f"no IRQ index {q.index}")
        I = P.IrqInfoFlags  # noqa: E741
        flags, count = I.EVENTFD, 0
        if q.index == P.PciIrq.INTX:
            count = self.router.intx_count
            flags |= I.MASKABLE | I.AUTOMASKED
        elif q.index == P.PciIrq.MSIX:
            count = self.router.msix_count  # no NORESIZE: QEMU enables vectors one by one
        elif q.index == P.PciIrq.ERR:
            count = self.router.err_count
        return P.IrqInfo.build({"argsz": 16, "flags": flags, "index": q.index, "count": count})

    def h_set_irqs(self, payload: bytes, fds: list[int]) -> bytes:
        if len(payload) < P.IRQ_SET_FIXED:
            raise ProtocolError(errno.EINVAL, "short SET_IRQS")
        q = P.IrqSet.parse(payload)
        F = P.IrqSetFlags
        data, action = q.flags & P.DATA_MASK, q.flags & P.ACTION_MASK
        if (
            q.argsz < P.IRQ_SET_FIXED
            or q.flags & ~(P.DATA_MASK | P.ACTION_MASK)
            or data.bit_count() != 1
            or action.bit_count() != 1
        ):
            raise ProtocolError(errno.EINVAL, f"bad SET_IRQS argsz/flags {q.argsz}/{q.flags:#x}")
        if q.index >= P.NUM_PCI_IRQS:
            raise ProtocolError(errno.EINVAL, f"no IRQ index {q.index}")
        r = self.router
        n = {P.PciIrq.INTX: r.intx_count, P.PciIrq.MSIX: r.msix_count,
             P.PciIrq.ERR: r.err_count}.get(q.index, 0)
        if data != F.DATA_EVENTFD and fds:
            raise ProtocolError(errno.EINVAL, "fds without DATA_EVENTFD")
        if q.count == 0:
            if fds or q.start:
                raise ProtocolError(errno.EINVAL, "SET_IRQS count 0 with start or fds")
            if action == F.ACTION_TRIGGER and data in (F.DATA_NONE, F.DATA_EVENTFD):
                if q.index == P.PciIrq.INTX:
                    r.intx_disable()
                elif q.index == P.PciIrq.MSIX:
                    r.msix_disable()
                elif q.index == P.PciIrq.ERR:
                    r.err_set_trigger(None)
                self._trace_irqs(q)
            return b""
        if q.start + q.count > n:
            raise ProtocolError(
                errno.EINVAL, f"IRQ {q.index}: {q.start}+{q.count} exceeds count {n}"
            )
        if data == F.DATA_EVENTFD:
            if action != F.ACTION_TRIGGER:
                raise ProtocolError(errno.ENOTSUP, "only trigger eventfds are supported")
            if fds and len(fds) != q.count:
                raise ProtocolError(errno.EINVAL, f"{len(fds)} fds for count {q.count}")
            for i in range(q.count):
                fd = fds[i] if fds else None
                if q.index == P.PciIrq.INTX:
                    r.intx_set_trigger(fd)
                elif q.index == P.PciIrq.ERR:
                    r.err_set_trigger(fd)
                else:
                    r.msix_set_trigger(q.start + i, fd)
            self._trace_irqs(q)
            return b""
        if data == F.DATA_BOOL:
            if len(q.data) < q.count:
                raise ProtocolError(errno.EINVAL, "SET_IRQS bool array too short")
            selected = [q.start + i for i in range(q.count) if q.data[i]]
        else:
            selected = list(range(q.start, q.start + q.count))
        if q.index == P.PciIrq.ERR:
            if action == F.ACTION_TRIGGER and selected:
                r.err_trigger()
            self._trace_irqs(q)
            return b""
        intx = q.index == P.PciIrq.INTX
        for v in selected:
            if action == F.ACTION_MASK:
                r.intx_mask() if intx else r.msix_mask(v)
            elif action == F.ACTION_UNMASK:
                r.intx_unmask() if intx else r.msix_unmask(v)
            else:
                r.intx_trigger() if intx else r.msix_trigger(v)
        self._trace_irqs(q)
        return b""

    def _trace_irqs(self, q: object) -> None:
        if self.trace:
            tlog.debug("SET_IRQS %s", q)

    # -- region access (general path) ---------------------------------------------------------
    def _region_size(self, region: int) -> int:
        if region == P.PciRegion.CONFIG:
            return self.dev.config_size
        if region < 6:
            spec = self.dev.bars.get(region)
            return spec.size if spec else 0
        if region < P.NUM_PCI_REGIONS:
            return 0
        raise ProtocolError(errno.EINVAL, f"no region {region}")

    def _check_access(self, off: int, region: int, count: int) -> None:
        size = self._region_size(region)
        if count == 0 or count > self.server.max_data_xfer_size:
            raise ProtocolError(errno.EINVAL, f"bad access count {count}")
        if off + count > size:
            raise ProtocolError(
                errno.EINVAL, f"access {off:#x}+{count} beyond region {region} ({size:#x})"
            )

    def _sparse(self, region: int, off: int, count: int) -> memoryview | None:
        spec = self.dev.bars.get(region) if region < 6 else None
        if spec is None:
            return None
        for a_off, a_size in spec.mmap_areas:
            if a_off <= off and off + count <= a_off + a_size:
                return self.dev.bar_memory(region)[off : off + count]
        return None

    @staticmethod
    def _pieces(off: int, count: int) -> list[tuple[int, int]]:
        step = 4 if off % 4 == 0 and count % 4 == 0 else 1
        return [(off + i, step) for i in range(0, count, step)]

    def read_region(self, off: int, region: int, count: int) -> bytes:
        self._check_access(off, region, count)
        if region == P.PciRegion.CONFIG:
            data = self.dev.config_read(off, count)
        elif (mem := self._sparse(region, off, count)) is not None:
            data = bytes(mem)
        elif count in _MASK:
            data = (self.dev.bar_read(region, off, count) & _MASK[count]).to_bytes(
                count, "little")
        else:
            data = b"".join(
                (self.dev.bar_read(region, o, n) & _MASK[n]).to_bytes(n, "little")
                for o, n in self._pieces(off, count)
            )
        if self.trace:
            tlog.debug("read  region %d+%#x/%d -> %s", region, off, count, data.hex())
        return data

    def write_region(self, off: int, region: int, data: bytes) -> None:
        count = len(data)
        self._check_access(off, region, count)
        if self.trace:
            tlog.debug("write region %d+%#x/%d <- %s", region, off, count, data.hex())
        if region == P.PciRegion.CONFIG:
            self.dev.config_write(off, data)
        elif (mem := self._sparse(region, off, count)) is not None:
            mem[:] = data
        elif count in _MASK:
            self.dev.bar_write(region, off, count, int.from_bytes(data, "little"))
        else:
            for o, n in self._pieces(off, count):
                self.dev.bar_write(region, o, n, int.from_bytes(data[o - off : o - off + n],
                                                               "little"))

    def h_region_read(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "REGION_READ carries no fds")
        if len(payload) != P.REGION_ACCESS_FIXED:
            raise ProtocolError(errno.EINVAL, "REGION_READ payload must be 16 bytes")
        off, region, count = _RW.unpack_from(payload)
        return payload + self.read_region(off, region, count)

    def h_region_write(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "REGION_WRITE carries no fds")
        if len(payload) < P.REGION_ACCESS_FIXED:
            raise ProtocolError(errno.EINVAL, "short REGION_WRITE")
        off, region, count = _RW.unpack_from(payload)
        if len(payload) != P.REGION_ACCESS_FIXED + count:
            raise ProtocolError(errno.EINVAL, "REGION_WRITE count does not match its data")
        self.write_region(off, region, payload[16:])
        return payload[:16]

    def h_region_write_multi(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "REGION_WRITE_MULTI carries no fds")
        if len(payload) < 8:
            raise ProtocolError(errno.EINVAL, "short REGION_WRITE_MULTI")
        wr_cnt = P.U64.unpack_from(payload)[0]
        if wr_cnt == 0 or 8 + wr_cnt * P.WRITE_MULTI_ENTRY_SIZE != len(payload):
            raise ProtocolError(errno.EINVAL, f"REGION_WRITE_MULTI size/wr_cnt {wr_cnt} mismatch")
        msg = P.WriteMulti.parse(payload)
        for w in msg.wrs:  # validate all before doing any
            if w.count not in _MASK:
                raise ProtocolError(errno.EINVAL, f"write-multi count {w.count} > 8")
            self._check_access(w.offset, w.region, w.count)
        for w in msg.wrs:
            self.write_region(w.offset, w.region, bytes(w.data[: w.count]))
        return payload[:8]

    def h_device_reset(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "DEVICE_RESET carries no fds")
        self.server.stats.resets += 1
        self.dev.reset_config()
        self.dev.reset()
        return b""

    # -- server -> client DMA ---------------------------------------------------------------------
    def on_reply(self, mid: int, cmd: int, flags: int, err: int, payload: bytes) -> None:
        fut = self.pending.pop(mid, None)
        if fut is None:
            log.info("vfio-user: unexpected reply id=%d command=%d", mid, cmd)
            return
        if not fut.done():
            fut.set_result((flags, err, payload))

    async def _request(self, cmd: int, payload: bytes) -> tuple[int, int, bytes]:
        if self.closed:
            raise ConnectionResetError("vfio-user client disconnected")
        mid = self.next_id
        self.next_id = (mid + 1) & 0xFFFF
        fut: asyncio.Future[tuple[int, int, bytes]] = self.loop.create_future()
        self.pending[mid] = fut
        self.send(_HDR.pack(mid, cmd, 16 + len(payload), 0, 0) + payload)
        try:
            return await asyncio.wait_for(fut, self.server.dma_timeout)
        finally:
            self.pending.pop(mid, None)

    def _chunks(self, addr: int, size: int) -> list[tuple[int, int]]:
        step = max(1, min(self.client_max_xfer, self.server.max_data_xfer_size))
        return [(addr + o, min(step, size - o)) for o in range(0, size, step)]

    async def dma_read(self, addr: int, size: int) -> bytes:
        if self.dma.message_window(addr, size) is None:
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
        if self.dma.message_window(addr, len(data)) is None:
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


def _cmd_name(cmd: int) -> str:
    try:
        return P.Command(cmd).name
    except ValueError:
        return f"command {cmd}"

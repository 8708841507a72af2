"""One client session: the receive side of the stream (framing, fds), dispatch, lifetime.

Each readiness callback does one ``recvmsg_into`` into a buffer big enough for the largest
message, then handles every complete message synchronously and in order. SCM_RIGHTS fds belong
to the message holding the last byte of the chunk they came with (Linux ends a stream read
right after the skb that carries fds). REGION_READ/WRITE of 1/2/4/8 bytes to a BAR without
sparse-mmap areas, with no fds pending, take the inlined fast path in :meth:`process`.
Everything else goes to the handler of its message family.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from construct import ConstructError

from . import protocol as P
from .dma import DmaMaps, close_fds
from .dma_commands import DmaCommands
from .dma_requests import DmaRequests
from .errors import ProtocolError
from .irq import IrqRouter
from .irq_commands import IrqCommands
from .outbox import Outbox
from .region_commands import RegionCommands
from .version import Negotiation

if TYPE_CHECKING:
    from .server import VfioUserServer

log = logging.getLogger("qemu_panthor.vfio_user.server")
tlog = logging.getLogger("qemu_panthor.vfio_user.trace")

Reply = bytes | tuple[bytes, list[int]]
Handler = Callable[[bytes, list[int]], Reply]

_REPLY = int(P.MsgFlags.REPLY)
_NO_REPLY = int(P.MsgFlags.NO_REPLY)
_ERROR_REPLY = int(P.MsgFlags.REPLY | P.MsgFlags.ERROR)
_VERSION = int(P.Command.VERSION)
_REGION_READ = int(P.Command.REGION_READ)
_REGION_WRITE = int(P.Command.REGION_WRITE)
_HDR = P.HDR
_HDR_RW = P.HDR_RW
_HDR_RW_UNPACK = P.HDR_RW.unpack_from
_HDR_RW_VALUE_PACK = {n: st.pack for n, st in P.HDR_RW_VALUE.items()}
_VALUE_S = {n: struct.Struct(f) for n, f in ((1, "<B"), (2, "<H"), (4, "<I"), (8, "<Q"))}
_MSG_CTRUNC = int(socket.MSG_CTRUNC)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}
# A payload the layouts cannot decode (handlers check lengths first; this is the safety net).
_DECODE_ERRORS = (ConstructError, struct.error)
# Replies queued for a client that does not read them: stop reading its requests above this.
HIGH_WATER = 4 << 20
# A message above our limit is drained (the stream stays in sync) up to this size; a header
# claiming more is garbage and ends the session (64 MiB: QEMU's largest max_data_xfer_size).
DRAIN_LIMIT = (64 << 20) + 4096
# recvmsg calls per readiness callback before yielding to the loop (other work, timers).
READS_PER_WAKEUP = 16


class Connection:
    """One client session: framing, fds, dispatch, IRQ routing and DMA windows."""

    def __init__(self, server: VfioUserServer, sock: socket.socket) -> None:
        self.dev = dev = server.device
        self.trace = server.trace
        self.stats = stats = server.stats
        self.max_msg_size = server.max_msg_size
        self.sock = sock
        sock.setblocking(False)
        self._sock_recvmsg_into = sock.recvmsg_into
        self.fileno = sock.fileno()
        self.loop = loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
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
        self.max_pending_fds = server.max_msg_fds
        self.paused = False  # not reading: the client is not reading our replies
        self.outbox = Outbox(sock, loop, self.close)
        self.send = self.outbox.send
        self.send_fast = self.outbox.send_fast
        self.negotiated = False  # hot-path copy of self.version.done
        self.closed = False
        self.router = IrqRouter(dev, trace=self.trace)
        self.dma = DmaMaps(dev.dma)
        self.version = Negotiation(
            max_msg_fds=server.max_msg_fds, max_data_xfer_size=server.max_data_xfer_size,
            max_dma_maps=self.dma.max_maps,
        )
        self.requests = DmaRequests(
            self.outbox, self.dma, loop, max_data_xfer_size=server.max_data_xfer_size,
            timeout=server.dma_timeout,
        )
        # Fast path: BAR index -> size if plain (no sparse areas), else 0.
        self.fast_bars = [0] * 6
        for i, spec in dev.bars.items():
            if not spec.mmap_areas:
                self.fast_bars[i] = spec.size
        self.regions = regions = RegionCommands(
            dev, stats, max_data_xfer_size=server.max_data_xfer_size, trace=self.trace)
        irqs = IrqCommands(self.router, trace=self.trace)
        dma = DmaCommands(self.dma, stats, trace=self.trace)
        C = P.Command
        self.handlers: dict[int, Handler] = {
            C.VERSION: self.version.handle,
            C.DMA_MAP: dma.dma_map,
            C.DMA_UNMAP: dma.dma_unmap,
            C.DEVICE_GET_INFO: regions.device_get_info,
            C.DEVICE_GET_REGION_INFO: regions.get_region_info,
            C.DEVICE_GET_IRQ_INFO: irqs.get_irq_info,
            C.DEVICE_SET_IRQS: irqs.set_irqs,
            C.REGION_READ: regions.region_read,
            C.REGION_WRITE: regions.region_write,
            C.REGION_WRITE_MULTI: regions.region_write_multi,
            C.DEVICE_RESET: regions.device_reset,
        }
        dev.attach_irq_sink(self.router)
        dev.attach_dma_port(self.requests)

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
        self.outbox.close()  # only our own fds (BAR memfds) can be queued: nothing to close
        self.sock.close()
        for _, fds, _ in self.fdq:
            close_fds(fds)
        self.fdq.clear()
        self.router.detach()
        self.dma.unmap_all()
        if self.dev.irq_sink is self.router:
            self.dev.attach_irq_sink(None)
        if self.dev.dma_port is self.requests:
            self.dev.attach_dma_port(None)
        self.requests.close()
        # The receive buffer is the biggest thing we hold: gone now, not when collected.
        self.buf = bytearray()
        self.mv = memoryview(self.buf)
        self.iov0 = [self.mv]
        self.start = self.end = 0
        if not self.done.done():
            self.done.set_result(None)

    def _pause(self) -> None:
        """Stop reading requests until the client has read our queued replies."""
        if self.paused or self.closed:
            return
        self.paused = True
        self.loop.remove_reader(self.fileno)
        self.outbox.on_drained = self._resume

    def _resume(self) -> None:
        self.outbox.on_drained = None
        if not self.paused or self.closed:
            return
        self.paused = False
        self.loop.add_reader(self.fileno, self.on_readable)
        self.process()

    # -- receive -----------------------------------------------------------------------------
    def on_readable(self) -> None:
        """One ``recvmsg``, then every complete message; read on if nothing was replied.

        With uvloop, when the peer goes away with our replies unread (POLLERR), the reader is
        called once more and then never again. A reply sent in that call fails (EPIPE) and
        closes the connection; if nothing was replied, this call must read on until EAGAIN
        to see the EOF or ECONNRESET itself, or the connection would never be closed. (The
        REGION_READ fast path replies, so it still costs one recvmsg per request.)
        """
        outbox = self.outbox
        for _ in range(READS_PER_WAKEUP):
            if self.closed or self.paused:
                return
            if self.outbox.queued_bytes > HIGH_WATER:
                self._pause()
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
                self.fdq.append((self.base + end + max(n, 1) - 1, fds,
                                 bool(flags & _MSG_CTRUNC)))
            if n == 0:
                self.close()
                return
            self.end = end + n
            attempts = outbox.attempts
            self.process()
            if self.fdq:
                self._bound_pending_fds()
            if outbox.attempts != attempts:
                return  # replied: a dead peer shows up as EPIPE on that reply
        # Budget spent with data still coming: carry on without waiting for readiness.
        if not self.closed and not self.paused:
            self.loop.call_soon(self.on_readable)

    def _bound_pending_fds(self) -> None:
        """Fds still queued belong to the incomplete message; more than one message may carry
        are closed now (the message then fails with EINVAL), so a client cannot fill our fd
        table with a message that never completes."""
        if sum(len(f) for _, f, _ in self.fdq) <= self.max_pending_fds:
            return
        last = self.fdq[-1][0]
        for _, f, _ in self.fdq:
            close_fds(f)
        self.fdq.clear()
        self.fdq.append((last, [], True))

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
        while not self.closed and not self.paused:
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
            if size > DRAIN_LIMIT:
                # no client sends this much (QEMU's largest transfer is 64 MiB): a header not
                # to be trusted. Draining it would swallow every later request without a
                # reply; QEMU treats such a stream as broken too: reply, then hang up.
                self.error(mid, cmd, flags, errno.E2BIG,
                           f"header size {size}: stream out of sync, closing", logging.WARNING)
                self.close()
                return
            if size > self.max_msg_size:
                self.drain = size
                self.drain_end = self.base + s + size
                self.error(mid, cmd, flags, errno.E2BIG, f"message of {size} bytes too large")
                continue
            if avail < size:
                return
            self.start = s + size
            fds, trunc = self.take_fds(self.base + s + size)
            self.dispatch(mid, cmd, size, flags, s, fds, trunc)
            if self.outbox.queued_bytes > HIGH_WATER:
                self._pause()

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
            self.requests.on_reply(mid, cmd, flags, _HDR.unpack_from(self.buf, s)[4], payload)
            return
        self.stats.commands[cmd] += 1
        if self.trace:
            tlog.debug("cmd %s id=%d size=%d fds=%d", cmd_name(cmd), mid, size, len(fds))
        # Fds are the message's until a handler keeps one (it removes it from ``fds``);
        # whatever is left is closed here, whatever happened.
        try:
            if mtype != 0:
                raise ProtocolError(errno.EINVAL, f"unknown message type {mtype}")
            if trunc:
                raise ProtocolError(errno.EINVAL, "too many file descriptors")
            handler = self.handlers.get(cmd)
            if handler is None:
                raise ProtocolError(errno.ENOTSUP, f"unsupported command {cmd}")
            if not self.negotiated and cmd != _VERSION:
                raise ProtocolError(errno.EINVAL, "command before VERSION negotiation")
            result = handler(payload, fds)
        except ProtocolError as e:
            self.error(mid, cmd, flags, e.errno, str(e), e.level)
            return
        except _DECODE_ERRORS as e:
            self.error(mid, cmd, flags, errno.EINVAL, f"malformed payload: {e}")
            return
        except Exception as e:  # a device-model bug must not kill the connection
            log.exception("vfio-user command %s failed", cmd_name(cmd))
            self.error(mid, cmd, flags, errno.EIO, f"internal error: {e}")
            return
        finally:
            if fds:
                close_fds(fds)
        if cmd == _VERSION:
            self.negotiated = True
            self.requests.client_max_xfer = self.version.client_max_xfer
            self.regions.client_max_fds = self.version.client_max_fds
        if flags & _NO_REPLY:
            return
        if isinstance(result, tuple):
            reply, out_fds = result
        else:
            reply, out_fds = result, []
        self.send(_HDR.pack(mid, cmd, 16 + len(reply), _REPLY, 0) + reply, out_fds)

    def error(
        self, mid: int, cmd: int, flags: int, err: int, why: str, level: int = logging.INFO
    ) -> None:
        """The ERROR reply (unless NO_REPLY) and the one log line for a failed command."""
        self.stats.errors[err] += 1
        if log.isEnabledFor(level):
            log.log(level, "vfio-user %s id=%d: %s (%s)", cmd_name(cmd), mid, why,
                    errno.errorcode.get(err, err))
        if not flags & _NO_REPLY:
            self.send(_HDR.pack(mid, cmd, 16, _ERROR_REPLY, err))


def cmd_name(cmd: int) -> str:
    try:
        return P.Command(cmd).name
    except ValueError:
        return f"command {cmd}"

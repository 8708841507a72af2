"""A small pure-Python vfio-user client for the tests.

Written from the specification (QEMU 11.1 interop/vfio-user.html) independently of the server:
its own struct layouts, header-first framing (fds arrive with the header, as QEMU reads them),
asyncio-friendly so the server can run in the same event loop.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from qemu_panthor.vfio_user import BarSpec, MsixCapability, PciFunction, VfioUserServer

HDR = struct.Struct("<HHIII")  # id, command, size, flags, error

VERSION, DMA_MAP, DMA_UNMAP, DEVICE_GET_INFO, GET_REGION_INFO = 1, 2, 3, 4, 5
GET_REGION_IO_FDS, GET_IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE = 6, 7, 8, 9, 10
DMA_READ, DMA_WRITE, DEVICE_RESET, REGION_WRITE_MULTI = 11, 12, 13, 15

REPLY, NO_REPLY, ERROR = 0x1, 0x10, 0x20

IRQ_DATA_NONE, IRQ_DATA_BOOL, IRQ_DATA_EVENTFD = 1, 2, 4
IRQ_ACTION_MASK, IRQ_ACTION_UNMASK, IRQ_ACTION_TRIGGER = 8, 16, 32

QEMU_CAPS = {
    "capabilities": {
        "pgsizes": 4096,
        "max_msg_fds": 16,
        "max_dma_maps": 65535,
        "max_data_xfer_size": 1048576,
        "migration": {"pgsize": 4096, "max_bitmap_size": 1048576},
        "write_multiple": True,
    }
}


@dataclass
class Msg:
    id: int
    command: int
    size: int
    flags: int
    error: int
    payload: bytes
    fds: list[int] = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & ERROR)

    @property
    def is_reply(self) -> bool:
        return self.flags & 0xF == REPLY


class VfioUserError(Exception):
    def __init__(self, msg: Msg) -> None:
        super().__init__(f"command {msg.command} failed: {errno.errorcode.get(msg.error)}")
        self.errno = msg.error
        self.msg = msg


class VfioUserClient:
    """Client end of one vfio-user connection.

    ``dma_windows`` holds the client memory reachable by DMA_READ/DMA_WRITE from the server:
    ``{address: bytearray}``; server requests outside them get an EFAULT error reply.
    """

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.next_id = 0x100
        self.dma_windows: dict[int, bytearray] = {}
        self.server_requests: list[Msg] = []

    @classmethod
    async def connect(cls, path: str) -> VfioUserClient:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        await asyncio.get_running_loop().sock_connect(s, path)
        return cls(s)

    def close(self) -> None:
        self.sock.close()

    async def sock_eof(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (no message pending)."""
        try:
            await self._read_exact(1, timeout)
        except ConnectionResetError:
            return True
        return False

    # -- raw I/O -------------------------------------------------------------------------
    def send_raw(self, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        self.sock.setblocking(True)
        try:
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                sent = self.sock.sendmsg([data], anc)
                if sent < len(data):
                    self.sock.sendall(data[sent:])
            else:
                self.sock.sendall(data)
        finally:
            self.sock.setblocking(False)

    def send(
        self,
        command: int,
        payload: bytes = b"",
        *,
        fds: list[int] | tuple[int, ...] = (),
        flags: int = 0,
        mid: int | None = None,
        size: int | None = None,
    ) -> int:
        if mid is None:
            mid = self.next_id
            self.next_id = (self.next_id + 1) & 0xFFFF
        total = 16 + len(payload) if size is None else size
        self.send_raw(HDR.pack(mid, command, total, flags, 0) + payload, fds)
        return mid

    async def asend_raw(self, data: bytes, fds: list[int] | tuple[int, ...] = ()) -> None:
        """Like :meth:`send_raw`, but lets the event loop run while the socket is full (a
        server in the same loop must be able to read a message bigger than the buffer)."""
        sent = 0
        if fds:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            while True:
                try:
                    sent = self.sock.sendmsg([data], anc)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.001)
        await self.loop.sock_sendall(self.sock, data[sent:])

    async def _wait_readable(self, timeout: float) -> None:
        fut = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        self.loop.add_reader(self.sock.fileno(), ready)
        try:
            await asyncio.wait_for(fut, timeout)
        finally:
            self.loop.remove_reader(self.sock.fileno())

    async def _read_exact(self, n: int, timeout: float) -> tuple[bytes, list[int]]:
        data = bytearray()
        fds: list[int] = []
        while len(data) < n:
            try:
                chunk, anc, _flags, _ = self.sock.recvmsg(
                    n - len(data), socket.CMSG_SPACE(64 * 4)
                )
            except BlockingIOError:
                await self._wait_readable(timeout)
                continue
            for level, typ, raw in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(raw[: len(raw) - len(raw) % 4])
                    fds.extend(a)
            if not chunk:
                raise ConnectionResetError("server closed the connection")
            data += chunk
        return bytes(data), fds

    async def recv(self, timeout: float = 5.0) -> Msg:
        head, fds = await self._read_exact(16, timeout)
        mid, cmd, size, flags, err = HDR.unpack(head)
        payload, more = await self._read_exact(size - 16, timeout) if size > 16 else (b"", [])
        return Msg(mid, cmd, size, flags, err, payload, fds + more)

    async def reply_for(self, mid: int, timeout: float = 5.0) -> Msg:
        """Wait for the reply to ``mid``, answering server requests (DMA) meanwhile."""
        while True:
            msg = await self.recv(timeout)
            if msg.is_reply and msg.id == mid:
                return msg
            if not msg.is_reply:
                self.server_requests.append(msg)
                self._serve_request(msg)

    async def serve_until(self, task: asyncio.Future, timeout: float = 5.0) -> object:
        """Answer server requests until ``task`` (e.g. a device DMA) completes; its result."""
        while not task.done():
            recv = asyncio.ensure_future(self.recv(timeout))
            await asyncio.wait({task, recv}, return_when=asyncio.FIRST_COMPLETED)
            if recv.done():
                msg = recv.result()
                self.server_requests.append(msg)
                self._serve_request(msg)
            else:
                recv.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recv
        return task.result()

    def _serve_request(self, msg: Msg) -> None:
        addr, count = struct.unpack_from("<QQ", msg.payload)
        for base, mem in self.dma_windows.items():
            if base <= addr and addr + count <= base + len(mem):
                off = addr - base
                if msg.command == DMA_READ:
                    body = struct.pack("<QQ", addr, count) + bytes(mem[off : off + count])
                else:
                    mem[off : off + count] = msg.payload[16 : 16 + count]
                    body = struct.pack("<QQ", addr, count)
                self.send(msg.command, body, flags=REPLY, mid=msg.id)
                return
        self.send_raw(HDR.pack(msg.id, msg.command, 16, REPLY | ERROR, errno.EFAULT))

    async def request(
        self,
        command: int,
        payload: bytes = b"",
        *,
        fds: list[int] | tuple[int, ...] = (),
        flags: int = 0,
        check: bool = True,
        timeout: float = 5.0,
    ) -> Msg:
        mid = self.next_id
        self.next_id = (self.next_id + 1) & 0xFFFF
        await self.asend_raw(HDR.pack(mid, command, 16 + len(payload), flags, 0) + payload, fds)
        msg = await self.reply_for(mid, timeout)
        if msg.command != command:
            raise AssertionError(f"reply command {msg.command} != {command}")
        if check and msg.is_error:
            raise VfioUserError(msg)
        return msg

    # -- commands ----------------------------------------------------------------------------
    async def negotiate(self, caps: dict | None = None) -> dict:
        doc = json.dumps(QEMU_CAPS if caps is None else caps).encode() + b"\0"
        msg = await self.request(VERSION, struct.pack("<HH", 0, 0) + doc)
        major, minor = struct.unpack_from("<HH", msg.payload)
        assert (major, minor) == (0, 0)
        raw = msg.payload[4:]
        assert raw.endswith(b"\0")
        return json.loads(raw[:-1])

    async def dma_map(
        self, address: int, size: int, *, fd: int | None = None, offset: int = 0, flags: int = 3
    ) -> Msg:
        body = struct.pack("<IIQQQ", 32, flags, offset, address, size)
        return await self.request(DMA_MAP, body, fds=[fd] if fd is not None else ())

    async def dma_unmap(self, address: int, size: int, flags: int = 0) -> Msg:
        return await self.request(DMA_UNMAP, struct.pack("<IIQQ", 24, flags, address, size))

    async def device_info(self) -> tuple[int, int, int, int]:
        msg = await self.request(DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
        return struct.unpack("<IIII", msg.payload)

    async def region_info(self, index: int, argsz: int = 32) -> Msg:
        return await self.request(GET_REGION_INFO, struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0))

    async def irq_info(self, index: int) -> tuple[int, int, int, int]:
        msg = await self.request(GET_IRQ_INFO, struct.pack("<IIII", 16, 0, index, 0))
        return struct.unpack("<IIII", msg.payload)

    async def set_irqs(
        self,
        index: int,
        flags: int,
        start: int = 0,
        count: int = 0,
        *,
        fds: list[int] | tuple[int, ...] = (),
        data: bytes = b"",
        check: bool = True,
    ) -> Msg:
        body = struct.pack("<IIIII", 20 + len(data), flags, index, start, count) + data
        return await self.request(SET_IRQS, body, fds=fds, check=check)

    async def region_read(self, region: int, offset: int, count: int) -> bytes:
        msg = await self.request(REGION_READ, struct.pack("<QII", offset, region, count))
        off, reg, cnt = struct.unpack_from("<QII", msg.payload)
        assert (off, reg, cnt) == (offset, region, count)
        assert len(msg.payload) == 16 + count
        return msg.payload[16:]

    async def region_write(self, region: int, offset: int, data: bytes) -> None:
        msg = await self.request(
            REGION_WRITE, struct.pack("<QII", offset, region, len(data)) + data
        )
        assert msg.payload == struct.pack("<QII", offset, region, len(data))

    def region_write_posted(self, region: int, offset: int, data: bytes) -> None:
        self.send(REGION_WRITE, struct.pack("<QII", offset, region, len(data)) + data,
                  flags=NO_REPLY)

    async def reset(self) -> None:
        await self.request(DEVICE_RESET)


async def expect_errno(
    c: VfioUserClient,
    command: int,
    payload: bytes = b"",
    err: int = errno.EINVAL,
    *,
    fds: list[int] | tuple[int, ...] = (),
    timeout: float = 5.0,
) -> Msg:
    """Send one command and check it fails with ``err``: a header-only ERROR reply (the
    vfio-user spec), as libvfio-user's test/py ``msg(..., expect=errno)`` checks."""
    msg = await c.request(command, payload, fds=fds, check=False, timeout=timeout)
    assert msg.flags == REPLY | ERROR, f"command {command}: flags {msg.flags:#x}"
    assert msg.error == err, (
        f"command {command}: errno {errno.errorcode.get(msg.error, msg.error)}, "
        f"expected {errno.errorcode.get(err, err)}"
    )
    assert msg.size == 16 and msg.payload == b"" and msg.fds == []
    return msg


def server_log(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """The vfio-user server's own log records (not the --trace stream), each checked to
    carry no traceback: bad client input is one line, never a stack dump."""
    mine = [r for r in records
            if r.name.startswith("qemu_panthor.vfio_user") and not r.name.endswith(".trace")]
    for r in mine:
        assert r.exc_info is None and r.exc_text is None, f"traceback logged: {r.getMessage()}"
    return mine


def guest_memfd(size: int, *, seal: bool = True) -> int:
    """Guest RAM as QEMU's memory-backend-memfd makes it: a memfd of ``size`` bytes, sealed
    (seal=on, the default) against growing and shrinking. ``seal=False``: a bare memfd."""
    fd = os.memfd_create("guest-ram", os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if seal else 0))
    os.ftruncate(fd, size)
    if seal:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                    fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    return fd


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def eventfd_count(fd: int) -> int:
    """Consume and return the eventfd counter (0 if not signalled)."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


# -- test device and harness ------------------------------------------------------------------

SCRATCH_VENDOR = 0x1AF4
SCRATCH_DEVICE = 0x10F0
SCRATCH_CLASS = 0x0B4000  # processor / co-processor


class ScratchDevice(PciFunction):
    """BAR0: 4 KiB of scratch registers. BAR2 (64-bit, 64 KiB): reads return the offset,
    with a sparse-mmap page window at 0x1000-0x2fff. BAR4: MSI-X table + PBA (3 vectors)."""

    def __init__(self, **kw: object) -> None:
        args: dict = dict(
            vendor_id=SCRATCH_VENDOR,
            device_id=SCRATCH_DEVICE,
            class_code=SCRATCH_CLASS,
            revision=3,
            subsystem_vendor_id=0x1234,
            subsystem_id=0x5678,
            bars={
                0: BarSpec(0x1000),
                2: BarSpec(0x10000, is64=True, prefetchable=True,
                           mmap_areas=((0x1000, 0x2000),)),
                4: BarSpec(0x1000),
            },
            msix=MsixCapability(vectors=3, table_bar=4, table_offset=0, pba_bar=4,
                                pba_offset=0x800),
        )
        args.update(kw)
        super().__init__(**args)
        self.regs = bytearray(0x1000)
        self.accesses: list[tuple] = []
        self.resets = 0

    def bar_read(self, bar: int, offset: int, size: int) -> int:
        self.accesses.append(("r", bar, offset, size))
        if bar == 0:
            return int.from_bytes(self.regs[offset : offset + size], "little")
        return 0xA5A5A5A5_00000000 | offset

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        self.accesses.append(("w", bar, offset, size, value))
        if bar == 0:
            self.regs[offset : offset + size] = value.to_bytes(size, "little")

    def reset(self) -> None:
        self.resets += 1
        self.regs[:] = bytes(len(self.regs))


@asynccontextmanager
async def served(
    dev: PciFunction | None = None, *, negotiate: bool = True, **server_kw: object
) -> AsyncIterator[tuple[PciFunction, VfioUserServer, VfioUserClient]]:
    """A server for ``dev`` on one end of a socketpair and a client on the other."""
    dev = dev if dev is not None else ScratchDevice()
    # the options are typed per keyword in VfioUserServer; this helper forwards them as given
    server = VfioUserServer(dev, **server_kw)  # type: ignore[arg-type]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    task = asyncio.create_task(server.serve_connection(a))
    client = VfioUserClient(b)
    try:
        if negotiate:
            await client.negotiate()
        yield dev, server, client
    finally:
        client.close()
        await asyncio.wait_for(task, 5)
        dev.close()

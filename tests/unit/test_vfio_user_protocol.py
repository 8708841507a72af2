"""vfio-user negotiation, framing and error replies, checked against the spec's wire layouts."""

from __future__ import annotations

import errno
import json
import os
import socket
import struct

import pytest
from support.vfio_user_client import (
    DEVICE_GET_INFO,
    DMA_MAP,
    ERROR,
    GET_REGION_INFO,
    GET_REGION_IO_FDS,
    HDR,
    NO_REPLY,
    QEMU_CAPS,
    REGION_READ,
    REPLY,
    SET_IRQS,
    VERSION,
    guest_memfd,
    served,
)

# QEMU 11.1's VERSION request as seen on the wire: 214 bytes in all.
QEMU_VERSION_JSON = (
    b'{"capabilities":{"pgsizes":4096,"max_msg_fds":16,"max_dma_maps":65535,'
    b'"max_data_xfer_size":1048576,"migration":{"pgsize":4096,"max_bitmap_size":134217728},'
    b'"write_multiple":true}}\0'
)


def version_payload(doc: bytes, major: int = 0, minor: int = 0) -> bytes:
    return struct.pack("<HH", major, minor) + doc


async def test_version_reply_fits_qemu_request_and_advertises_caps() -> None:
    async with served(negotiate=False) as (_, server, c):
        req = version_payload(QEMU_VERSION_JSON)
        msg = await c.request(VERSION, req)
        assert msg.flags == REPLY and msg.error == 0
        assert msg.size <= 16 + len(req)
        assert struct.unpack_from("<HH", msg.payload) == (0, 0)
        assert msg.payload.endswith(b"\0")
        caps = json.loads(msg.payload[4:-1])["capabilities"]
        assert caps["write_multiple"] is True
        assert caps["max_msg_fds"] >= 1
        assert caps["max_data_xfer_size"] == 1 << 20
        assert caps["pgsizes"] & 4096
        assert server.stats.commands[VERSION] == 1


async def test_version_reply_trimmed_to_small_request() -> None:
    async with served(negotiate=False) as (_, _s, c):
        doc = b'{"capabilities":{"max_msg_fds":1,"pgsizes":4}}\0'  # 47 bytes: one cap fits
        msg = await c.request(VERSION, version_payload(doc))
        assert len(msg.payload) <= 4 + len(doc)
        caps = json.loads(msg.payload[4:-1])["capabilities"]
        assert caps == {"write_multiple": True}  # highest priority first
        # Without JSON at all the reply is the bare version.
    async with served(negotiate=False) as (_, _s, c):
        msg = await c.request(VERSION, struct.pack("<HH", 0, 0))
        assert msg.payload == struct.pack("<HH", 0, 0)


@pytest.mark.parametrize(
    ("payload", "err"),
    [
        (b"\0\0", errno.EINVAL),  # short: no minor
        (version_payload(b"{}\0", major=1), errno.ENOTSUP),  # bad major
        (version_payload(b'{"capabilities":{}}'), errno.EINVAL),  # JSON without NUL
        (version_payload(b'"capabilities"\0'), errno.EINVAL),  # JSON without braces
        (version_payload(b"{not json\0"), errno.EINVAL),
        (version_payload(b'{"capabilities":[]}\0'), errno.EINVAL),
        (version_payload(b'{"capabilities":{"max_msg_fds":"x"}}\0'), errno.EINVAL),
        (version_payload(b'{"capabilities":{"max_data_xfer_size":0}}\0'), errno.EINVAL),
    ],
)
async def test_version_errors_keep_connection(payload: bytes, err: int) -> None:
    async with served(negotiate=False) as (_, _s, c):
        msg = await c.request(VERSION, payload, check=False)
        assert msg.flags == REPLY | ERROR and msg.error == err and msg.size == 16
        caps = await c.negotiate()  # still serving; a good VERSION now succeeds
        assert "capabilities" in caps


async def test_commands_before_version_and_second_version_rejected() -> None:
    async with served(negotiate=False) as (_, _s, c):
        msg = await c.request(DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), check=False)
        assert msg.is_error and msg.error == errno.EINVAL
        await c.negotiate()
        msg = await c.request(VERSION, version_payload(b"{}\0"), check=False)
        assert msg.is_error and msg.error == errno.EINVAL


async def test_unknown_and_unsupported_commands() -> None:
    async with served() as (_, server, c):
        for cmd in (99, GET_REGION_IO_FDS, 16, 0):
            msg = await c.request(cmd, b"\0" * 16, check=False)
            assert msg.is_error and msg.error == errno.ENOTSUP, cmd
        assert await c.device_info() == (16, 3, 9, 5)
        assert server.stats.errors[errno.ENOTSUP] == 4


async def test_header_size_below_16_and_bad_type() -> None:
    async with served() as (_, _s, c):
        c.send_raw(HDR.pack(7, DEVICE_GET_INFO, 8, 0, 0))
        msg = await c.recv()
        assert (msg.id, msg.flags, msg.error) == (7, REPLY | ERROR, errno.EINVAL)
        mid = c.send(DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), flags=0x3)
        msg = await c.reply_for(mid)
        assert msg.is_error and msg.error == errno.EINVAL
        assert await c.device_info() == (16, 3, 9, 5)


async def test_oversized_message_is_drained_and_rejected() -> None:
    async with served(max_data_xfer_size=4096) as (_, server, c):
        big = 16 + 16 + 4096 + 1000
        assert big > server.max_msg_size
        mid = c.send(REGION_READ, b"\xee" * (big - 16))
        msg = await c.reply_for(mid)
        assert msg.is_error and msg.error == errno.E2BIG
        # The stream is still in sync: the next message is parsed from its real header.
        assert await c.region_read(7, 0, 2) == b"\xf4\x1a"


async def test_a_header_claiming_gigabytes_ends_the_session() -> None:
    """A size no client sends (here 4 GiB - 16) cannot be drained without swallowing every
    later request unanswered: the server replies E2BIG and hangs up, as QEMU's client treats
    such a stream as broken too; the next client is served."""
    async with served() as (_, _server, c):
        c.send_raw(HDR.pack(7, REGION_READ, 0xFFFF_FFF0, 0, 0))
        msg = await c.reply_for(7)
        assert msg.is_error and msg.error == errno.E2BIG
        assert await c.sock_eof(timeout=5)


async def test_truncated_payloads_get_einval() -> None:
    async with served() as (_, _s, c):
        for cmd, payload in [
            (DMA_MAP, b"\0" * 20),
            (GET_REGION_INFO, b"\0" * 8),
            (SET_IRQS, b"\0" * 12),
            (REGION_READ, b"\0" * 8),
            (7, b"\0" * 4),  # GET_IRQ_INFO
            (10, struct.pack("<QII", 0, 0, 4) + b"\0\0"),  # REGION_WRITE: data short
            (15, b"\0" * 4),  # WRITE_MULTI
            (3, b"\0" * 8),  # DMA_UNMAP
            (DEVICE_GET_INFO, struct.pack("<I", 8)),  # argsz too small
        ]:
            msg = await c.request(cmd, payload, check=False)
            assert msg.is_error and msg.error == errno.EINVAL, cmd


async def test_no_reply_errors_send_nothing() -> None:
    async with served() as (_, _s, c):
        c.send(REGION_READ, struct.pack("<QII", 0, 42, 4), flags=NO_REPLY)
        # The next reply we get is for the next command: nothing was sent for the first.
        mid = c.send(DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
        msg = await c.recv()
        assert msg.id == mid and not msg.is_error


async def test_unexpected_fds_are_rejected_and_closed() -> None:
    async with served() as (_, _s, c):
        r, w = os.pipe()
        try:
            msg = await c.request(
                DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0), fds=[r], check=False
            )
            assert msg.is_error and msg.error == errno.EINVAL
            # The server closed its copy: with ours closed too, the writer sees EPIPE.
            os.close(r)
            r = -1
            with pytest.raises(BrokenPipeError):
                os.write(w, b"x")
        finally:
            if r >= 0:
                os.close(r)
            os.close(w)


async def test_messages_glued_in_one_send_with_fd() -> None:
    """Two messages in one sendmsg, fd attached: the fd belongs to the one carrying it."""
    async with served() as (dev, _s, c):
        fd = guest_memfd(0x1000)
        os.pwrite(fd, b"glued", 0)
        read = HDR.pack(1, REGION_READ, 32, 0, 0) + struct.pack("<QII", 0, 7, 2)
        dmap = HDR.pack(2, DMA_MAP, 48, 0, 0) + struct.pack("<IIQQQ", 32, 3, 0, 0x4000, 0x1000)
        c.send_raw(read + dmap, [fd])
        os.close(fd)
        m1, m2 = await c.recv(), await c.recv()
        assert (m1.id, m1.is_error, m1.payload[16:]) == (1, False, b"\xf4\x1a")
        assert (m2.id, m2.is_error) == (2, False)
        assert dev.dma.read(0x4000, 5) == b"glued"


async def test_region_read_over_a_real_socket_file(tmp_path: object) -> None:
    import asyncio

    from support.vfio_user_client import ScratchDevice, VfioUserClient

    from qemu_panthor.vfio_user import VfioUserServer

    path = os.path.join(str(tmp_path), "s.sock")
    dev = ScratchDevice()
    server = VfioUserServer(dev)
    await server.listen_path(path)
    task = asyncio.create_task(server.serve(once=True))
    c = await VfioUserClient.connect(path)
    caps = await c.negotiate(QEMU_CAPS)
    assert caps["capabilities"]["write_multiple"] is True
    assert await c.region_read(7, 0, 4) == b"\xf4\x1a\xf0\x10"
    c.close()
    await asyncio.wait_for(task, 5)
    await server.close()
    assert not os.path.exists(path)
    dev.close()


async def test_serve_fd_with_inherited_listening_socket(tmp_path: object) -> None:
    import asyncio

    from support.vfio_user_client import ScratchDevice, VfioUserClient

    from qemu_panthor.vfio_user import VfioUserServer

    path = os.path.join(str(tmp_path), "fd.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)
    dev = ScratchDevice()
    server = VfioUserServer(dev)
    task = asyncio.create_task(server.serve_fd(lsock.detach(), once=True))
    c = await VfioUserClient.connect(path)
    await c.negotiate()
    assert await c.device_info() == (16, 3, 9, 5)
    c.close()
    await asyncio.wait_for(task, 5)
    await server.close()
    dev.close()

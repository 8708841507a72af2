"""DMA_MAP/DMA_UNMAP with and without fds; device-side access through PhysMem and DMA_READ."""

from __future__ import annotations

import asyncio
import errno
import os
import struct

import pytest
from support.vfio_user_client import DMA_MAP, DMA_READ, DMA_WRITE, guest_memfd, served

from qemu_panthor.memory import BusError

RAM_BASE = 0x4000_0000


def memfd(size: int) -> int:
    return guest_memfd(size)  # sealed, as QEMU's memory-backend-memfd makes guest RAM


async def test_dma_map_with_memfd_shares_memory() -> None:
    async with served() as (dev, server, c):
        fd = memfd(0x20000)
        try:
            os.pwrite(fd, b"written by the client", 0x10000 + 0x123)
            # Map the second half of the file at RAM_BASE (fd offset 0x10000).
            await c.dma_map(RAM_BASE, 0x10000, fd=fd, offset=0x10000)
            assert server.stats.dma_maps_with_fd == 1
            assert dev.dma.read(RAM_BASE + 0x123, 21) == b"written by the client"
            dev.dma.write_u32(RAM_BASE + 0x200, 0xCAFEF00D)
            assert os.pread(fd, 4, 0x10200) == struct.pack("<I", 0xCAFEF00D)
            assert await dev.dma_read(RAM_BASE + 0x123, 7) == b"written"
            # Outside the window: BusError, never other memory.
            with pytest.raises(BusError):
                dev.dma.read(RAM_BASE + 0xFFFF, 2)
            with pytest.raises(BusError):
                dev.dma.read_u32(RAM_BASE - 4)
            with pytest.raises(BusError):
                await dev.dma_read(0, 4)
            # Overlapping map: EEXIST.
            msg = await c.request(
                DMA_MAP, struct.pack("<IIQQQ", 32, 3, 0, RAM_BASE + 0x1000, 0x1000),
                fds=[fd], check=False,
            )
            assert msg.is_error and msg.error == errno.EEXIST
            # Unmap: the device loses access before the reply.
            msg = await c.dma_unmap(RAM_BASE, 0x10000)
            assert msg.payload == struct.pack("<IIQQ", 24, 0, RAM_BASE, 0x10000)
            with pytest.raises(BusError):
                dev.dma.read(RAM_BASE, 1)
            msg = await c.request(3, struct.pack("<IIQQ", 24, 0, RAM_BASE, 0x10000), check=False)
            assert msg.is_error and msg.error == errno.ENOENT
        finally:
            os.close(fd)


async def test_unmap_all_and_unmap_flag_errors() -> None:
    async with served() as (dev, _s, c):
        fd = memfd(0x3000)
        try:
            await c.dma_map(0x1000, 0x1000, fd=fd)
            await c.dma_map(0x3000, 0x2000, fd=fd, offset=0x1000)
            await c.dma_map(0x9000, 0x1000)  # no fd
            for flags, addr, err in ((2, 0x1000, errno.EINVAL), (1, 0, errno.ENOTSUP),
                                     (4, 0, errno.EINVAL)):
                msg = await c.request(3, struct.pack("<IIQQ", 24, flags, addr, 0), check=False)
                assert msg.is_error and msg.error == err
            await c.dma_unmap(0, 0, flags=2)
            assert dev.dma.regions == ()
            with pytest.raises(BusError):
                await dev.dma_read(0x9000, 4)
        finally:
            os.close(fd)


async def test_dma_map_errors() -> None:
    async with served() as (dev, _s, c):
        fd = memfd(0x1000)
        try:
            cases = [
                (struct.pack("<IIQQQ", 16, 3, 0, 0, 0x1000), [fd], errno.EINVAL),  # argsz
                (struct.pack("<IIQQQ", 32, 0x13, 0, 0, 0x1000), [fd], errno.EINVAL),  # flags
                (struct.pack("<IIQQQ", 32, 3 | 4, 0, 0, 0x1000), [], errno.EINVAL),  # mmap, no fd
                (struct.pack("<IIQQQ", 32, 3, 0, 0, 0), [fd], errno.EINVAL),  # size 0
                (struct.pack("<IIQQQ", 32, 3, 0, 0, 0x2000), [fd], errno.EINVAL),  # > file
                (struct.pack("<IIQQQ", 32, 3, 0, (1 << 64) - 0x1000, 0x2000), [], errno.EINVAL),
                (struct.pack("<IIQQQ", 32, 3, 0, 0, 0x1000), [fd, fd], errno.EINVAL),
            ]
            for body, fds, err in cases:
                msg = await c.request(DMA_MAP, body, fds=fds, check=False)
                assert msg.is_error and msg.error == err, body
            assert dev.dma.regions == ()
        finally:
            os.close(fd)


async def test_read_only_window_drops_device_writes() -> None:
    async with served() as (dev, _s, c):
        fd = memfd(0x1000)
        try:
            os.pwrite(fd, b"rom", 0)
            await c.dma_map(0x8000, 0x1000, fd=fd, flags=1)
            assert dev.dma.read(0x8000, 3) == b"rom"
            dev.dma.write(0x8000, b"RAM")
            assert os.pread(fd, 3, 0) == b"rom"
        finally:
            os.close(fd)


async def test_fdless_window_uses_dma_messages_without_blocking_replies() -> None:
    async with served() as (dev, server, c):
        await c.dma_map(0x10000, 0x2000)  # no fd: message-based
        assert server.stats.dma_maps_without_fd == 1
        with pytest.raises(BusError):
            dev.dma.read(0x10000, 4)  # synchronous PhysMem cannot reach it
        mem = bytearray(os.urandom(0x2000))
        c.dma_windows[0x10000] = mem
        task = asyncio.create_task(dev.dma_read(0x10010, 64))
        req = await c.recv()
        assert req.command == DMA_READ and not req.is_reply
        assert struct.unpack("<QQ", req.payload) == (0x10010, 64)
        # While the DMA_READ is unanswered, region accesses are still answered (no deadlock).
        assert await c.region_read(7, 0, 2) == b"\xf4\x1a"
        c._serve_request(req)
        assert await asyncio.wait_for(task, 5) == bytes(mem[0x10:0x50])
        # DMA_WRITE through a request the client answers while waiting for its own reply.
        task = asyncio.create_task(dev.dma_write(0x11000, b"device data"))
        await asyncio.sleep(0)
        await c.device_info()  # reply_for() serves the DMA_WRITE that arrives first
        await asyncio.wait_for(task, 5)
        assert mem[0x1000:0x100B] == b"device data"
        assert [m.command for m in c.server_requests] == [DMA_WRITE]
        # A client error reply becomes a BusError for the device.
        del c.dma_windows[0x10000]
        task = asyncio.create_task(dev.dma_read(0x10000, 4))
        await asyncio.sleep(0)
        await c.device_info()
        with pytest.raises(BusError):
            await asyncio.wait_for(task, 5)


async def test_large_fdless_read_is_split_by_client_max_xfer() -> None:
    async with served(negotiate=False) as (dev, _s, c):
        await c.negotiate({"capabilities": {"max_data_xfer_size": 4096}})
        await c.dma_map(0, 0x10000)
        mem = bytearray(os.urandom(0x10000))
        c.dma_windows[0] = mem
        task = asyncio.create_task(dev.dma_read(0x100, 10000))
        assert await c.serve_until(task) == bytes(mem[0x100 : 0x100 + 10000])
        assert [struct.unpack_from("<QQ", m.payload)[1] for m in c.server_requests] == [
            4096, 4096, 10000 - 8192]


async def test_pending_dma_fails_on_disconnect() -> None:
    async with served() as (dev, _s, c):
        await c.dma_map(0, 0x1000)
        task = asyncio.create_task(dev.dma_read(0, 4))
        await c.recv()  # the DMA_READ; never answered
    with pytest.raises(BusError):
        await asyncio.wait_for(task, 5)

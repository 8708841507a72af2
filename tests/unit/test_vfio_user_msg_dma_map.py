"""VFIO_USER_DMA_MAP: what the server refuses, with the errno libvfio-user uses (EINVAL).

Fuzzer findings: a memfd smaller than the mapping (or one the client shrinks afterwards) let
a device access raise SIGBUS ("Fatal Python error: Bus error"); unaligned windows, an argsz
inconsistent with the message and an offset without an fd were accepted silently.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest
from support.vfio_user_client import DMA_MAP, expect_errno, guest_memfd, served, server_log

from qemu_panthor.memory import BusError

RAM = 0x4000_0000
READ_WRITE = 3


def dma_map(address: int, size: int, offset: int = 0, flags: int = READ_WRITE,
            argsz: int = 32) -> bytes:
    return struct.pack("<IIQQQ", argsz, flags, offset, address, size)


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qemu_panthor.vfio_user")


async def test_memfd_smaller_than_the_window_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    async with served() as (dev, _s, c):
        fd = guest_memfd(0x2000)
        try:
            await expect_errno(c, DMA_MAP, dma_map(RAM, 0x3000), fds=[fd])
            await expect_errno(c, DMA_MAP, dma_map(RAM, 0x2000, offset=0x1000), fds=[fd])
            assert dev.dma.regions == ()
            lines = server_log(caplog.records)
            assert len(lines) == 2 and "smaller than offset+size" in lines[0].getMessage()
            assert lines[0].levelno == logging.WARNING  # the first one is said loudly
            await c.dma_map(RAM, 0x1000, fd=fd, offset=0x1000)  # what fits is fine
            assert dev.dma.read(RAM, 4) == bytes(4)
        finally:
            os.close(fd)


async def test_memfd_not_sealed_against_shrinking_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with served() as (dev, _s, c):
        bare = guest_memfd(0x1000, seal=False)
        grow_only = os.memfd_create("ram", os.MFD_ALLOW_SEALING)
        os.ftruncate(grow_only, 0x1000)
        fcntl.fcntl(grow_only, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
        try:
            for fd in (bare, grow_only):
                await expect_errno(c, DMA_MAP, dma_map(RAM, 0x1000), fds=[fd])
            assert dev.dma.regions == ()
            lines = server_log(caplog.records)
            assert len(lines) == 2 and all("F_SEAL_SHRINK" in r.getMessage() for r in lines)
        finally:
            os.close(bare)
            os.close(grow_only)


async def test_fds_that_are_not_regular_files_are_refused(tmp_path: object) -> None:
    async with served() as (dev, _s, c):
        r, w = os.pipe()
        a, b = socket.socketpair()
        efd = os.eventfd(0)
        try:
            for fd in (r, w, a.fileno(), efd):
                await expect_errno(c, DMA_MAP, dma_map(RAM, 0x1000), fds=[fd])
            assert dev.dma.regions == ()
        finally:
            for fd in (r, w, efd):
                os.close(fd)
            a.close()
            b.close()


async def test_sealed_memfd_cannot_shrink_under_the_device() -> None:
    async with served() as (dev, _s, c):
        fd = guest_memfd(0x2000)
        try:
            await c.dma_map(RAM, 0x2000, fd=fd)
            with pytest.raises(PermissionError):
                os.ftruncate(fd, 0)
            dev.dma.write_u32(RAM + 0x1FFC, 0x12345678)
            assert dev.dma.read_u32(RAM + 0x1FFC) == 0x12345678
        finally:
            os.close(fd)


def test_shrinking_guest_memory_never_kills_the_server() -> None:
    """The crash itself, in a child process: map a memfd, shrink it, let the device touch
    the window. Before the fix the child died of SIGBUS; now the map is refused and the
    device access is a BusError."""
    script = textwrap.dedent("""
        import asyncio, os, struct
        from support.vfio_user_client import DMA_MAP, guest_memfd, served
        from qemu_panthor.memory import BusError

        async def main():
            async with served() as (dev, _s, c):
                fd = guest_memfd(0x10000, seal=False)
                msg = await c.request(DMA_MAP, struct.pack("<IIQQQ", 32, 3, 0, 0, 0x10000),
                                      fds=[fd], check=False)
                os.ftruncate(fd, 0)
                try:
                    dev.dma.read(0x8000, 4)
                    print("read ok")
                except BusError:
                    print("bus error")
                print("map refused" if msg.is_error else "map accepted")

        asyncio.run(main())
    """)
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=tests + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=60, env=env)
    assert "Fatal Python error" not in p.stderr and p.returncode == 0, p.stderr
    assert p.stdout.split() == ["bus", "error", "map", "refused"]


@pytest.mark.parametrize(
    ("address", "size", "offset"),
    [(RAM + 0x800, 0x1000, 0), (RAM, 0x1800, 0), (RAM, 0x1000, 0x10), (RAM + 1, 1, 0)],
)
async def test_unaligned_window_is_refused(address: int, size: int, offset: int) -> None:
    async with served() as (dev, _s, c):
        fd = guest_memfd(0x4000)
        try:
            await expect_errno(c, DMA_MAP, dma_map(address, size, offset), fds=[fd])
            if (address | size) % 0x1000:
                await expect_errno(c, DMA_MAP, dma_map(address, size))  # without an fd too
            assert dev.dma.regions == ()
        finally:
            os.close(fd)


@pytest.mark.parametrize(
    "payload",
    [
        dma_map(RAM, 0x1000, argsz=31),
        dma_map(RAM, 0x1000, argsz=40),  # argsz beyond the message
        dma_map(RAM, 0x1000) + bytes(8),  # message beyond argsz
        dma_map(RAM, 0x1000, argsz=40) + bytes(8),  # not the spec's 32-byte structure
        dma_map(RAM, 0x1000, argsz=0xFFFFFFFF),
    ],
)
async def test_argsz_inconsistent_with_the_message_is_refused(payload: bytes) -> None:
    async with served() as (dev, _s, c):
        await expect_errno(c, DMA_MAP, payload)
        assert dev.dma.regions == ()


async def test_offset_without_fd_is_refused() -> None:
    async with served() as (dev, server, c):
        await expect_errno(c, DMA_MAP, dma_map(RAM, 0x1000, offset=0x1000))
        assert server.stats.dma_maps_without_fd == 0
        with pytest.raises(BusError):
            await dev.dma_read(RAM, 4)


async def test_many_windows_map_and_unmap_in_any_order() -> None:
    """Windows are kept sorted (bisect): overlap checks and lookups stay O(log n)."""
    async with served() as (_, server, c):
        order = [(i * 7919) % 512 for i in range(512)]  # a permutation of 0..511
        for i in order:
            await c.dma_map(RAM + i * 0x2000, 0x1000)
        maps = server.connection.dma
        assert [w.address for w in maps.windows] == [RAM + i * 0x2000 for i in range(512)]
        assert maps.message_window(RAM + 7 * 0x2000 + 0xFF0, 0x10) is maps.windows[7]
        assert maps.message_window(RAM + 7 * 0x2000 + 0xFF0, 0x11) is None
        await expect_errno(c, DMA_MAP, dma_map(RAM + 5 * 0x2000, 0x2000), errno.EEXIST)
        await expect_errno(c, DMA_MAP, dma_map(RAM + 5 * 0x2000 - 0x1000, 0x2000), errno.EEXIST)
        await c.dma_map(RAM + 5 * 0x2000 + 0x1000, 0x1000)  # the gap between two windows
        for i in reversed(order):
            await c.dma_unmap(RAM + i * 0x2000, 0x1000)
        await c.dma_unmap(RAM + 5 * 0x2000 + 0x1000, 0x1000)

"""VFIO_USER_REGION_READ / REGION_WRITE / REGION_WRITE_MULTI: odd and oversized accesses are
answered fast, so MMIO stays prompt for everything queued behind them.

Fuzzer finding: one 1 MiB REGION_READ/WRITE on BAR0 at an unaligned offset was split into a
million 1-byte device callbacks and held the server for ~3 s.
"""

from __future__ import annotations

import struct
import time

import pytest
from support.vfio_user_client import (
    REGION_READ,
    REGION_WRITE,
    REGION_WRITE_MULTI,
    ScratchDevice,
    expect_errno,
    served,
)

from qemu_panthor.device import MaliPciFunction
from qemu_panthor.gpu.models import MODELS
from qemu_panthor.vfio_user.region_commands import MAX_TRAPPED_ACCESS, MAX_WRITE_MULTI

GPU_ID = 0x0


def access(region: int, offset: int, count: int) -> bytes:
    return struct.pack("<QII", offset, region, count)


@pytest.fixture
def mali() -> MaliPciFunction:
    return MaliPciFunction(MODELS["g610"])


@pytest.mark.parametrize("offset", [0x1, 0x3, 0x10000 + 0x1001])
async def test_1mib_unaligned_bar0_access_is_refused_fast(
    mali: MaliPciFunction, offset: int
) -> None:
    async with served(mali) as (_, _s, c):
        gpu_id = await c.region_read(0, GPU_ID, 4)
        t0 = time.monotonic()
        await expect_errno(c, REGION_READ, access(0, offset, 1 << 20))
        await expect_errno(c, REGION_WRITE, access(0, offset, 1 << 20) + bytes(1 << 20))
        assert time.monotonic() - t0 < 0.5  # was ~3 s each
        assert await c.region_read(0, GPU_ID, 4) == gpu_id


async def test_page_sized_trapped_access_is_split_in_aligned_registers() -> None:
    async with served() as (dev, _s, c):
        assert isinstance(dev, ScratchDevice)
        data = bytes(range(256)) * 15 + bytes(range(255))  # 4095 bytes at offset 1
        t0 = time.monotonic()
        await c.region_write(0, 1, data)
        assert await c.region_read(0, 1, len(data)) == data
        assert time.monotonic() - t0 < 0.5
        writes = [a[2:4] for a in dev.accesses if a[0] == "w"]
        assert writes[:3] == [(1, 1), (2, 2), (4, 4)] and writes[-1] == (0xFFC, 4)
        assert len(writes) == 2 + 0xFF8 // 4 + 1
        assert all(off % size == 0 for off, size in writes)


async def test_trapped_access_over_the_bound_is_refused() -> None:
    async with served() as (_, _s, c):  # BAR2: 64 KiB, a sparse-mmap area at 0x1000-0x2fff
        await expect_errno(c, REGION_READ, access(2, 0x4000, MAX_TRAPPED_ACCESS + 4))
        await expect_errno(c, REGION_WRITE, access(2, 0x4000, MAX_TRAPPED_ACCESS + 1)
                           + bytes(MAX_TRAPPED_ACCESS + 1))
        assert len(await c.region_read(2, 0x4000, MAX_TRAPPED_ACCESS)) == MAX_TRAPPED_ACCESS
        # Sparse-mmap memory is plain memory: any size is served from it.
        assert len(await c.region_read(2, 0x1000, 0x2000)) == 0x2000


async def test_write_multi_over_the_bound_is_refused_fast() -> None:
    async with served() as (dev, _s, c):
        n = 40_000
        body = struct.pack("<Q", n) + (struct.pack("<QII", 0x10, 0, 4) + bytes(8)) * n
        t0 = time.monotonic()
        await expect_errno(c, REGION_WRITE_MULTI, body)
        assert time.monotonic() - t0 < 0.5
        assert dev.accesses == []
        n = MAX_WRITE_MULTI
        body = struct.pack("<Q", n) + (struct.pack("<QII", 0x10, 0, 4) + bytes(8)) * n
        msg = await c.request(REGION_WRITE_MULTI, body)
        assert msg.payload == struct.pack("<Q", n) and len(dev.accesses) == n


async def test_write_multi_takes_any_size_up_to_8_and_refuses_9() -> None:
    """The spec: each entry "can only describe writes of 8 bytes or less": a 3-byte entry is
    applied (as aligned register pieces), a 9-byte one refuses the whole batch, nothing done."""
    async with served() as (dev, _s, c):
        entries = [(0x10, 4, b"\x01\x02\x03\x04"), (0x21, 3, b"\xaa\xbb\xcc")]
        body = struct.pack("<Q", 2) + b"".join(
            struct.pack("<QII", off, 0, n) + data.ljust(8, b"\0") for off, n, data in entries)
        msg = await c.request(REGION_WRITE_MULTI, body)
        assert msg.payload == struct.pack("<Q", 2)
        assert await c.region_read(0, 0x10, 4) == b"\x01\x02\x03\x04"
        assert await c.region_read(0, 0x21, 3) == b"\xaa\xbb\xcc"
        before = len(dev.accesses)
        bad = struct.pack("<Q", 2) + struct.pack("<QII", 0x40, 0, 4) + bytes(8) + struct.pack(
            "<QII", 0x48, 0, 9) + bytes(8)
        await expect_errno(c, REGION_WRITE_MULTI, bad)
        assert len(dev.accesses) == before

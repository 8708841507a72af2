"""Device info, region info (incl. sparse mmap), config space and BAR accesses."""

from __future__ import annotations

import errno
import mmap
import os
import struct

import pytest
from support.vfio_user_client import (
    DEVICE_RESET,
    NO_REPLY,
    REGION_READ,
    REGION_WRITE,
    REGION_WRITE_MULTI,
    SCRATCH_CLASS,
    SCRATCH_DEVICE,
    SCRATCH_VENDOR,
    served,
)

CONFIG = 7
R, W, MMAP, CAPS = 1, 2, 4, 8


def info(payload: bytes) -> tuple[int, int, int, int, int, int]:
    return struct.unpack_from("<IIIIQQ", payload)


async def test_device_info() -> None:
    async with served() as (_, _s, c):
        argsz, flags, nregions, nirqs = await c.device_info()
        assert (argsz, flags, nregions, nirqs) == (16, 1 | 2, 9, 5)


@pytest.mark.parametrize(
    ("index", "flags", "size"),
    [
        (0, R | W, 0x1000),
        (1, 0, 0),  # unused
        (3, 0, 0),  # upper half of 64-bit BAR2
        (4, R | W, 0x1000),
        (5, 0, 0),
        (6, 0, 0),  # ROM
        (CONFIG, R | W, 256),
        (8, 0, 0),  # VGA
    ],
)
async def test_region_info_plain(index: int, flags: int, size: int) -> None:
    async with served() as (_, _s, c):
        msg = await c.region_info(index)
        assert info(msg.payload) == (32, flags, index, 0, size, 0)
        assert msg.fds == [] and len(msg.payload) == 32


async def test_region_info_bad_index() -> None:
    async with served() as (_, _s, c):
        for index in (9, 0xFFFFFFFF):
            msg = await c.request(5, struct.pack("<IIIIQQ", 32, 0, index, 0, 0, 0), check=False)
            assert msg.is_error and msg.error == errno.EINVAL
        msg = await c.request(5, struct.pack("<IIIIQQ", 16, 0, 0, 0, 0, 0), check=False)
        assert msg.is_error and msg.error == errno.EINVAL  # argsz below the fixed struct


async def test_sparse_mmap_region_info_argsz_negotiation_and_shared_memory() -> None:
    async with served() as (dev, _s, c):
        # Too small for the capability: argsz says what is needed, no caps, no fd.
        msg = await c.region_info(2, argsz=32)
        needed = 32 + 8 + 8 + 16
        argsz, flags, index, cap_offset, size, _ = info(msg.payload)
        assert (argsz, index, cap_offset, size) == (needed, 2, 0, 0x10000)
        assert not flags & CAPS and len(msg.payload) == 32 and msg.fds == []
        # Retry with the needed size: VFIO_REGION_INFO_CAP_SPARSE_MMAP, id 1 version 1.
        msg = await c.region_info(2, argsz=needed)
        argsz, flags, index, cap_offset, size, offset = info(msg.payload)
        assert (argsz, flags, cap_offset, size) == (needed, R | W | MMAP | CAPS, 32, 0x10000)
        cap_id, version, nxt, nr, _rsv = struct.unpack_from("<HHIII", msg.payload, cap_offset)
        assert (cap_id, version, nxt, nr) == (1, 1, 0, 1)
        area = struct.unpack_from("<QQ", msg.payload, cap_offset + 16)
        assert area == (0x1000, 0x2000)
        assert len(msg.fds) == 1
        fd = msg.fds[0]
        m = mmap.mmap(fd, 0x2000, mmap.MAP_SHARED, offset=offset + area[0])
        try:
            dev.bar_memory(2)[0x1800:0x1804] = b"dev!"
            assert m[0x800:0x804] == b"dev!"  # device updates seen by the client mapping
            m[0x10:0x14] = b"cli!"
            assert bytes(dev.bar_memory(2)[0x1010:0x1014]) == b"cli!"
            # Trapped accesses inside the window are served from the same memory,
            # accesses outside it reach bar_read.
            assert await c.region_read(2, 0x1800, 4) == b"dev!"
            await c.region_write(2, 0x1020, b"\x11\x22")
            assert m[0x20:0x22] == b"\x11\x22"
            assert await c.region_read(2, 0x40, 8) == struct.pack("<Q", 0xA5A5A5A5_00000040)
            assert dev.accesses == [("r", 2, 0x40, 8)]
        finally:
            m.close()
            os.close(fd)


async def test_config_space_header_and_msix_capability() -> None:
    async with served() as (_, _s, c):
        cfg = await c.region_read(CONFIG, 0, 256)
        vendor, device, _command, status = struct.unpack_from("<HHHH", cfg, 0)
        assert (vendor, device) == (SCRATCH_VENDOR, SCRATCH_DEVICE)
        assert cfg[8] == 3 and int.from_bytes(cfg[9:12], "little") == SCRATCH_CLASS
        assert cfg[0x0E] == 0  # type 0 header
        assert struct.unpack_from("<HH", cfg, 0x2C) == (0x1234, 0x5678)
        assert status & 0x10  # capability list present
        assert cfg[0x3D] == 1  # INTA
        bar0, bar2 = struct.unpack_from("<I", cfg, 0x10)[0], struct.unpack_from("<I", cfg, 0x18)[0]
        assert bar0 & 0xF == 0 and bar2 & 0xF == 0x4 | 0x8  # 64-bit prefetchable
        ptr = cfg[0x34]
        assert ptr >= 0x40 and ptr % 4 == 0
        assert cfg[ptr] == 0x11 and cfg[ptr + 1] == 0  # MSI-X, end of list
        control, table, pba = struct.unpack_from("<HII", cfg, ptr + 2)
        assert control == 3 - 1
        assert (table & 7, table & ~7) == (4, 0)
        assert (pba & 7, pba & ~7) == (4, 0x800)


async def test_config_bar_sizing_and_write_masks() -> None:
    async with served() as (dev, _s, c):
        await c.region_write(CONFIG, 0x10, b"\xff\xff\xff\xff")
        assert struct.unpack("<I", await c.region_read(CONFIG, 0x10, 4))[0] == 0xFFFFF000
        await c.region_write(CONFIG, 0x18, b"\xff\xff\xff\xff\xff\xff\xff\xff")
        lo, hi = struct.unpack("<II", await c.region_read(CONFIG, 0x18, 8))
        assert (lo, hi) == (0xFFFF0000 | 0xC, 0xFFFFFFFF)
        await c.region_write(CONFIG, 0x14, b"\xff\xff\xff\xff")  # unused BAR1: read-only 0
        assert await c.region_read(CONFIG, 0x14, 4) == b"\0\0\0\0"
        await c.region_write(CONFIG, 0x00, b"\xff\xff\xff\xff")  # IDs are read-only
        assert await c.region_read(CONFIG, 0, 4) == struct.pack("<HH", SCRATCH_VENDOR,
                                                                 SCRATCH_DEVICE)
        await c.region_write(CONFIG, 0x04, b"\xff\xff")  # command: only defined bits stick
        assert struct.unpack("<H", await c.region_read(CONFIG, 4, 2))[0] == 0x0547
        # MSI-X enable / function mask are writable, the table size is not.
        ptr = dev.msix_cap_offset
        await c.region_write(CONFIG, ptr + 2, b"\xff\xff")
        assert struct.unpack("<H", await c.region_read(CONFIG, ptr + 2, 2))[0] == 0xC002


async def test_config_status_reflects_intx_level() -> None:
    async with served() as (dev, _s, c):
        assert not (await c.region_read(CONFIG, 6, 2))[0] & 0x08
        dev.set_irq(1, True)
        assert (await c.region_read(CONFIG, 6, 2))[0] & 0x08
        dev.set_irq(1, False)
        assert not (await c.region_read(CONFIG, 4, 4))[2] & 0x08


@pytest.mark.parametrize("size", [1, 2, 4, 8])
async def test_bar_accesses_of_each_size(size: int) -> None:
    async with served() as (dev, _s, c):
        value = bytes(range(0x10, 0x10 + size))
        await c.region_write(0, 0x100, value)
        assert dev.accesses[-1] == ("w", 0, 0x100, size, int.from_bytes(value, "little"))
        assert await c.region_read(0, 0x100, size) == value
        assert dev.accesses[-1] == ("r", 0, 0x100, size)
        got = await c.region_read(2, 0x8000, size)
        assert got == (0xA5A5A5A5_00008000).to_bytes(8, "little")[:size]


async def test_posted_writes_are_ordered_before_next_reply() -> None:
    async with served() as (dev, _s, c):
        for i in range(10):
            c.region_write_posted(0, 4 * i, struct.pack("<I", i + 1))
        assert await c.region_read(0, 36, 4) == struct.pack("<I", 10)
        assert [a[2] for a in dev.accesses if a[0] == "w"] == [4 * i for i in range(10)]


async def test_bar_access_errors() -> None:
    async with served() as (dev, _s, c):
        cases = [
            (0, 0xFFC, 8),  # past BAR0's end
            (0, 0x1000, 1),
            (1, 0, 4),  # unused BAR
            (6, 0, 4),  # ROM: size 0
            (9, 0, 4),  # no such region
            (CONFIG, 0xFE, 4),  # past config end
            (0, 0, 0),  # empty access
            (0, 1 << 63, 4),
        ]
        for region, off, count in cases:
            msg = await c.request(REGION_READ, struct.pack("<QII", off, region, count),
                                  check=False)
            assert msg.is_error and msg.error == errno.EINVAL, (region, off, count)
            msg = await c.request(
                REGION_WRITE, struct.pack("<QII", off, region, count) + b"\0" * count,
                check=False,
            )
            assert msg.is_error and msg.error == errno.EINVAL, (region, off, count)
        assert dev.accesses == []


async def test_odd_sized_bar_access_is_split() -> None:
    async with served() as (dev, _s, c):
        await c.region_write(0, 0x10, bytes(range(12)))
        assert [a[2:4] for a in dev.accesses] == [(0x10, 4), (0x14, 4), (0x18, 4)]
        assert await c.region_read(0, 0x11, 3) == bytes([1, 2, 3])


async def test_device_exception_becomes_eio() -> None:
    async with served() as (dev, _s, c):
        def boom(*_a: object) -> int:
            raise RuntimeError("model bug")

        dev.bar_read = boom  # type: ignore[method-assign]
        msg = await c.request(REGION_READ, struct.pack("<QII", 0, 0, 4), check=False)
        assert msg.is_error and msg.error == errno.EIO
        assert await c.region_read(CONFIG, 0, 2) == b"\xf4\x1a"


def multi(*writes: tuple[int, int, bytes]) -> bytes:
    body = struct.pack("<Q", len(writes))
    for region, off, data in writes:
        body += struct.pack("<QII", off, region, len(data)) + data.ljust(8, b"\0")
    return body


async def test_region_write_multi() -> None:
    async with served() as (dev, _s, c):
        msg = await c.request(
            REGION_WRITE_MULTI,
            multi((0, 0x20, b"\x01\x02\x03\x04"), (0, 0x28, b"\xaa"), (CONFIG, 0x3C, b"\x2a")),
        )
        assert msg.payload == struct.pack("<Q", 3)
        assert dev.accesses == [("w", 0, 0x20, 4, 0x04030201), ("w", 0, 0x28, 1, 0xAA)]
        assert (await c.region_read(CONFIG, 0x3C, 1)) == b"\x2a"


async def test_region_write_multi_invalid_applies_nothing() -> None:
    async with served() as (dev, _s, c):
        bad = multi((0, 0x20, b"\x01\x02\x03\x04"), (0, 0xFFF, b"\x01\x02"))  # 2nd past end
        msg = await c.request(REGION_WRITE_MULTI, bad, check=False)
        assert msg.is_error and msg.error == errno.EINVAL
        count9 = struct.pack("<Q", 1) + struct.pack("<QII", 0, 0, 9) + b"\0" * 8
        msg = await c.request(REGION_WRITE_MULTI, count9, check=False)
        assert msg.is_error and msg.error == errno.EINVAL
        wrong_cnt = multi((0, 0, b"\x01"))[:-24] + struct.pack("<QII", 0, 0, 1) + b"\0" * 4
        msg = await c.request(REGION_WRITE_MULTI, wrong_cnt, check=False)
        assert msg.is_error and msg.error == errno.EINVAL
        assert dev.accesses == []


async def test_device_reset_calls_hook_and_resets_config() -> None:
    async with served() as (dev, server, c):
        await c.region_write(CONFIG, 4, b"\x06\x00")  # memory + bus master
        await c.region_write(0, 0, b"\x55")
        msg = await c.request(DEVICE_RESET)
        assert msg.payload == b"" and msg.size == 16
        assert dev.resets == 1 and server.stats.resets == 1
        assert await c.region_read(CONFIG, 4, 2) == b"\0\0"
        assert await c.region_read(0, 0, 1) == b"\0"
        c.send(DEVICE_RESET, flags=NO_REPLY)
        await c.device_info()
        assert dev.resets == 2


async def test_a_client_that_takes_no_fds_gets_no_mmap_area() -> None:
    """VERSION max_msg_fds is the most fds the client takes in one message: with 0 the BAR is
    offered without MMAP, its capability or its memfd; its sparse area is still served by
    trapped accesses, from the same memory."""
    async with served(negotiate=False) as (dev, _s, c):
        await c.negotiate({"capabilities": {"max_msg_fds": 0}})
        msg = await c.region_info(2, argsz=64)
        _argsz, flags, _index, cap_offset, size, _ = info(msg.payload)
        assert (flags, cap_offset, size) == (R | W, 0, 0x10000) and msg.fds == []
        dev.bar_memory(2)[0x1800:0x1804] = b"dev!"
        assert await c.region_read(2, 0x1800, 4) == b"dev!"

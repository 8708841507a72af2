"""Every command, fed undecodable or hostile payloads: an ERROR reply with a client errno and
one log line, never EIO and never a traceback (the class of the VERSION RecursionError
finding, checked for all handlers)."""

from __future__ import annotations

import errno
import logging
import random
import struct

import pytest
from support.vfio_user_client import HDR, NO_REPLY, REPLY, served, server_log

CLIENT_ERRNOS = {errno.EINVAL, errno.ENOTSUP, errno.EEXIST, errno.ENOENT, errno.ENOSPC}

# A valid-looking payload per command, to mutate.
SEEDS = {
    1: struct.pack("<HH", 0, 0) + b'{"capabilities":{"max_msg_fds":8}}\0',
    2: struct.pack("<IIQQQ", 32, 3, 0, 0x10000, 0x1000),
    3: struct.pack("<IIQQ", 24, 0, 0x10000, 0x1000),
    4: struct.pack("<IIII", 16, 0, 0, 0),
    5: struct.pack("<IIIIQQ", 32, 0, 2, 0, 0, 0),
    6: struct.pack("<IIII", 32, 0, 0, 0),
    7: struct.pack("<IIII", 16, 0, 2, 0),
    8: struct.pack("<IIIII", 21, 0x22, 2, 0, 1) + b"\1",
    9: struct.pack("<QII", 0, 7, 4),
    10: struct.pack("<QII", 0x10, 0, 4) + b"abcd",
    13: b"",
    15: struct.pack("<Q", 1) + struct.pack("<QII", 0x10, 0, 4) + bytes(8),
    16: struct.pack("<II", 16, 0) + bytes(8),
}


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip a byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:  # truncate
            del b[rng.randrange(len(b) + 1):]
        elif op == 2:  # extend
            b += rng.randbytes(rng.choice((1, 3, 8, 64)))
        elif op == 3 and len(b) >= 4:  # a boundary value in a 32-bit field
            at = rng.randrange(0, len(b) - 3)
            b[at:at + 4] = struct.pack("<I", rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 0x1000)))
        elif op == 4 and len(b) >= 8:  # ... or a 64-bit one
            at = rng.randrange(0, len(b) - 7)
            b[at:at + 8] = struct.pack("<Q", rng.choice((0, 1 << 63, (1 << 64) - 1, 0x1000)))
        else:
            b = bytearray(rng.randbytes(rng.randrange(0, 80)))
    return bytes(b)


@pytest.mark.parametrize("cmd", sorted(SEEDS))
async def test_garbage_payloads_get_client_errnos_and_one_line_each(
    cmd: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qemu_panthor.vfio_user")
    rng = random.Random(cmd)
    async with served() as (_, server, c):
        errors = 0
        for i in range(400):
            payload = mutate(rng, SEEDS[cmd])
            flags = NO_REPLY if i % 10 == 9 else 0
            if cmd == 13 and i % 2:
                continue  # DEVICE_RESET: succeeds with any payload, and resets state
            c.send_raw(HDR.pack(i, cmd, 16 + len(payload), flags, 0) + payload)
            if flags & NO_REPLY:
                continue
            msg = await c.recv()
            assert msg.flags & 0xF == REPLY  # no DMA request expected here
            assert msg.id == i and msg.command == cmd
            if msg.is_error:
                errors += 1
                assert msg.error in CLIENT_ERRNOS, (cmd, payload.hex(), msg.error)
                assert msg.size == 16
        assert sum(server.stats.errors.values()) >= errors
        lines = server_log(caplog.records)
        # one line per error, plus the one warning of a connection whose DMA_MAPs had no fd
        assert len(lines) == sum(server.stats.errors.values()) + bool(
            server.stats.dma_maps_without_fd)
        assert errno.EIO not in server.stats.errors
        assert await c.device_info() == (16, 3, 9, 5)

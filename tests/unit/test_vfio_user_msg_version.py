"""VFIO_USER_VERSION: malformed capability documents get EINVAL and one log line, never a
traceback (fuzzer finding: deeply nested JSON raised RecursionError, logged with a full
traceback and answered EIO)."""

from __future__ import annotations

import errno
import logging
import struct

import pytest
from support.vfio_user_client import VERSION, expect_errno, served, server_log


def version(doc: bytes, major: int = 0, minor: int = 0) -> bytes:
    return struct.pack("<HH", major, minor) + doc


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qemu_panthor.vfio_user")


async def test_deeply_nested_capabilities_get_einval_and_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    async with served(negotiate=False) as (_, server, c):
        await expect_errno(c, VERSION, version(b'{"capabilities":' + deep + b"}\0"))
        await expect_errno(c, VERSION, version(b'{"capabilities":{"x":' + b'{"a":' * 50_000
                                               + b"1" + b"}" * 50_000 + b"}}\0"))
        lines = server_log(caplog.records)
        assert len(lines) == 2 and all("nested too deeply" in r.getMessage() for r in lines)
        assert server.stats.errors == {errno.EINVAL: 2}
        await c.negotiate()  # the session still works


@pytest.mark.parametrize(
    "doc",
    [
        b"\xff\xfe{}\0",  # not UTF-8
        b'{"capabilities":{"max_msg_fds":' + b"9" * 5000 + b"}}\0",  # int over the digit limit
        b'{"capabilities":{"max_data_xfer_size":1e999}}\0',  # inf
        b'{"capabilities":{"max_msg_fds":-1}}\0',
        b'{"capabilities":{"max_msg_fds":true}}\0',
        b'{"capabilities":null}\0',
        b"[]\0",
        b"\0",  # empty document
        b'{"a":1}{"b":2}\0',  # trailing data
        b'{"capabilities":{}}\0\0',  # NUL inside
    ],
)
async def test_malformed_capabilities_get_einval_and_one_line(
    doc: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(negotiate=False) as (_, _s, c):
        await expect_errno(c, VERSION, version(doc))
        assert len(server_log(caplog.records)) == 1
        await c.negotiate()

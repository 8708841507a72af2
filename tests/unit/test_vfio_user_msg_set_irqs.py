"""VFIO_USER_DEVICE_SET_IRQS: trigger fds must be eventfds, written without blocking, and a
failing one is reported once and disabled until the client sets a trigger again.

Fuzzer findings: a pipe or socket handed as trigger stalled the event loop (> 5 s without
replies) once full; "eventfd N write failed: Bad file descriptor / Broken pipe" was logged
150,000 times in 120 s.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time

import pytest
from support.vfio_user_client import (
    IRQ_ACTION_TRIGGER,
    IRQ_ACTION_UNMASK,
    IRQ_DATA_EVENTFD,
    IRQ_DATA_NONE,
    SET_IRQS,
    eventfd,
    eventfd_count,
    expect_errno,
    served,
    server_log,
)

INTX, MSIX, ERR = 0, 2, 3
SET_TRIGGER = IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER
EVENTFD_MAX = 0xFFFF_FFFF_FFFF_FFFE  # a write of 1 on top of this would block (or EAGAIN)


def saturated_eventfd() -> int:
    """An eventfd whose counter is full: every further write fails (EAGAIN)."""
    fd = os.eventfd(0, os.EFD_NONBLOCK)
    os.eventfd_write(fd, EVENTFD_MAX)
    return fd


def set_irqs(index: int, start: int, count: int, flags: int = SET_TRIGGER) -> bytes:
    return struct.pack("<IIIII", 20, flags, index, start, count)


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="qemu_panthor.vfio_user")


async def test_pipe_socket_and_file_triggers_are_refused(tmp_path: object) -> None:
    async with served() as (dev, server, c):
        r, w = os.pipe()
        a, b = socket.socketpair()
        memfd = os.memfd_create("not-an-eventfd")
        try:
            for fd in (w, r, a.fileno(), memfd):
                await expect_errno(c, SET_IRQS, set_irqs(INTX, 0, 1), fds=[fd])
                await expect_errno(c, SET_IRQS, set_irqs(ERR, 0, 1), fds=[fd])
                await expect_errno(c, SET_IRQS, set_irqs(MSIX, 1, 1), fds=[fd])
            efd = eventfd()
            # One bad fd among good ones: nothing is taken.
            await expect_errno(c, SET_IRQS, set_irqs(MSIX, 0, 2), fds=[efd, w])
            os.close(efd)
            router = server.connection.router
            assert router.intx_fd is None and router.err_fd is None
            assert router.msix_fds == [None, None, None]
            os.set_blocking(r, False)
            for _ in range(64):
                dev.set_irq(0, True)
                dev.set_irq(0, False)
            with pytest.raises(BlockingIOError):
                os.read(r, 1)  # the server wrote nothing into the pipe
        finally:
            for fd in (r, w, memfd):
                os.close(fd)
            a.close()
            b.close()


async def test_trigger_is_made_non_blocking() -> None:
    async with served() as (_, _s, c):
        efd = os.eventfd(0)  # blocking, as a careless client would make it
        try:
            await c.set_irqs(INTX, SET_TRIGGER, 0, 1, fds=[efd])
            assert not os.get_blocking(efd)  # same open file description as the server's
        finally:
            os.close(efd)


async def test_burst_on_a_saturated_trigger_neither_blocks_nor_floods(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with served() as (dev, _s, c):
        efd = saturated_eventfd()  # the client never reads it
        fds = [eventfd(), efd, eventfd()]
        try:
            await c.set_irqs(MSIX, SET_TRIGGER, 0, 3, fds=fds)
            t0 = time.monotonic()
            for i in range(10_000):
                dev.set_irq(1, True)
                dev.set_irq(1, False)
                if i < 50:  # client-side triggers of the dead vector: nothing to write to
                    await c.set_irqs(MSIX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 1, 1)
            assert time.monotonic() - t0 < 5
            assert await c.region_read(7, 0, 2) == b"\xf4\x1a"  # still serving
            lines = [r for r in server_log(caplog.records) if "eventfd" in r.getMessage()]
            assert len(lines) == 1 and "MSI-X vector 1" in lines[0].getMessage()
            assert lines[0].levelno == logging.WARNING
            # The other vectors are unaffected.
            dev.set_irq(2, True)
            assert eventfd_count(fds[2]) == 1
        finally:
            for fd in fds:
                os.close(fd)


async def test_failed_trigger_is_disabled_until_set_again() -> None:
    async with served() as (dev, server, c):
        dead = saturated_eventfd()
        try:
            await c.set_irqs(INTX, SET_TRIGGER, 0, 1, fds=[dead])
            dev.set_irq(0, True)  # the write fails: INTx trigger dropped
            assert server.connection.router.intx_fd is None
            dev.set_irq(0, False)
            await c.set_irqs(INTX, IRQ_DATA_NONE | IRQ_ACTION_UNMASK, 0, 1)
            dev.set_irq(0, True)
            assert os.eventfd_read(dead) == EVENTFD_MAX  # nothing more was attempted
            # A new trigger works again, and fires at once: the line is still asserted.
            efd = eventfd()
            await c.set_irqs(INTX, SET_TRIGGER, 0, 1, fds=[efd])
            assert eventfd_count(efd) == 1
            os.close(efd)
        finally:
            os.close(dead)


async def test_msix_vector_asserted_while_its_trigger_failed_fires_on_the_new_one() -> None:
    async with served() as (dev, _s, c):
        dead = saturated_eventfd()
        try:
            await c.set_irqs(MSIX, SET_TRIGGER, 0, 1, fds=[dead])
            dev.set_irq(0, True)  # not delivered
            efd = eventfd()
            await c.set_irqs(MSIX, SET_TRIGGER, 0, 1, fds=[efd])
            assert eventfd_count(efd) == 1
            os.close(efd)
        finally:
            os.close(dead)

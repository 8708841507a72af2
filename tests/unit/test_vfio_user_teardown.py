"""Connection teardown frees memory at once, and a client cannot make the server hoard it.

Fuzzer finding: closed connections stayed alive until the cycle collector ran, each holding
its 1.1 MiB receive buffer; under connect/disconnect churn RSS grew in steps.
"""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.vfio_user_client import (
    HDR,
    IRQ_ACTION_TRIGGER,
    IRQ_DATA_EVENTFD,
    NO_REPLY,
    REGION_READ,
    REGION_WRITE,
    ScratchDevice,
    VfioUserClient,
    eventfd,
    guest_memfd,
    served,
)

from qemu_panthor.vfio_user import VfioUserServer
from qemu_panthor.vfio_user.connection import HIGH_WATER


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only reference counting frees objects: a reference cycle shows up as a leak."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def poll_until(cond: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Wait (short awaits, bounded) until ``cond()`` holds; fail naming ``what`` if it does not."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.001)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def busy_session(c: VfioUserClient, ram: int) -> None:
    await c.negotiate()
    await c.dma_map(0, 0x10000, fd=ram)
    await c.dma_map(0x100000, 0x1000)  # message-based
    efd = eventfd()
    await c.set_irqs(0, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 1, fds=[efd])
    os.close(efd)
    for f in (await c.region_info(2, argsz=64)).fds:
        os.close(f)
    await c.region_read(0, 0, 4)
    c.send(REGION_READ, struct.pack("<QII", 0, 7, 4))  # unanswered when we hang up


async def test_closed_connection_is_freed_without_the_cycle_collector(no_gc: None) -> None:
    ram = guest_memfd(0x10000)
    async with served(negotiate=False) as (dev, server, c):
        await busy_session(c, ram)
        conn = server.connection
        assert conn is not None
        refs = [weakref.ref(o) for o in (conn, conn.outbox, conn.requests, conn.router,
                                         conn.dma, conn.version)]
        del conn
    await asyncio.sleep(0)
    assert [r() for r in refs] == [None] * len(refs)
    assert dev.irq_sink is None and dev.dma_port is None
    os.close(ram)


async def test_rss_stays_flat_under_connect_disconnect_churn(
    tmp_path: Path, no_gc: None
) -> None:
    dev = ScratchDevice()
    server = VfioUserServer(dev)
    path = str(tmp_path / "churn.sock")
    await server.listen_path(path)
    serving = asyncio.create_task(server.serve())
    ram = guest_memfd(0x10000)

    async def session() -> None:
        c = await VfioUserClient.connect(path)
        await busy_session(c, ram)
        c.close()
        while server.stats.connections and server.connection is not None:
            await asyncio.sleep(0.0005)

    for _ in range(20):  # warm-up: allocator pools, lazily built objects
        await session()
    before = rss()
    for _ in range(300):
        await session()
    grown = rss() - before
    # A leaked connection keeps its 1.1 MiB buffer: 300 of them would be > 300 MiB.
    assert grown < 16 << 20, f"RSS grew by {grown >> 20} MiB over 300 sessions"
    await server.close()
    await asyncio.wait_for(serving, 5)
    os.close(ram)
    dev.close()


async def test_client_that_never_reads_replies_cannot_grow_the_queue() -> None:
    """Requests for big replies from a client that does not read them: the server stops
    reading requests while its reply queue is over HIGH_WATER, then catches up."""
    async with served() as (_, server, c):
        req = HDR.pack(0, REGION_READ, 32, 0, 0) + struct.pack("<QII", 0x1000, 2, 0x2000)
        n = 4000  # 4000 x 8 KiB = 31 MiB of replies
        await c.loop.sock_sendall(c.sock, req * n)
        conn = server.connection
        assert conn is not None
        await poll_until(lambda: conn.paused, "the server to stop reading (conn.paused)")
        assert conn.outbox.queued_bytes <= HIGH_WATER + 0x2000 + 32
        for _ in range(n):
            msg = await c.recv()
            assert not msg.is_error and len(msg.payload) == 16 + 0x2000
        assert not conn.paused and conn.outbox.queued_bytes == 0
        assert await c.region_read(7, 0, 2) == b"\xf4\x1a"


async def test_fds_for_a_message_that_never_completes_are_bounded() -> None:
    async with served() as (_, server, c):
        conn = server.connection
        assert conn is not None
        s0 = conn.base + conn.end  # stream offset: what negotiation sent is all received
        r, w = os.pipe()
        try:
            head = HDR.pack(9, 4, 16 + 16, 0, 0)  # DEVICE_GET_INFO, payload still to come
            c.send_raw(head, [r] * 16)
            for _ in range(10):  # more fds, one byte at a time, same message
                c.send_raw(b"\0", [r] * 16)
            await poll_until(lambda: conn.base + conn.end == s0 + 16 + 10,
                             "the server to receive the header and the 10 bytes")
            assert server.max_msg_fds == 16
            # Each sendmsg above is one SCM_RIGHTS batch, and a unix stream recvmsg returns at
            # most one batch: 11 batches of 16 fds. _bound_pending_fds closes everything queued
            # once the queue holds more than max_msg_fds (after batches 2, 4, ..., 10) and
            # leaves the overflow marker (offset of batch 10's byte, no fds, truncated);
            # batch 11 (its byte at s0 + 25) fits behind it.
            marker, last = conn.fdq
            assert marker == (s0 + 16 + 9 - 1, [], True)
            held = last[1]
            assert (last[0], len(held), last[2]) == (s0 + 16 + 10 - 1, 16, False)
            c.send_raw(bytes(6))
            msg = await c.recv()
            assert msg.id == 9 and msg.is_error  # the message fails: too many fds
            assert not conn.fdq  # the marker and the last batch went with the message
            assert await c.device_info() == (16, 3, 9, 5)
        finally:
            os.close(r)
            os.close(w)


def test_peer_gone_with_replies_unread_is_noticed_under_uvloop() -> None:
    """Fuzzer finding (hang): the client hangs up with our replies unread (POLLERR on our
    socket) right after a message that needs no reply. uvloop calls the reader once more and
    then drops the watch; the server must see the EOF in that call, or it serves the dead
    connection forever and never accepts the next client."""
    import uvloop

    async def main() -> None:
        for posted in (True, False):
            async with served() as (_, server, c):
                conn = server.connection
                c.send(REGION_READ, struct.pack("<QII", 0, 7, 4096))  # reply left unread
                await asyncio.sleep(0.05)
                if posted:  # a posted write: nothing to reply
                    c.send(REGION_WRITE, struct.pack("<QII", 0x10, 0, 4) + bytes(4),
                           flags=NO_REPLY)
                else:  # half a message: nothing to reply yet
                    c.send_raw(HDR.pack(1, REGION_READ, 32, 0, 0))
                c.close()
                for _ in range(200):
                    if conn is not None and conn.closed:
                        break
                    await asyncio.sleep(0.01)
                assert conn is not None and conn.closed

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())

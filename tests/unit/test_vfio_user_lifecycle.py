"""Connection lifetime: cleanup on disconnect, accept of the next client, no fd leak, trace."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path

from support.vfio_user_client import (
    IRQ_ACTION_TRIGGER,
    IRQ_DATA_EVENTFD,
    ScratchDevice,
    VfioUserClient,
    eventfd,
    eventfd_count,
    guest_memfd,
    served,
)

from qemu_panthor.vfio_user import VfioUserServer


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_disconnect_releases_client_resources_and_keeps_device_state() -> None:
    dev = ScratchDevice()
    async with served(dev) as (_, server, c):
        fd = guest_memfd(0x1000)
        efd = eventfd()
        await c.dma_map(0, 0x1000, fd=fd)
        await c.set_irqs(0, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 1, fds=[efd])
        await c.region_write(0, 0x10, b"\x42")
        assert len(dev.dma.regions) == 1
    assert server.connection is None
    assert dev.dma.regions == ()
    dev.set_irq(0, True)  # no client: level recorded, nothing signalled
    assert eventfd_count(efd) == 0
    assert dev.regs[0x10] == 0x42  # device state survives the disconnect
    os.close(fd)
    os.close(efd)


async def test_1000_connects_without_fd_leak(tmp_path: Path) -> None:
    dev = ScratchDevice()
    server = VfioUserServer(dev)
    path = str(tmp_path / "vfu.sock")
    await server.listen_path(path)
    serving = asyncio.create_task(server.serve())
    ram = guest_memfd(0x10000)

    async def one_session() -> None:
        c = await VfioUserClient.connect(path)
        await c.negotiate()
        await c.dma_map(0, 0x10000, fd=ram)
        efd = eventfd()
        await c.set_irqs(0, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 1, fds=[efd])
        os.close(efd)
        reply = await c.region_info(2, argsz=64)  # carries a BAR memfd
        for f in reply.fds:
            os.close(f)
        c.close()

    await one_session()  # warm-up: lazily created objects, loop internals
    while server.connection is not None:
        await asyncio.sleep(0.001)
    gc.collect()  # fds held by earlier tests' garbage must not close during the count
    before = open_fds()
    for _ in range(1000):
        await one_session()
    for _ in range(2000):  # the server notices the last EOF
        if server.connection is None:
            break
        await asyncio.sleep(0.001)
    assert server.connection is None
    gc.collect()
    # No growth: a per-session leak shows as >= 1000 extra fds. Fewer is fine: other
    # tests' event loops and executors may still be closing theirs meanwhile.
    assert open_fds() <= before
    assert server.stats.connections == 1001
    assert server.stats.dma_maps_with_fd == 1001
    await server.close()
    await asyncio.wait_for(serving, 5)
    assert not os.path.exists(path)
    os.close(ram)
    dev.close()


async def test_close_while_client_connected(tmp_path: Path) -> None:
    dev = ScratchDevice()
    server = VfioUserServer(dev)
    path = str(tmp_path / "s.sock")
    serving = asyncio.create_task(server.serve_path(path))
    for _ in range(1000):
        if os.path.exists(path):
            break
        await asyncio.sleep(0.001)
    c = await VfioUserClient.connect(path)
    await c.negotiate()
    await server.close()
    await asyncio.wait_for(serving, 5)
    assert await c.sock_eof()
    c.close()
    dev.close()


async def test_trace_logs_region_accesses_and_irqs(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="qemu_panthor.vfio_user.trace")
    async with served(trace=True) as (dev, _s, c):
        efd = eventfd()
        await c.set_irqs(0, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 1, fds=[efd])
        await c.region_write(0, 0x20, b"\x01\x00\x00\x00")
        await c.region_read(0, 0x20, 4)
        dev.set_irq(0, True)
        os.close(efd)
    text = caplog.text
    assert "write BAR0+0x20/4 <- 0x1" in text
    assert "read  BAR0+0x20/4 -> 0x1" in text
    assert "INTx fire" in text


async def test_no_trace_output_by_default(caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG, logger="qemu_panthor.vfio_user.trace")
    async with served() as (_, _s, c):
        await c.region_read(0, 0, 4)
    assert "BAR0" not in caplog.text

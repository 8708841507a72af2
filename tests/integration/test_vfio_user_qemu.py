"""Smoke test of the vfio-user server against the real QEMU 11.1 vfio-user-pci client.

QEMU realizes the device from our server (VERSION, DMA_MAP with the memfd RAM's fd,
DEVICE_GET_INFO, region/IRQ info, config reads) and lists it in ``query-pci`` with the
IDs and BAR sizes the server's config space and region info describe. Guest-side BAR access
and interrupt delivery need a guest kernel and are tested elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from qemu_panthor.setup import toolroot as toolroot_mod
from qemu_panthor.setup.toolroot import ToolRoot
from qemu_panthor.vfio_user import BarSpec, MsixCapability, PciFunction, VfioUserServer
from qemu_panthor.vfio_user import protocol as P

pytestmark = pytest.mark.integration

VENDOR, DEVICE, CLASS = 0x1AF4, 0x10F0, 0x0B4000


class Scratch(PciFunction):
    """BAR0: 4 KiB scratch registers; BAR2: 64-bit 1 MiB with MSI-X table and PBA."""

    def __init__(self) -> None:
        super().__init__(
            vendor_id=VENDOR,
            device_id=DEVICE,
            class_code=CLASS,
            subsystem_vendor_id=VENDOR,
            subsystem_id=0x0001,
            bars={0: BarSpec(0x1000), 2: BarSpec(0x100000, is64=True)},
            msix=MsixCapability(vectors=3, table_bar=2, table_offset=0, pba_bar=2,
                                pba_offset=0x1000),
        )
        self.regs = bytearray(0x1000)

    def bar_read(self, bar: int, offset: int, size: int) -> int:
        return int.from_bytes(self.regs[offset : offset + size], "little") if bar == 0 else 0

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if bar == 0:
            self.regs[offset : offset + size] = value.to_bytes(size, "little")


@pytest.fixture
def _toolroot(toolroot: ToolRoot) -> ToolRoot:
    """The cached tool root (tests/conftest.py), or $QEMU_PANTHOR_TOOLROOT when set."""
    root = toolroot_mod.from_env() or toolroot
    root.check()
    return root


async def test_qemu_realizes_vfio_user_device(_toolroot: ToolRoot, tmp_path: Path) -> None:
    sock = tmp_path / "vfu.sock"
    qmp_sock = tmp_path / "qmp.sock"
    dev = Scratch()
    server = VfioUserServer(dev)
    await server.listen_path(sock)  # must listen before QEMU realizes the device
    serving = asyncio.create_task(server.serve(once=True))
    qmp = QMPClient("vfio-user-smoke")
    await qmp.start_server(str(qmp_sock))
    device = (
        f'{{"driver":"vfio-user-pci","id":"gpu0","socket":{{"type":"unix","path":"{sock}"}}}}'
    )
    argv = [
        *_toolroot.qemu_argv(),
        "-M", "virt", "-cpu", "max", "-m", "256M", "-nographic", "-S",
        "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
        "-machine", "memory-backend=mem",
        "-device", device,
        "-qmp", f"unix:{qmp_sock}",
        "-monitor", "none", "-serial", "none",
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        accept = asyncio.ensure_future(qmp.accept())
        exited = asyncio.ensure_future(proc.wait())
        await asyncio.wait({accept, exited}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not accept.done():
            accept.cancel()
            out = (await proc.stdout.read()).decode(errors="replace") if exited.done() else ""
            pytest.fail(f"QEMU did not connect to QMP (exit {proc.returncode}): {out}")
        exited.cancel()
        buses = await qmp.execute("query-pci")
        found = [d for b in buses for d in b["devices"] if d.get("qdev_id") == "gpu0"]
        assert len(found) == 1, buses
        d = found[0]
        assert d["id"]["vendor"] == VENDOR and d["id"]["device"] == DEVICE
        assert d["id"]["subsystem-vendor"] == VENDOR and d["id"]["subsystem"] == 0x0001
        assert d["class_info"]["class"] == CLASS >> 8
        sizes = {r["bar"]: r["size"] for r in d["regions"]}
        assert sizes == {0: 0x1000, 2: 0x100000}
        bar2 = next(r for r in d["regions"] if r["bar"] == 2)
        assert bar2["mem_type_64"] is True
        seen = server.stats.commands
        assert seen[P.Command.VERSION] == 1
        assert seen[P.Command.DMA_MAP] >= 1 and server.stats.dma_maps_with_fd >= 1
        assert seen[P.Command.DEVICE_GET_INFO] == 1
        assert seen[P.Command.DEVICE_GET_REGION_INFO] >= 7
        assert seen[P.Command.REGION_READ] >= 1  # config space
        assert not server.stats.errors, server.stats.errors
        assert seen[P.Command.DEVICE_SET_IRQS] >= 1  # INTx armed with an eventfd
        with contextlib.suppress(Exception):
            await qmp.execute("quit")
        await asyncio.wait_for(proc.wait(), 30)
        await asyncio.wait_for(serving, 10)  # QEMU's exit ends the connection cleanly
        assert dev.dma.regions == ()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        with contextlib.suppress(Exception):
            await qmp.disconnect()
        await server.close()
        dev.close()

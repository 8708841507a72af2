"""A device model's QMP server on a socket in the test's directory, with a client on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from qemu.qmp import QMPClient

from qemu_panthor.device import MaliPciFunction
from qemu_panthor.qmp import build_server


@contextlib.asynccontextmanager
async def qmp_client(device: MaliPciFunction, sock: Path) -> AsyncIterator[QMPClient]:
    """``build_server(device)`` listening on ``sock`` and a connected client; both closed and
    the model's hooks restored on the way out."""
    srv, events = build_server(device)
    await srv.start(sock)
    qmp = QMPClient("test")
    try:
        await qmp.connect(srv.path)
        yield qmp
    finally:
        if qmp.runstate.name != "IDLE":
            await qmp.disconnect()
        events.detach()
        await srv.close()

"""Watching a guest run from a test: bounded polls on a running Boot task, and a QMP session
to its backend that ends cleanly whatever the run did."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient


async def until(pred: Callable[[], bool], timeout: float, what: str,
                task: asyncio.Task[Any]) -> None:
    """Poll ``pred`` until true; fail if ``task`` (the run) ends first or on timeout."""
    deadline = time.monotonic() + timeout
    while not pred():
        if task.done():
            task.result()  # raise the run's own error, if any
            raise AssertionError(f"the run ended before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def qmp_session(sock: Path, task: asyncio.Task[Any],
                      timeout: float = 60) -> AsyncIterator[QMPClient]:
    """A QMP client on the backend's socket once it exists. On the way out it disconnects
    (the backend may already have closed QMP when the guest powered off: that ends the
    session, it is not a failure) and cancels the run if it is still going."""
    qmp = QMPClient("integration")
    try:
        await until(sock.exists, timeout, "the backend's QMP socket", task)
        await qmp.connect(str(sock))
        yield qmp
    finally:
        if qmp.runstate.name != "IDLE":
            with contextlib.suppress(Exception):
                await qmp.disconnect()
        if not task.done():
            task.cancel()

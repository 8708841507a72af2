"""The backend's event loop: uvloop (a dependency), or asyncio's own on request.

The vfio-user round trip is dominated by the loop itself: on these machines asyncio's
selector loop alone costs ~1.5x a bare echo server, uvloop ~1.2x (bench/bench_vfio_user.py).
``QEMU_PANTHOR_LOOP=asyncio`` forces the standard loop (for comparison or debugging).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")
ENV = "QEMU_PANTHOR_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None (asyncio's default) when ``QEMU_PANTHOR_LOOP=asyncio``."""
    if os.environ.get(ENV, "").lower() == "asyncio":
        return None
    return uvloop.new_event_loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the preferred loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


def running_loop(
    explicit: asyncio.AbstractEventLoop | None = None,
) -> asyncio.AbstractEventLoop | None:
    """The loop a device block schedules its work on: ``explicit`` if given, else the running
    loop, else None (synchronous use: unit tests pump the block themselves)."""
    if explicit is not None:
        return explicit
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

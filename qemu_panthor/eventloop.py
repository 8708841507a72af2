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


#: A timer that fired early is re-armed at least this far ahead, so the rest of its wait
#: is not spent spinning through loop iterations (uvloop's timers have 1 ms granularity).
REARM_MIN_S = 0.001


class DeadlineTimer:
    """Run ``callback`` once ``clock()`` has reached ``deadline``.

    An event loop may run a timer before its time: uvloop rounds delays to whole
    milliseconds and counts them from a loop time cached at the start of the iteration, so a
    timer armed after a long callback fires up to ~1.3 ms early by ``time.monotonic()``
    (measured here). Work that completes "at" a time must not look done before it, nor be
    forgotten because it was not done yet when the timer fired: an early timer is re-armed
    for the rest of the wait."""

    __slots__ = ("_callback", "_clock", "_handle", "_loop", "deadline")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline: float,
                 clock: Callable[[], float], callback: Callable[[], object]) -> None:
        self._loop = loop
        self.deadline = deadline
        self._clock = clock
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = loop.call_later(
            max(0.0, deadline - clock()), self._fire)

    def _fire(self) -> None:
        left = self.deadline - self._clock()
        if left > 0:
            self._handle = self._loop.call_later(max(left, REARM_MIN_S), self._fire)
            return
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def armed(self) -> bool:
        return self._handle is not None


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

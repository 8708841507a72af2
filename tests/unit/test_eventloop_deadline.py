"""DeadlineTimer: work "completes at" a time, never before it and never forgotten.

uvloop runs a timer up to ~1.3 ms before its delay has passed by time.monotonic() (delays
rounded to milliseconds, counted from the loop's cached time). The scheduler used to arm a
plain call_later for a stream waiting on work in flight and, finding the work not yet
complete when it fired, never woke the stream: a panvk frame then hung until panthor's 5 s
job timeout (found running vkmark in the guest).
"""

from __future__ import annotations

import asyncio
import time

import uvloop
from support.early_loop import EarlyLoop

from qemu_panthor.eventloop import REARM_MIN_S, DeadlineTimer


def test_an_early_timer_is_rearmed_for_the_rest_and_fires_once_due() -> None:
    now = [10.0]
    ran: list[float] = []
    loop = EarlyLoop()
    t = DeadlineTimer(loop, 10.005, lambda: now[0], lambda: ran.append(now[0]))  # type: ignore[arg-type]
    assert abs(loop.pending[0][0] - 0.005) < 1e-9 and t.armed
    now[0] = 10.0045  # the loop runs it 0.5 ms early
    loop.fire()
    assert ran == [] and t.armed
    assert loop.pending[0][0] == REARM_MIN_S  # re-armed for the rest (at least 1 ms)
    now[0] = 10.0051
    loop.fire()
    assert ran == [10.0051] and not t.armed and not loop.pending


def test_cancel_stops_a_rearmed_timer() -> None:
    now = [0.0]
    ran: list[int] = []
    loop = EarlyLoop()
    t = DeadlineTimer(loop, 1.0, lambda: now[0], lambda: ran.append(1))  # type: ignore[arg-type]
    loop.fire()  # early: re-armed
    t.cancel()
    assert not loop.pending and not t.armed and ran == []


def test_uvloop_never_runs_the_callback_before_the_deadline() -> None:
    """The real loop, after callbacks long enough to make its cached time stale."""

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        early = fired = 0
        for i in range(60):
            t0 = time.monotonic()
            while time.monotonic() - t0 < 0.003:  # a long slice: the loop's time goes stale
                pass
            deadline = time.monotonic() + 0.0004 + (i % 5) * 0.0003
            done: asyncio.Future[float] = loop.create_future()
            DeadlineTimer(loop, deadline, time.monotonic,
                          lambda d=done: d.set_result(time.monotonic()))
            at = await asyncio.wait_for(done, 5.0)  # never forgotten
            fired += 1
            early += at < deadline
        return early, fired

    early, fired = uvloop.run(main())
    assert fired == 60 and early == 0

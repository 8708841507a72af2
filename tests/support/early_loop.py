"""An event loop stand-in whose timers a test fires by hand, early ones included: what a real
loop may do (uvloop runs timers up to ~1.3 ms before their delay has passed)."""

from __future__ import annotations

import asyncio


class EarlyLoop:
    """A loop whose timers the test fires by hand, whenever it likes (early ones included)."""

    def __init__(self) -> None:
        self.pending: list[tuple[float, object]] = []

    def call_later(self, delay: float, cb: object) -> asyncio.TimerHandle:
        self.pending.append((delay, cb))
        return _Handle(self, (delay, cb))  # type: ignore[return-value]

    def is_closed(self) -> bool:
        return True  # runs no tasks: a scheduler on it is pumped by the test

    def fire(self) -> None:
        _delay, cb = self.pending.pop(0)
        cb()  # type: ignore[operator]


class _Handle:
    def __init__(self, loop: EarlyLoop, entry: tuple[float, object]) -> None:
        self.loop, self.entry = loop, entry

    def cancel(self) -> None:
        if self.entry in self.loop.pending:
            self.loop.pending.remove(self.entry)

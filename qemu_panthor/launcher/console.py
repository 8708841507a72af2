"""The guest console as the launcher shows and records it: bounded, whatever the guest does.

Two filters, applied in this order to every console line (QEMU's own messages included, they
share the pipe):

- :class:`RepeatCollapser` collapses repetitions of one line, or of a block of up to
  ``max_period`` lines: once the line (block) has been shown twice in a row, further
  repetitions become one note, ``... repeated N times`` (the line above, N more times) or
  ``... last K lines repeated N times``. A dead backend makes QEMU print the same pair of
  lines for every register the driver polls (thousands a second); the note keeps the story.
- :class:`ByteCap` stops the output after ``cap`` bytes with one clear truncation note, and
  says at the end how much it dropped.

Both are pure (lines in, lines out), so the terminal and ``console.log`` get the same text
and the filters are unit-tested without a guest.
"""

from __future__ import annotations

from collections import deque

DEFAULT_MAX_PERIOD = 8
DEFAULT_CAP_BYTES = 8 << 20


def repeat_note(count: int, period: int) -> str:
    times = "time" if count == 1 else "times"
    if period == 1:
        return f"... repeated {count} {times}"
    return f"... last {period} lines repeated {count} {times}"


class RepeatCollapser:
    """Collapse runs of an identical line, or of an identical block of up to ``max_period``
    lines, as they stream.

    A line or block is recognised once it has been shown twice in a row (so the cycle is
    visible), then every further full repetition is counted and not shown. When the stream
    leaves the cycle, the note comes first, then the lines of the unfinished repetition (if
    any), then the new line. :meth:`flush` (at the end of the stream) writes a pending note.
    """

    def __init__(self, max_period: int = DEFAULT_MAX_PERIOD) -> None:
        if max_period < 1:
            raise ValueError("max_period must be >= 1")
        self.max_period = max_period
        # The lines shown since the last note (the last 2 * max_period of them).
        self._shown: deque[str] = deque(maxlen=2 * max_period)
        self._block: list[str] | None = None  # the repeating block, while in a cycle
        self._pos = 0  # how many lines of the current repetition have been matched
        self._count = 0  # full repetitions suppressed
        self.suppressed_lines = 0  # total lines not shown (for statistics)

    def feed(self, line: str) -> list[str]:
        out: list[str] = []
        if self._block is not None:
            if line == self._block[self._pos]:
                self._pos += 1
                if self._pos == len(self._block):
                    self._pos = 0
                    self._count += 1
                    self.suppressed_lines += len(self._block)
                return out
            out.extend(self._end_cycle())
        out.append(line)
        self._shown.append(line)
        period = self._cycle_period()
        if period:
            self._block = list(self._shown)[-period:]
            self._pos = self._count = 0
        return out

    def flush(self) -> list[str]:
        """End of stream: the note of a cycle still open (and its unfinished repetition)."""
        return self._end_cycle() if self._block is not None else []

    def _end_cycle(self) -> list[str]:
        assert self._block is not None
        block, pos, count = self._block, self._pos, self._count
        self._block, self._pos, self._count = None, 0, 0
        out: list[str] = []
        if count:
            out.append(repeat_note(count, len(block)))
            self._shown.clear()  # the note breaks the sequence the reader sees
        partial = block[:pos]  # matched, but not a full repetition: real lines, shown
        out.extend(partial)
        self._shown.extend(partial)
        return out

    def _cycle_period(self) -> int:
        """The smallest K such that the last 2K lines shown are one block of K twice."""
        shown = self._shown
        n = len(shown)
        for k in range(1, self.max_period + 1):
            if 2 * k > n:
                break
            if all(shown[n - 1 - i] == shown[n - 1 - k - i] for i in range(k)):
                return k
        return 0


class ByteCap:
    """Pass lines until ``cap`` bytes (UTF-8, newline included) have passed, then one note."""

    def __init__(self, cap: int = DEFAULT_CAP_BYTES) -> None:
        self.cap = cap
        self.written = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0

    @property
    def truncated(self) -> bool:
        return self.dropped_lines > 0

    def admit(self, line: str) -> list[str]:
        size = len(line.encode(errors="replace")) + 1
        if self.dropped_lines:
            self.dropped_lines += 1
            self.dropped_bytes += size
            return []
        if self.written + size <= self.cap:
            self.written += size
            return [line]
        self.dropped_lines, self.dropped_bytes = 1, size
        return [f"[qemu-panthor: console output truncated after {self.written} bytes "
                f"(cap {self.cap}); the rest is not shown or recorded]"]

    def close(self) -> list[str]:
        if not self.dropped_lines:
            return []
        return [f"[qemu-panthor: {self.dropped_lines} console lines ({self.dropped_bytes} "
                "bytes) were dropped by the cap]"]


class ConsoleFilter:
    """:class:`RepeatCollapser` then :class:`ByteCap`: what the terminal and the log get."""

    def __init__(self, *, max_period: int = DEFAULT_MAX_PERIOD,
                 cap: int = DEFAULT_CAP_BYTES) -> None:
        self.collapser = RepeatCollapser(max_period)
        self.cap = ByteCap(cap)

    def feed(self, line: str) -> list[str]:
        return [o for c in self.collapser.feed(line) for o in self.cap.admit(c)]

    def close(self) -> list[str]:
        out = [o for c in self.collapser.flush() for o in self.cap.admit(c)]
        return out + self.cap.close()


__all__ = ["ByteCap", "ConsoleFilter", "RepeatCollapser", "repeat_note"]

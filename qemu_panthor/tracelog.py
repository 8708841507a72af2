"""The ``--trace`` log: register, IRQ and protocol traces written off the event loop.

Records are formatted where they happen (on the loop thread, cheaply) and appended to a
buffer; a writer task hands the buffer to aiofiles, so a burst of MMIO traces never makes
the loop wait on the disk or on a slow stderr reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import aiofiles

TRACE_FORMAT = "%(asctime)s %(name)s: %(message)s"


class AsyncTraceHandler(logging.Handler):
    """A logging handler whose output is written by an asyncio task through aiofiles."""

    def __init__(self, target: str | int, *, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter(TRACE_FORMAT))
        self._target = target
        self._buf: list[str] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._writer())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # a bad record must not break the caller
            self.dropped += 1
            return
        self._buf.append(line)
        if len(self._buf) == 1:
            self._wake.set()

    async def _writer(self) -> None:
        target = os.dup(self._target) if isinstance(self._target, int) else self._target
        async with aiofiles.open(target, "a" if isinstance(target, str) else "w") as fh:
            while True:
                await self._wake.wait()
                self._wake.clear()
                chunk, self._buf = self._buf, []
                if chunk:
                    await fh.write("".join(chunk))
                    await fh.flush()
                    self.written += len(chunk)
                if self._closing and not self._buf:
                    return

    async def aclose(self) -> None:
        """Write what is buffered, then stop the writer."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        self.close()


def install(target: str | int = 2) -> AsyncTraceHandler:
    """Route the ``qemu_panthor`` loggers' DEBUG traces to ``target`` (fd or path)."""
    handler = AsyncTraceHandler(target)
    root = logging.getLogger("qemu_panthor")
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    root.propagate = False
    handler.start()
    return handler

"""``--timeline FILE``: what the device did, as a Perfetto trace (open it in the Perfetto UI).

A :class:`Timeline` turns the model's events into Perfetto ``TrackEvent`` packets (the
``perfetto`` package's protobuf classes; the file is a ``perfetto.protos.Trace``): one track
per source (doorbells, each interrupt line, GLB/CSG/CS requests and firmware events, each
CS's execution slices, its work items and its jobs, each address space's commands and lock
regions, MMU faults, resets, MMIO traffic, guest marks), timestamps from the host's
CLOCK_MONOTONIC. Packets are built where the event happens and appended to a buffer; an
asyncio task hands the buffer to aiofiles (the event loop never waits on the disk). Every
hook is ``None`` while no timeline is open: off, it costs one attribute test per event site.
docs/perf.md lists the tracks and how to read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import aiofiles
from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import (
    CounterDescriptor,
    TracePacket,
    TrackEvent,
)

_SEQ = 1  # our trusted packet sequence
_ROOT_UUID = 1
_INSTANT = TrackEvent.TYPE_INSTANT
_BEGIN = TrackEvent.TYPE_SLICE_BEGIN
_END = TrackEvent.TYPE_SLICE_END
_COUNTER = TrackEvent.TYPE_COUNTER
#: MMIO traffic is sampled into a counter at most this often (ns)
MMIO_SAMPLE_NS = 1_000_000


def _frame(data: bytes) -> bytes:
    """One ``Trace.packet`` field (field 1, length-delimited)."""
    n = len(data)
    head = bytearray(b"\x0a")
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            head.append(b | 0x80)
        else:
            head.append(b)
            return bytes(head) + data


class Timeline:
    """Builds the trace; :meth:`start` / :meth:`aclose` run its writer task."""

    def __init__(self, path: str, *, process_name: str = "qemu-panthor") -> None:
        self.path = path
        self._buf: list[bytes] = []
        self._tracks: dict[str, int] = {}
        self._next_uuid = _ROOT_UUID + 1
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.events = 0
        self._jobs: dict[str, deque[tuple[int, int]]] = {}
        self._mmio = [0, 0]  # reads, writes since the last sample
        self._mmio_at = 0
        root = TracePacket()
        root.trusted_packet_sequence_id = _SEQ
        root.track_descriptor.uuid = _ROOT_UUID
        root.track_descriptor.name = process_name
        self._put(root)

    # -- tracks ---------------------------------------------------------------------------
    def track(self, name: str, *, counter: str | None = None) -> int:
        """The uuid of track ``name`` (declared on first use; ``counter``: its unit)."""
        uuid = self._tracks.get(name)
        if uuid is not None:
            return uuid
        uuid = self._tracks[name] = self._next_uuid
        self._next_uuid += 1
        p = TracePacket()
        p.trusted_packet_sequence_id = _SEQ
        d = p.track_descriptor
        d.uuid = uuid
        d.parent_uuid = _ROOT_UUID
        d.name = name
        if counter is not None:
            d.counter.unit = CounterDescriptor.UNIT_COUNT
            d.counter.unit_name = counter
        self._put(p)
        return uuid

    # -- events ---------------------------------------------------------------------------
    @staticmethod
    def now() -> int:
        return time.monotonic_ns()

    def _event(self, kind: int, track: str, name: str | None, ts: int | None,
               args: dict[str, Any]) -> None:
        p = TracePacket()
        p.timestamp = self.now() if ts is None else ts
        p.trusted_packet_sequence_id = _SEQ
        e = p.track_event
        e.type = kind
        e.track_uuid = self.track(track)
        if name is not None:
            e.name = name
        for k, v in args.items():
            a = e.debug_annotations.add()
            a.name = k
            if isinstance(v, bool):
                a.bool_value = v
            elif isinstance(v, int):
                a.int_value = v if -(1 << 63) <= v < 1 << 63 else v & ((1 << 63) - 1)
            elif isinstance(v, float):
                a.double_value = v
            else:
                a.string_value = str(v)
        self._put(p)

    def instant(self, track: str, name: str, *, ts: int | None = None, **args: Any) -> None:
        self._event(_INSTANT, track, name, ts, args)

    def begin(self, track: str, name: str, *, ts: int | None = None, **args: Any) -> None:
        self._event(_BEGIN, track, name, ts, args)

    def end(self, track: str, *, ts: int | None = None, **args: Any) -> None:
        self._event(_END, track, None, ts, args)

    def span(self, track: str, name: str, start: int, end: int, **args: Any) -> None:
        """A slice whose start and end are known (e.g. a work item when it is issued)."""
        self._event(_BEGIN, track, name, start, args)
        self._event(_END, track, None, max(start, end), {})

    def counter(self, track: str, value: float, *, unit: str = "", ts: int | None = None) -> None:
        p = TracePacket()
        p.timestamp = self.now() if ts is None else ts
        p.trusted_packet_sequence_id = _SEQ
        e = p.track_event
        e.type = _COUNTER
        e.track_uuid = self.track(track, counter=unit)
        if isinstance(value, int):
            e.counter_value = value
        else:
            e.double_counter_value = value
        self._put(p)

    # -- derived events -------------------------------------------------------------------
    def job_submitted(self, track: str, insert: int) -> None:
        """A ring's insert pointer moved to ``insert``: a job entered the ring."""
        self._jobs.setdefault(track, deque()).append((insert, self.now()))

    def jobs_done(self, track: str, extract: int, count: int) -> None:
        """``count`` kernel jobs of this ring completed (their fence write ran) by
        ``extract``: each becomes a slice from its insert to now."""
        q = self._jobs.get(track)
        now = self.now()
        while q and count > 0:
            insert, t0 = q.popleft()
            self.span(track, "job", t0, now, insert=insert, extract=extract)
            count -= 1

    def mmio(self, write: bool) -> None:
        """Count one trapped register access; sampled into a counter track every 1 ms."""
        self._mmio[write] += 1
        now = self.now()
        if now - self._mmio_at >= MMIO_SAMPLE_NS:
            self._mmio_at = now
            self.counter("MMIO reads", self._mmio[0], unit="accesses", ts=now)
            self.counter("MMIO writes", self._mmio[1], unit="accesses", ts=now)
            self._mmio = [0, 0]

    # -- output ---------------------------------------------------------------------------
    def _put(self, p: TracePacket) -> None:
        self._buf.append(_frame(p.SerializeToString()))
        self.events += 1
        if self._wake is not None and len(self._buf) == 1:
            self._wake.set()

    def drain(self) -> bytes:
        """Everything built so far (and forget it): the synchronous writer's share."""
        out, self._buf = b"".join(self._buf), []
        return out

    def start(self) -> None:
        """Start the writer task on the running loop (the file is created empty first)."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._writer())

    async def _writer(self) -> None:
        assert self._wake is not None
        async with aiofiles.open(self.path, "wb") as fh:
            while True:
                await self._wake.wait()
                self._wake.clear()
                chunk = self.drain()
                if chunk:
                    await fh.write(chunk)
                    await fh.flush()
                if self._closing and not self._buf:
                    return

    async def aclose(self) -> None:
        """Write what is buffered and stop the writer."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 30)


__all__ = ["MMIO_SAMPLE_NS", "Timeline"]

"""Counters of what a vfio-user server has seen (tests, QMP query-mali-stats)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class ServerStats:
    """What the server has seen, across connections (for tests and diagnostics)."""

    connections: int = 0
    commands: Counter[int] = field(default_factory=Counter)  # except the fast path below
    bar_reads: int = 0  # 1/2/4/8-byte REGION_READ/WRITE to plain BARs (fast path)
    bar_writes: int = 0
    errors: Counter[int] = field(default_factory=Counter)  # errno -> count
    dma_maps_with_fd: int = 0
    dma_maps_without_fd: int = 0
    resets: int = 0

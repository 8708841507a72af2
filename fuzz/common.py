"""Shared harness of the fuzz campaigns: flags, failure accounting, the summary line.

A campaign is bounded (``--cases`` and ``--seconds``), seeded (``--seed``: the same seed gives
the same inputs) and counts three kinds of failure: a *crash* (an exception escaping the
model), a *hang* (one step using more than its bound of CPU time, less what Python's cycle
collector spent in it: a collection that happens to start there is not the model's) and a
*traceback* (a log record carrying exception info, which the model must never emit for bad
input). It prints one summary line and exits 1 when anything failed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from qemu_panthor.mmu.regs import (
    AS_COMMAND,
    AS_MEMATTR,
    AS_TRANSCFG,
    AS_TRANSTAB,
    AsCommand,
    as_reg,
    transcfg_for,
)

RAM_BASE = 0x8000_0000
#: AS_MEMATTR as panthor programs it for a non-coherent GPU.
MEMATTR = 0x4C4C4C4C_8C4C8F4C
#: AS_MEMATTR as panfrost programs it for a Mali LPAE VM (JM parts).
MEMATTR_LEGACY = 0x888D88


def enable_as(write32: Callable[[int, int], None], as_nr: int, transtab: int, *,
              transcfg: int | None = None, base: int = 0, legacy: bool = False) -> None:
    """Program AS ``as_nr`` as panthor's as_enable does (TRANSTAB, MEMATTR, TRANSCFG, UPDATE)
    through ``write32(offset, value)``; ``base`` is the MMU block's offset in that space.
    ``legacy``: as panfrost's mmu_hw_do_operation does for a Mali LPAE VM (TRANSTAB, its
    MEMATTR, UPDATE: a JM part has no TRANSCFG)."""
    regs = (((AS_TRANSTAB, transtab), (AS_MEMATTR, MEMATTR_LEGACY)) if legacy else
            ((AS_TRANSTAB, transtab), (AS_MEMATTR, MEMATTR),
             (AS_TRANSCFG, transcfg_for(48) if transcfg is None else transcfg)))
    for reg, value in regs:
        off = base + as_reg(as_nr, reg)
        write32(off, value & 0xFFFFFFFF)
        write32(off + 4, (value >> 32) & 0xFFFFFFFF)
    write32(base + as_reg(as_nr, AS_COMMAND), AsCommand.UPDATE)


class _TracebackCounter(logging.Handler):
    """Counts log records with exception info (a traceback at the user)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1
            if self.first is None:
                self.first = self.format(record)


@dataclass
class Campaign:
    """One fuzz run: the RNG, the limits and the findings."""

    name: str
    seed: int
    cases: int
    seconds: float
    hang_s: float
    rng: random.Random = field(init=False)
    done: int = 0
    crashes: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._tb = _TracebackCounter()
        logger = logging.getLogger("qemu_panthor")
        self._saved = (logger.level, logger.propagate)
        logger.addHandler(self._tb)
        logger.setLevel(logging.ERROR)  # bad input may log warnings; tracebacks are counted
        logger.propagate = False
        #: CPU seconds the cycle collector has run (thread time), and when it last started
        self._gc_s = 0.0
        self._gc_start = 0.0
        gc.callbacks.append(self._gc_phase)
        self._t0 = time.monotonic()

    def _gc_phase(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            self._gc_s += time.thread_time() - self._gc_start

    def iterate(self) -> Iterator[int]:
        """Case numbers until ``cases`` ran or ``seconds`` passed."""
        while self.done < self.cases and time.monotonic() - self._t0 < self.seconds:
            yield self.done
            self.done += 1

    @contextlib.contextmanager
    def guard(self, what: str, hang_s: float | None = None) -> Iterator[None]:
        """One step: an exception escaping it is a crash (recorded, not raised), a step
        longer than ``hang_s`` (default: the campaign's) a hang."""
        limit = self.hang_s if hang_s is None else hang_s
        t = time.thread_time()  # CPU time: other processes on a busy machine do not count
        gc_before = self._gc_s
        try:
            yield
        except Exception as e:  # a crash: the model let an exception escape
            self.crashes.append(f"case {self.done} seed {self.seed}: {what}: {e!r}")
        finally:
            dt = time.thread_time() - t - (self._gc_s - gc_before)
            if dt > limit:
                self.hangs.append(f"case {self.done} seed {self.seed}: {what} took {dt:.3f} s")

    @property
    def tracebacks(self) -> int:
        return self._tb.count

    def finish(self) -> int:
        """Print the summary line; the exit status (1 if anything failed)."""
        logger = logging.getLogger("qemu_panthor")
        logger.removeHandler(self._tb)
        logger.level, logger.propagate = self._saved
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._gc_phase)
        elapsed = time.monotonic() - self._t0
        extra = "".join(f", {k} {v:g}" for k, v in self.figures.items())
        print(f"fuzz {self.name}: {self.done} cases in {elapsed:.1f} s (seed {self.seed}): "
              f"{len(self.crashes)} crashes, {len(self.hangs)} hangs, "
              f"{self.tracebacks} tracebacks{extra}")
        for line in (self.crashes + self.hangs)[:10]:
            print("  " + line)
        if self._tb.first:
            print("  first traceback:\n" + self._tb.first)
        return 1 if self.crashes or self.hangs or self.tracebacks else 0


def campaign_from_argv(name: str, *, cases: int, seconds: float, hang_s: float,
                       argv: list[str] | None = None) -> Campaign:
    ap = argparse.ArgumentParser(prog=f"fuzz_{name}", description=__doc__)
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (default 1)")
    ap.add_argument("--cases", type=int, default=cases, help=f"cases (default {cases})")
    ap.add_argument("--seconds", type=float, default=seconds,
                    help=f"time limit (default {seconds:g} s)")
    ap.add_argument("--hang-ms", type=float, default=hang_s * 1e3,
                    help=f"a step longer than this is a hang (default {hang_s * 1e3:g} ms)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    return Campaign(name, args.seed, args.cases, args.seconds, args.hang_ms / 1e3)

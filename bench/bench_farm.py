"""Farm density: N guests at once on one machine, each a separate ``qemu-panthor boot``.

Every boot has its own run directory, vfio-user and QMP sockets and backend; the cache is
shared read-only (set-up, if any, is serialised by its lock). For N = 1, 2, 4 (or the counts
given) it starts N boots of the default selftest suite together, waits for all, checks each
passed, and prints the wall time, guest runs per minute and the throughput relative to N = 1
measured in the same run (docs/perf.md). Printed, not asserted.

    .venv/bin/python bench/bench_farm.py [N ...]
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

SUMMARY = re.compile(r"^selftests: (\d+) passed, (\d+) failed")


def run_farm(n: int) -> tuple[float, list[str]]:
    """Start ``n`` boots at once; (wall seconds, problems)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "-m", "qemu_panthor", "boot"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(n)]
    problems = []
    for k, p in enumerate(procs):
        out, _ = p.communicate(timeout=1800)
        m = next((SUMMARY.match(line) for line in out.splitlines() if SUMMARY.match(line)),
                 None)
        if p.returncode != 0 or m is None or m.group(2) != "0":
            tail = "\n    ".join(out.splitlines()[-8:])
            problems.append(f"guest {k + 1} of {n}: rc {p.returncode}\n    {tail}")
    return time.monotonic() - t0, problems


def main() -> int:
    counts = [int(a) for a in sys.argv[1:]] or [1, 2, 4]
    base: float | None = None
    print(f"{'guests':>6} {'wall s':>8} {'runs/min':>9} {'throughput vs 1':>16}")
    for n in counts:
        wall, problems = run_farm(n)
        for p in problems:
            print(p)
        if problems:
            return 1
        rate = n / wall * 60
        if base is None:
            base = rate if n == 1 else None
        rel = f"{rate / base:.2f}x" if base else "-"
        print(f"{n:6d} {wall:8.1f} {rate:9.2f} {rel:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Empty-job submit-to-signal latency in the guest, against the goal (median <= 1 ms).

Boots the default guest with the MANUAL selftest ``bench_job_latency`` (guest/selftests/
t_bench.c): 200 jobs submitted and waited one at a time (GROUP_SUBMIT of a 4-instruction
stream with a signal syncobj, then SYNCOBJ_WAIT), timed with CLOCK_MONOTONIC in the guest,
once with runtime PM as the driver sets it and once with power/control=on. Printed, not
asserted: TCG speed and machine load dominate the numbers.
"""

from __future__ import annotations

import asyncio
import re
import sys

from qemu_panthor.launcher.boot import Boot
from qemu_panthor.setup.pipeline import ensure_images

GOAL_US = 1000
LINE = re.compile(r"# bench: (\S+) median=(\d+) p90=(\d+) min=(\d+) max=(\d+) n=(\d+)")


def main() -> int:
    images = ensure_images("7.2")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    print(f"{'measure':28} {'median us':>9} {'p90':>7} {'min':>6} {'max':>7}  goal")
    for _ in range(rounds):
        b = Boot(images, gpu="g610", run="selftests", qmp=None, trace=False, timeout=300,
                 append="qp.only=bench_job_latency", echo=False)
        r = asyncio.run(b.run())
        found = [LINE.search(line) for line in r.console]
        rows = [m for m in found if m]
        if r.rc != 0 or not rows:
            print(f"guest failed (rc {r.rc}); console kept in {r.run_dir}")
            for line in r.console[-20:]:
                print("  " + line)
            return 1
        for line in r.console:
            if line.startswith("# bench: power/"):
                print(line[2:])
        for m in rows:
            name, med, p90, lo, hi, _n = m.groups()
            verdict = ""
            if name.startswith("job_latency"):
                verdict = "met" if int(med) <= GOAL_US else f"missed ({int(med) / GOAL_US:.1f}x)"
            print(f"{name:28} {int(med):9d} {int(p90):7d} {int(lo):6d} {int(hi):7d}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

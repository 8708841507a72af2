"""Boot-to-power-off time of the default guest (no GPU) per -cpu model and pointer-auth mode.

Printed, not asserted. Ratios are against `max,pauth=off` measured in the same run, since
these machines are noisy. It backs the arm64 guest's default `cpu` in images/arches.toml,
with the job latency figures of docs/perf.md (bench_job_latency.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import sys

from qemu_panthor.launcher.boot import Boot
from qemu_panthor.setup.pipeline import ensure_images

MODES = ["max,pauth=off", "neoverse-n1,cntfrq=1000000000", "max,pauth-impdef=on", "max",
         "max,pauth-qarma3=on", "cortex-a76"]


def main() -> int:
    images = ensure_images("7.2")
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for _ in range(rounds):
        for mode in MODES:  # interleaved, so drift in machine load hits every mode alike
            with_cpu = dataclasses.replace(images, arch=dataclasses.replace(images.arch, cpu=mode))
            b = Boot(with_cpu, gpu="g610", run="none", qmp=None, trace=False, timeout=300,
                     append="", with_gpu=False, echo=False)
            r = asyncio.run(b.run())
            if r.rc != 0:
                print(f"{mode}: guest failed (rc {r.rc})")
                return 1
            times[mode].append(r.boot_s)
    base = statistics.median(times[MODES[0]])
    print(f"{'cpu':24} {'median s':>9} {'ratio':>6}")
    for mode in MODES:
        med = statistics.median(times[mode])
        print(f"{mode:24} {med:9.2f} {med / base:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

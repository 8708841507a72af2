"""`make soak`: the in-guest soak tests with the backend's memory and fds sampled through QMP.

Boots the default guest running the MANUAL soak selftests (soak_jobs: 10,000 jobs over 16
groups; soak_vms: 4 rounds of 64 VMs created, bound, used and destroyed; soak_runtime_pm:
1,000 runtime suspend/resume cycles) and polls the backend's ``query-mali-stats`` every
second. "before" is the first sample after the first job completed (the device warmed up),
"after" the last sample before power-off; growth beyond noise means a leak. Printed, not
asserted (figures in docs/fuzzing.md, "Soak"); the exit status is the guest's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from qemu_panthor.launcher.boot import Boot
from qemu_panthor.launcher.ktap import parse_ktap
from qemu_panthor.setup.pipeline import ensure_images

TESTS = "soak_jobs,soak_vms,soak_runtime_pm"


async def _sample(path: Path, samples: list[dict[str, Any]], stop: asyncio.Event) -> None:
    while not path.exists():
        if stop.is_set():
            return
        await asyncio.sleep(0.2)  # bounded by `stop`: the socket appears when the backend runs
    qmp = QMPClient("soak")
    await asyncio.wait_for(qmp.connect(str(path)), 10)
    try:
        while not stop.is_set():
            s = await asyncio.wait_for(qmp.execute("query-mali-stats"), 10)
            assert isinstance(s, dict)
            samples.append(s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    except Exception:  # the backend went away at power-off: sampling ends there
        pass
    finally:
        with contextlib.suppress(Exception):
            await qmp.disconnect()


async def soak(tests: str) -> int:
    images = ensure_images("7.2")
    with tempfile.TemporaryDirectory(prefix="qp-soak-") as tmp:
        qmp_path = Path(tmp) / "qmp.sock"
        boot = Boot(images, gpu="g610", run="selftests", qmp=str(qmp_path), trace=False,
                    timeout=2400, append=f"qp.only={tests}", echo=True)
        samples: list[dict[str, Any]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(_sample(qmp_path, samples, stop))
        result = await boot.run()
        stop.set()
        await sampler
    summary = parse_ktap(result.console)
    print(summary.line())
    warm = [s for s in samples if s["cs"]["jobs"] > 0]
    if not warm:
        print("soak: no sample after the first job (backend QMP never answered?)")
        return 1
    before, after = warm[0], warm[-1]
    peak = max(s["process"]["rss-kib"] for s in warm)
    print(f"soak: {len(samples)} samples; jobs {after['cs']['jobs']}, CS instructions "
          f"{after['cs']['instructions']}, GPU resets {after['gpu']['resets']}")
    print(f"soak: backend RSS {before['process']['rss-kib']} KiB -> "
          f"{after['process']['rss-kib']} KiB (peak {peak} KiB); open fds "
          f"{before['process']['fds']} -> {after['process']['fds']}")
    step = max(1, len(warm) // 12)
    timeline = " ".join(str(s["process"]["rss-kib"]) for s in warm[::step])
    print(f"soak: RSS timeline (KiB, every {step} s): {timeline}")
    return result.rc if result.rc is not None else 3


def main() -> int:
    return asyncio.run(soak(sys.argv[1] if len(sys.argv) > 1 else TESTS))


if __name__ == "__main__":
    raise SystemExit(main())

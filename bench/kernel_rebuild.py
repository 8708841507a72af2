"""The kernel developer's loop, timed: touch one panthor file, rebuild, boot the suite.

    PYTHONPATH=tests .venv/bin/python bench/kernel_rebuild.py [default|debug] [--run none]

Not part of `make bench` (the first run builds a whole kernel). It works on a scratch copy
of Debian's kernel source (hard links, kept in the cache under bench/ so later runs rebuild
incrementally), built with `kernel build --source` as a developer's tree would be. Printed:
the incremental build, the set-up of `boot --kernel` (glue and selftests cached by the
tree's build identity) and the boot to power-off, each in seconds. Goal: <= 90 s in all
(docs/kernel-dev.md).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

from qemu_panthor.launcher.boot import Boot
from qemu_panthor.launcher.kernel_reports import check_console
from qemu_panthor.launcher.ktap import parse_ktap
from qemu_panthor.setup.cache import Cache
from qemu_panthor.setup.kernel import build, gcc_version, plan
from qemu_panthor.setup.ksource import ensure_kbuild_root, ensure_linux_source
from qemu_panthor.setup.tree import tree_images

TOUCHED = "drivers/gpu/drm/panthor/panthor_mmu.c"


def main() -> int:
    config = next((a for a in sys.argv[1:] if not a.startswith("-")), "default")
    run = "none" if "--run" in sys.argv and "none" in sys.argv else "selftests"
    cache = Cache()
    _root, info = ensure_kbuild_root(cache)
    pristine = ensure_linux_source(cache).path
    scratch = cache.path("bench", "linux-src")
    if not (scratch / "Makefile").is_file():
        scratch.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(pristine), str(scratch)], check=True)
    p = plan(cache, source=str(scratch), configs=[config], patches=[], gcc=gcc_version(info))
    jobs = os.cpu_count() or 1
    if not p.meta_path.is_file():
        t0 = time.monotonic()
        build(cache, p, jobs=jobs)
        print(f"full build ({config}): {time.monotonic() - t0:.0f} s")
    # touch one panthor file (a file of its own first: the copy shares inodes with the cache)
    f = scratch / TOUCHED
    tmp = f.with_suffix(".tmp")
    shutil.copy2(f, tmp)
    tmp.replace(f)
    os.utime(f)
    t0 = time.monotonic()
    out = build(cache, p, jobs=jobs)
    rebuild = time.monotonic() - t0
    t0 = time.monotonic()
    images = tree_images(str(out), cache=cache)
    setup = time.monotonic() - t0
    b = Boot(images, gpu="g610", run=run, qmp=None, trace=False, timeout=1200, append="",
             echo=False)
    r = asyncio.run(b.run())
    s = parse_ktap(r.console)
    reports = check_console(r.console).failing
    print(f"rebuild after touching {TOUCHED}: {rebuild:.1f} s")
    print(f"boot --kernel set-up (glue, selftests cached): {setup:.1f} s")
    print(f"boot to power-off (--run {run}): {r.boot_s:.1f} s"
          + (f", selftests {s.line()}" if run == "selftests" else "")
          + (f", {len(reports)} kernel reports" if reports else ""))
    print(f"total: {rebuild + setup + r.boot_s:.1f} s (goal 90 s)")
    for name in s.failed:
        print(f"FAILED {name}")
    for line in check_console(r.console).lines():
        print(line)
    if s.failed or reports:
        log = cache.path("bench", "kernel_rebuild.console.log")
        log.write_text("\n".join(r.console) + "\n")
        print(f"console: {log}")
    return 0 if r.rc == 0 and not reports else 1


if __name__ == "__main__":
    sys.exit(main())

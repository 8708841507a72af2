"""Watching a guest run from a test: bounded polls on a running Boot task, a QMP session to
its backend that ends cleanly whatever the run did, and a boot run as a user runs it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from qemu_panthor.launcher.kernel_reports import check_console
from qemu_panthor.launcher.ktap import KtapSummary, parse_ktap


async def until(pred: Callable[[], bool], timeout: float, what: str,
                task: asyncio.Task[Any]) -> None:
    """Poll ``pred`` until true; fail if ``task`` (the run) ends first or on timeout."""
    deadline = time.monotonic() + timeout
    while not pred():
        if task.done():
            task.result()  # raise the run's own error, if any
            raise AssertionError(f"the run ended before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def qmp_session(sock: Path, task: asyncio.Task[Any],
                      timeout: float = 60) -> AsyncIterator[QMPClient]:
    """A QMP client on the backend's socket once it exists. On the way out it disconnects
    (the backend may already have closed QMP when the guest powered off: that ends the
    session, it is not a failure) and cancels the run if it is still going."""
    qmp = QMPClient("integration")
    try:
        await until(sock.exists, timeout, "the backend's QMP socket", task)
        await qmp.connect(str(sock))
        yield qmp
    finally:
        if qmp.runstate.name != "IDLE":
            with contextlib.suppress(Exception):
                await qmp.disconnect()
        if not task.done():
            task.cancel()


def check_debug_suite(p: subprocess.CompletedProcess[str]) -> tuple[KtapSummary, str]:
    """A `qemu-panthor boot` of the selftests on a kernel built here with the debug fragment:
    the debug release booted, its bug finders active and silent, no test failed, exit 0.
    Returns the KTAP summary and the output's tail (for the caller's own messages)."""
    console = p.stdout.splitlines()
    tail = "\n".join(console[-60:]) + "\n" + p.stderr[-4000:]
    assert any("kernel=" in line and "-qp-debug" in line for line in console), tail
    assert "kernel bug finders active: kasan, lockdep, kmemleak" in p.stderr, tail
    verdict = check_console(console)
    assert not verdict.failing, "\n".join(verdict.lines())
    assert any("@qp status phase=kmemleak-done" in line for line in console), tail
    s = parse_ktap(console)
    assert not s.failed, f"failed: {s.failed}\n{tail}"
    assert re.search(r"^selftests: \d+ passed, 0 failed", p.stdout, re.M), tail
    assert p.returncode == 0, tail
    return s, tail


@contextlib.contextmanager
def cli_boot(*args: str, timeout: float = 800) -> Iterator[tuple[
        subprocess.CompletedProcess[str], Path, str]]:
    """``qemu-panthor boot --keep ARGS`` as a user runs it: the finished process, its kept
    run directory (removed afterwards) and the tail of its output for assertion messages."""
    p = subprocess.run([sys.executable, "-m", "qemu_panthor", "boot", *args, "--keep"],
                       capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    tail = "\n".join(p.stdout.splitlines()[-40:]) + "\n" + p.stderr[-3000:]
    m = re.search(r"run dir kept at (\S+)", p.stderr)
    assert m, tail
    run_dir = Path(m.group(1))
    try:
        yield p, run_dir, tail
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


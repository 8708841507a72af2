"""Waiting on processes in tests: bounded polls, never sleep-and-hope."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def wait_for(pred: Callable[[], bool], timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``pred`` until true (fail if ``proc`` ends first); returns the seconds it took."""
    t0 = time.monotonic()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - t0


def alive(pid: int) -> bool:
    """Running: not gone and not a zombie (a reparented child may wait for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")

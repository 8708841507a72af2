"""Child processes that cannot outlive the launcher, and how their ends are described.

Linux's ``PR_SET_PDEATHSIG`` asks the kernel to signal a process when its parent dies, even
when the parent is SIGKILLed and runs no clean-up at all. The setting survives ``execve``, so:

- the backend (our own ``qemu-panthor serve``) sets it itself (``serve --parent-pid``);
- QEMU is started through :func:`with_parent_death_signal`, a few lines of Python that set it
  and then exec QEMU (``preexec_fn`` would do the same in the forked child, but it is not safe
  in a process that runs threads, as the launcher does).

Both check, after setting it, that the parent they were started by is still the parent: if it
died in between, the signal would never come, so they end at once instead.

The kernel sends the signal when the *thread* that forked the child exits; the launcher forks
from its event-loop thread, which lives as long as the run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1

# Runs as `python -I -S -c _EXEC PPID SIGNO ARGV...`: no site, no imports of ours (fast).
_EXEC = """\
import ctypes, os, sys
ppid, sig, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, sig, 0, 0, 0) != 0:
    sys.exit("qemu-panthor: prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != ppid:
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)
os.execv(argv[0], argv)
"""


def with_parent_death_signal(argv: list[str], sig: int = signal.SIGKILL) -> list[str]:
    """``argv`` wrapped so the program gets ``sig`` when this process dies."""
    return [sys.executable, "-I", "-S", "-c", _EXEC, str(os.getpid()), str(int(sig)), *argv]


def set_parent_death_signal(sig: int, parent_pid: int) -> None:
    """Ask for ``sig`` when our parent dies; if ``parent_pid`` is no longer our parent (it
    died before this call), send ``sig`` to ourselves now."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(err))
        return
    if os.getppid() != parent_pid:
        log.warning("parent %d is gone; ending", parent_pid)
        os.kill(os.getpid(), sig)


def describe_status(returncode: int | None) -> str:
    """A process's end in words: ``exit status 1`` or ``killed by SIGKILL``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


__all__ = ["describe_status", "set_parent_death_signal", "with_parent_death_signal"]

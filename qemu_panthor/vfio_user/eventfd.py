"""Interrupt trigger fds: only eventfds are accepted, and they are written without blocking.

A pipe or socket handed to SET_IRQS would block the event loop once full (or fail on every
write); an eventfd set O_NONBLOCK can only fail (EAGAIN when its counter is saturated, i.e.
the client never reads it). QEMU's eventfds are already non-blocking (EFD_NONBLOCK), so
setting the flag on the shared file description changes nothing for it.
"""

from __future__ import annotations

import os

_ONE = (1).to_bytes(8, "little")
_EVENTFD_LINK = "anon_inode:[eventfd]"


def is_eventfd(fd: int) -> bool:
    """True if ``fd`` is an eventfd (what /proc/self/fd/N links to)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == _EVENTFD_LINK
    except OSError:
        return False


def check_trigger(fd: int) -> str | None:
    """Make ``fd`` a usable trigger (non-blocking); the reason it cannot be one, or None."""
    if not is_eventfd(fd):
        return f"fd {fd} is not an eventfd"
    try:
        os.set_blocking(fd, False)
    except OSError as e:
        return f"fd {fd}: cannot make it non-blocking: {e.strerror}"
    return None


def signal(fd: int) -> OSError | None:
    """Add one to the eventfd's counter; the error if that failed (never blocks)."""
    try:
        os.write(fd, _ONE)
    except OSError as e:
        return e
    return None


def close(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass

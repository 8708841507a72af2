"""How a client command fails: an errno that becomes an ERROR reply."""

from __future__ import annotations


class ProtocolError(Exception):
    """A command that fails with ``errno``; becomes an ERROR reply."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err

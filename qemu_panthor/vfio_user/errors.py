"""How a client command fails: an errno that becomes an ERROR reply, and one log line."""

from __future__ import annotations

import logging


class ProtocolError(Exception):
    """A command that fails with ``errno``; becomes an ERROR reply.

    The connection logs the failure once, at ``level`` (INFO: the client's mistake, visible
    with ``-v``; WARNING for what an operator must fix, e.g. unsealed guest memory).
    """

    def __init__(self, err: int, message: str, *, level: int = logging.INFO) -> None:
        super().__init__(message)
        self.errno = err
        self.level = level

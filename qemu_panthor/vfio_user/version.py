"""VERSION: the first message of a session, where client and server trade capabilities.

The client proposes major/minor and a NUL-terminated JSON object of capabilities; the server
answers major 0, minor 0 and its own capabilities, trimmed (from the least important end) so
that the reply is no longer than the request: QEMU fails realize otherwise.
"""

from __future__ import annotations

import errno
import json

from . import protocol as P
from .errors import ProtocolError

PGSIZES = 4096


class Negotiation:
    """One session's VERSION exchange: the client's limits once ``done``."""

    def __init__(self, *, max_msg_fds: int, max_data_xfer_size: int, max_dma_maps: int) -> None:
        self.max_msg_fds = max_msg_fds
        self.max_data_xfer_size = max_data_xfer_size
        self.max_dma_maps = max_dma_maps
        self.done = False
        self.client_max_fds = 1
        self.client_max_xfer = P.DEFAULT_MAX_DATA_XFER

    def handle(self, payload: bytes, fds: list[int]) -> bytes:
        """VERSION request -> reply payload; raises ProtocolError for a bad request."""
        if fds:
            raise ProtocolError(errno.EINVAL, "VERSION carries no fds")
        if self.done:
            raise ProtocolError(errno.EINVAL, "VERSION already negotiated")
        if len(payload) < P.VERSION_FIXED:
            raise ProtocolError(errno.EINVAL, "short VERSION")
        msg = P.Version.parse(payload)
        if msg.major != 0:
            raise ProtocolError(errno.ENOTSUP, f"unsupported major version {msg.major}")
        caps: dict[str, object] = {}
        if msg.data:
            raw = msg.data
            if raw[-1] != 0:
                raise ProtocolError(errno.EINVAL, "VERSION JSON is not NUL-terminated")
            try:
                obj = json.loads(raw[:-1].decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ProtocolError(errno.EINVAL, f"bad VERSION JSON: {e}") from None
            except RecursionError:  # nested deeper than the decoder goes
                raise ProtocolError(errno.EINVAL, "bad VERSION JSON: nested too deeply") from None
            if not isinstance(obj, dict):
                raise ProtocolError(errno.EINVAL, "VERSION JSON is not an object")
            got = obj.get("capabilities", {})
            if not isinstance(got, dict):
                raise ProtocolError(errno.EINVAL, "capabilities is not an object")
            caps = got
        max_fds = _count(caps, "max_msg_fds", 1)
        max_xfer = _count(caps, "max_data_xfer_size", P.DEFAULT_MAX_DATA_XFER)
        if max_xfer == 0:
            raise ProtocolError(errno.EINVAL, "max_data_xfer_size is 0")
        self.client_max_fds = max_fds
        self.client_max_xfer = max_xfer
        self.done = True
        return self.reply(len(payload))

    def reply(self, limit: int) -> bytes:
        """Our VERSION payload, capabilities trimmed so it is no longer than ``limit``."""
        ours: list[tuple[str, object]] = [
            ("write_multiple", True),
            ("max_msg_fds", self.max_msg_fds),
            ("max_data_xfer_size", self.max_data_xfer_size),
            ("pgsizes", PGSIZES),
            ("max_dma_maps", self.max_dma_maps),
        ]
        head: bytes = P.Version.build({"major": 0, "minor": 0, "data": b""})
        for n in range(len(ours), -1, -1):
            doc = json.dumps({"capabilities": dict(ours[:n])}, separators=(",", ":"))
            out = head + doc.encode() + b"\0"
            if len(out) <= limit:
                return out
        return head


def _count(caps: dict[str, object], name: str, default: int) -> int:
    """A capability that must be a non-negative JSON integer (``default`` when absent)."""
    v = caps.get(name, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ProtocolError(errno.EINVAL, f"bad capability {name}={v!r}")
    return v

"""The server side of QMP (QEMU Machine Protocol), built on qemu.qmp's protocol classes.

QEMU's QMP server behaviour, as its clients (qemu.qmp's ``QMPClient``, ``qmp-shell``) expect:

* on connect the server sends a greeting ``{"QMP": {"version": ..., "capabilities": []}}``;
* the only command accepted before ``qmp_capabilities`` is ``qmp_capabilities`` (others get
  ``CommandNotFound``), and asynchronous events are only sent after it;
* input is a stream of JSON texts, split by bracket depth (not by lines: ``QMPClient`` sends no
  newline); replies echo the request's ``id``; malformed input gets a ``GenericError`` reply
  ("JSON parse error, ...") without an id and the session goes on;
* events are ``{"event": NAME, "data": {...}, "timestamp": {"seconds", "microseconds"}}``.

:class:`QmpSession` is one client connection (an ``AsyncProtocol[Message]``); :class:`QmpServer`
listens on a UNIX socket, runs any number of sessions and broadcasts events to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from qemu.qmp.message import DeserializationError, Message, UnexpectedTypeError
from qemu.qmp.protocol import AsyncProtocol, Runstate

from .schema import Arg, Command, CommandTable, QmpError

log = logging.getLogger(__name__)

#: Largest JSON text a client may send (QEMU's limit is 64 MiB; queries here are tiny).
MAX_MESSAGE = 1 << 20
#: Events queued for one client that does not read are dropped beyond this many.
MAX_QUEUED_EVENTS = 4096
_WS = frozenset(b" \t\r\n")


class JsonSplitter:
    """Splits a byte stream into top-level JSON texts, like QEMU's json-streamer.

    A text ends when its brackets balance (outside strings), or, for a top-level scalar or
    garbage, at whitespace. ``feed`` returns ``(text, error)`` pairs: ``error`` is set (and
    ``text`` empty) when a text exceeded :data:`MAX_MESSAGE` and was discarded.
    """

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.limit = limit
        self._buf = bytearray()
        self._depth = 0
        self._in_str = False
        self._esc = False
        self._skipping = False  # discarding the rest of an oversized text

    def feed(self, data: bytes) -> list[tuple[bytes, str | None]]:
        out: list[tuple[bytes, str | None]] = []
        buf = self._buf
        for b in data:
            if self._in_str:
                if self._esc:
                    self._esc = False
                elif b == 0x5C:  # backslash
                    self._esc = True
                elif b == 0x22:  # quote
                    self._in_str = False
            elif b in _WS:
                if buf and self._depth == 0:  # end of a top-level scalar / garbage
                    out.append((bytes(buf), None))
                    buf.clear()
                    continue
                if not buf and not self._skipping:
                    continue
            elif b == 0x22:
                self._in_str = True
            elif b == 0x7B or b == 0x5B:  # { [
                self._depth += 1
            elif b == 0x7D or b == 0x5D:  # } ]
                self._depth -= 1
                if self._depth <= 0:
                    self._depth = 0
                    if self._skipping:
                        self._skipping = False
                        buf.clear()
                        continue
                    buf.append(b)
                    out.append((bytes(buf), None))
                    buf.clear()
                    continue
            if self._skipping:
                continue
            buf.append(b)
            if len(buf) > self.limit:
                buf.clear()
                self._skipping = self._depth > 0 or self._in_str
                out.append((b"", f"JSON parse error, message exceeds {self.limit} bytes"))
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"invalid keyword '{name}'")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key '{k}'")
        obj[k] = v
    return obj


def parse_message(data: bytes) -> Message:
    """One JSON text -> a qemu.qmp ``Message``; strict JSON (no NaN, no duplicate keys).

    Raises ``DeserializationError`` (not JSON) or ``UnexpectedTypeError`` (not an object).
    """
    try:
        obj = json.loads(data, parse_constant=_reject_constant,
                         object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as err:
        why = err.msg if isinstance(err, json.JSONDecodeError) else str(err)
        if isinstance(err, json.JSONDecodeError):
            why += f" near {data[err.pos:err.pos + 16].decode(errors='replace')!r}"
        raise DeserializationError(f"JSON parse error, {why}", data) from err
    if not isinstance(obj, dict):
        raise UnexpectedTypeError("QMP input must be a JSON object", obj)
    return Message(obj)


def error_reply(cls: str, desc: str, msg_id: Any = None, *, has_id: bool = False) -> Message:
    reply: dict[str, Any] = {"error": {"class": cls, "desc": desc}}
    if has_id:
        reply["id"] = msg_id
    return Message(reply)


def timestamp() -> dict[str, int]:
    """QMP event timestamp: wall-clock seconds and microseconds."""
    ns = time.time_ns()
    return {"seconds": ns // 1_000_000_000, "microseconds": ns // 1000 % 1_000_000}


class QmpSession(AsyncProtocol[Message]):
    """One client connection: greeting, negotiation, dispatch, events."""

    def __init__(self, server: QmpServer, name: str) -> None:
        super().__init__(name)
        self.server = server
        self.negotiated = False
        self.events_dropped = 0
        self._splitter = JsonSplitter(server.max_message)
        self._ready: deque[tuple[bytes, str | None]] = deque()

    # -- AsyncProtocol ------------------------------------------------------------------------
    async def _establish_session(self) -> None:
        """Send the greeting, then start the reader/writer tasks."""
        await self._send(Message({"QMP": self.server.greeting()}))
        await super()._establish_session()

    async def _do_recv(self) -> Message:
        """The next JSON object from the client; malformed input is answered here."""
        assert self._reader is not None
        while True:
            while self._ready:
                data, err = self._ready.popleft()
                if err is not None:
                    self._queue(error_reply("GenericError", err))
                    continue
                try:
                    return parse_message(data)
                except DeserializationError as e:
                    self._queue(error_reply("GenericError", e.error_message))
                except UnexpectedTypeError as e:
                    self._queue(error_reply("GenericError", e.error_message))
            chunk = await self._reader.read(65536)
            if not chunk:
                raise EOFError
            self._ready.extend(self._splitter.feed(chunk))

    def _do_send(self, msg: Message) -> None:
        assert self._writer is not None
        self._writer.write(bytes(msg) + b"\r\n")

    async def _on_message(self, msg: Message) -> None:
        reply = self.server.dispatch(self, msg)
        if reply is not None:
            await self._outgoing.put(reply)

    # -- server side ----------------------------------------------------------------------------
    def _queue(self, msg: Message) -> None:
        self._outgoing.put_nowait(msg)

    def send_event(self, msg: Message) -> None:
        """Queue an event (only once negotiated, as QEMU does)."""
        if not self.negotiated or self.runstate != Runstate.RUNNING:
            return
        if self._outgoing.qsize() >= MAX_QUEUED_EVENTS:
            self.events_dropped += 1
            return
        self._outgoing.put_nowait(msg)


class QmpServer:
    """A QMP server on a UNIX socket: sessions for any number of clients, event broadcast."""

    def __init__(self, commands: CommandTable, *, version: Mapping[str, Any],
                 max_message: int = MAX_MESSAGE) -> None:
        self.commands = commands
        self.version = dict(version)
        self.capabilities: list[str] = []
        self.max_message = max_message
        self.sessions: set[QmpSession] = set()
        self.stats: dict[str, int] = {"connections": 0, "commands": 0, "errors": 0,
                                      "events": 0}
        self.path: str | None = None
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._serial = 0
        if "qmp_capabilities" not in commands:
            commands.register(Command(
                "qmp_capabilities", lambda **_: {},
                (Arg("enable", "[str]", optional=True, doc="capabilities to enable"),),
                "Leave capabilities negotiation and enter command mode."))
        if "query-commands" not in commands:
            commands.register(Command(
                "query-commands", lambda: [{"name": n} for n in commands.names()],
                doc="The commands this server accepts: [{\"name\": str}]."))
        if "query-version" not in commands:
            commands.register(Command("query-version", lambda: dict(self.version),
                                      doc="{\"qemu\": {major, minor, micro}, \"package\": str}"))

    def greeting(self) -> dict[str, Any]:
        return {"version": self.version, "capabilities": list(self.capabilities)}

    # -- listening --------------------------------------------------------------------------
    async def start(self, path: str | os.PathLike[str]) -> None:
        """Listen on ``path`` (a stale socket there is replaced) and accept clients."""
        path = os.fspath(path)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(8)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self.path = path
        self._accept_task = asyncio.create_task(self._accept_loop(sock), name="qmp-accept")
        log.info("QMP server listening on %s", path)

    async def _accept_loop(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(lsock)
            except asyncio.CancelledError:
                raise
            except OSError as e:
                log.warning("QMP accept failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            task = asyncio.create_task(self._serve_one(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve_one(self, conn: socket.socket) -> None:
        self._serial += 1
        self.stats["connections"] += 1
        session = QmpSession(self, f"qmp-server-{self._serial}")
        try:
            await session.connect(conn)
        except Exception as e:  # the peer went away during the greeting
            log.info("QMP client dropped during the greeting: %s", e)
            conn.close()
            return
        self.sessions.add(session)
        try:
            while session.runstate == Runstate.RUNNING:
                await session.runstate_changed()
        finally:
            self.sessions.discard(session)
            await self._end(session)

    @staticmethod
    async def _end(session: QmpSession) -> None:
        try:
            await asyncio.wait_for(session.disconnect(), 2.0)
        except Exception as e:  # EOFError etc. on hang-up, TimeoutError on a stuck peer
            log.debug("QMP session %s ended: %s", session.name, type(e).__name__)

    async def close(self) -> None:
        """Stop listening, end every session, remove the socket."""
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        sessions = list(self.sessions)
        self.sessions.clear()
        await asyncio.gather(*(self._end(s) for s in sessions), return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None

    # -- events ----------------------------------------------------------------------------------
    def emit(self, event: str, data: Mapping[str, Any]) -> None:
        """Broadcast an event to every negotiated session; callable from any model hook."""
        self.stats["events"] += 1
        if not self.sessions:
            return
        msg = Message({"event": event, "data": dict(data), "timestamp": timestamp()})
        for s in list(self.sessions):
            s.send_event(msg)

    # -- dispatch ----------------------------------------------------------------------------
    def dispatch(self, session: QmpSession, msg: Message) -> Message | None:
        """One request -> its reply (QEMU's qmp_dispatch checks and wording)."""
        has_id = "id" in msg
        msg_id = msg.get("id")

        def err(cls: str, desc: str) -> Message:
            self.stats["errors"] += 1
            return error_reply(cls, desc, msg_id, has_id=has_id)

        name: str | None = None
        args: dict[str, Any] = {}
        for key in msg:
            value = msg[key]
            if key in ("execute", "exec-oob"):
                if not isinstance(value, str):
                    return err("GenericError", f"QMP input member '{key}' must be a string")
                name = value
            elif key == "arguments":
                if not isinstance(value, dict):
                    return err("GenericError", "QMP input member 'arguments' must be an object")
                args = value
            elif key != "id":
                return err("GenericError", f"QMP input member '{key}' is unexpected")
        if "execute" in msg and "exec-oob" in msg:
            return err("GenericError", "QMP input must not contain both 'execute' and 'exec-oob'")
        if name is None:
            return err("GenericError", "QMP input lacks member 'execute'")
        if "exec-oob" in msg:
            return err("GenericError", f"The command {name} does not support OOB")
        if not session.negotiated and name != "qmp_capabilities":
            return err("CommandNotFound",
                       "Expecting capabilities negotiation with 'qmp_capabilities'")
        if session.negotiated and name == "qmp_capabilities":
            return err("CommandNotFound",
                       "Capabilities negotiation is already complete, command ignored")
        self.stats["commands"] += 1
        try:
            if name == "qmp_capabilities":
                result = self._qmp_capabilities(args, session)
            else:
                result = self.commands.call(name, args)
        except QmpError as e:
            return err(e.error_class, e.desc)
        except Exception as e:  # a handler bug is a GenericError, never a dropped connection
            log.exception("QMP command %s failed", name)
            return err("GenericError", f"internal error in {name}: {e}")
        reply: dict[str, Any] = {"return": result}
        if has_id:
            reply["id"] = msg_id
        return Message(reply)

    def _qmp_capabilities(self, args: Mapping[str, Any], session: QmpSession) -> dict[str, Any]:
        self.commands.validate("qmp_capabilities", args)
        for cap in args.get("enable", []):
            if cap not in self.capabilities:
                raise QmpError("GenericError", f"Capability '{cap}' not available")
        session.negotiated = True
        return {}


EventSink = Callable[[str, Mapping[str, Any]], None]

__all__ = ["EventSink", "JsonSplitter", "QmpServer", "QmpSession", "parse_message"]

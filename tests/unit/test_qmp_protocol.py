"""The backend's QMP server at the wire level: greeting, negotiation, id echo, error replies,
malformed input, several clients, events only after negotiation (QEMU's docs/interop/qmp-spec
and qmp_dispatch wording). Also the ``qemu-panthor qmp`` client's argument parsing and errors."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from qemu_panthor.device import MaliPciFunction
from qemu_panthor.errors import UserError
from qemu_panthor.gpu.models import MODELS
from qemu_panthor.qmp import JsonSplitter, build_server
from qemu_panthor.qmp.client import parse_arguments, parse_value, qmp_main, run_command

TIMEOUT = 5.0


class Raw:
    """A bare QMP peer: writes bytes, reads CRLF-terminated JSON replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, path: Path) -> Raw:
        r, w = await asyncio.open_unix_connection(str(path))
        return cls(r, w)

    async def send(self, data: bytes | dict[str, Any]) -> None:
        self.writer.write(data if isinstance(data, bytes) else json.dumps(data).encode())
        await self.writer.drain()

    async def recv(self) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        assert line.endswith(b"\r\n"), line
        return json.loads(line)

    async def negotiate(self) -> dict[str, Any]:
        greeting = await self.recv()
        await self.send({"execute": "qmp_capabilities"})
        assert await self.recv() == {"return": {}}
        return greeting

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server(tmp_path: Path):
    dev = MaliPciFunction(MODELS["g610"])
    srv, events = build_server(dev)
    path = tmp_path / "qmp.sock"
    await srv.start(path)
    srv.device = dev  # type: ignore[attr-defined]
    yield srv
    events.detach()
    await srv.close()


def err(cls: str, desc: str, **kw: Any) -> dict[str, Any]:
    return {"error": {"class": cls, "desc": desc}} | kw


async def test_greeting_then_only_qmp_capabilities_before_negotiation(server) -> None:
    c = await Raw.open(Path(server.path))
    g = await c.recv()
    assert set(g) == {"QMP"}
    assert g["QMP"]["capabilities"] == []
    v = g["QMP"]["version"]
    assert all(isinstance(v["qemu"][k], int) for k in ("major", "minor", "micro"))
    assert isinstance(v["package"], str)
    await c.send({"execute": "query-version", "id": "a"})
    assert await c.recv() == err(
        "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'", id="a")
    await c.send({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 1})
    assert await c.recv() == err("GenericError", "Capability 'oob' not available", id=1)
    await c.send({"execute": "qmp_capabilities", "id": 2})
    assert await c.recv() == {"return": {}, "id": 2}
    await c.send({"execute": "qmp_capabilities", "id": 3})
    assert await c.recv() == err(
        "CommandNotFound", "Capabilities negotiation is already complete, command ignored", id=3)
    await c.send({"execute": "query-version"})
    assert await c.recv() == {"return": v}
    c.close()


async def test_id_is_echoed_whatever_its_type(server) -> None:
    c = await Raw.open(Path(server.path))
    await c.negotiate()
    for msg_id in ("x", 7, [1, {"k": None}], {"a": 1}, None):
        await c.send({"execute": "query-version", "id": msg_id})
        reply = await c.recv()
        assert reply["id"] == msg_id and "return" in reply
        await c.send({"execute": "no-such-command", "id": msg_id})
        assert await c.recv() == err(
            "CommandNotFound", "The command no-such-command has not been found", id=msg_id)
    c.close()


async def test_malformed_input_gets_an_error_reply_and_the_session_goes_on(server) -> None:
    c = await Raw.open(Path(server.path))
    await c.negotiate()
    await c.send(b"garbage ")
    r = await c.recv()
    assert r["error"]["class"] == "GenericError" and "id" not in r
    assert r["error"]["desc"].startswith("JSON parse error")
    cases = [
        (b"[1, 2]", "QMP input must be a JSON object"),
        (b'{"execute": "query-version", "execute": "x"}', None),  # duplicate key: parse error
        (b'{"execute": 5, "id": 1}', "QMP input member 'execute' must be a string"),
        (b'{"execute": "query-version", "arguments": [], "id": 1}',
         "QMP input member 'arguments' must be an object"),
        (b'{"id": 1}', "QMP input lacks member 'execute'"),
        (b'{"execute": "query-version", "bogus": 1, "id": 1}',
         "QMP input member 'bogus' is unexpected"),
        (b'{"exec-oob": "query-version", "id": 1}',
         "The command query-version does not support OOB"),
        (b'{"execute": "query-version", "arguments": {"x": NaN}}', None),
    ]
    for raw, desc in cases:
        await c.send(raw)
        r = await c.recv()
        assert r["error"]["class"] == "GenericError", raw
        if desc is None:
            assert r["error"]["desc"].startswith("JSON parse error"), r
        else:
            assert r["error"]["desc"] == desc, raw
    # A request split across writes, pretty-printed over lines, then two in one write.
    await c.send(b'{"execute":\n  "query-')
    await c.send(b'version", "id": "split"}')
    assert (await c.recv())["id"] == "split"
    await c.send(b'{"execute":"query-version","id":1}{"execute":"query-version","id":2}')
    assert [(await c.recv())["id"] for _ in range(2)] == [1, 2]
    # A string holding brackets and escaped quotes does not confuse the framing.
    await c.send(b'{"execute":"query-version","id":"a}\\"]{"}')
    assert (await c.recv())["id"] == 'a}"]{'
    c.close()


async def test_oversized_message_is_refused_without_dropping_the_session(server) -> None:
    c = await Raw.open(Path(server.path))
    await c.negotiate()
    await c.send(b'{"execute":"query-version","id":"' + b"x" * (server.max_message + 10) + b'"}')
    r = await c.recv()
    assert r["error"]["class"] == "GenericError" and "exceeds" in r["error"]["desc"]
    await c.send({"execute": "query-version", "id": "after"})
    assert (await c.recv())["id"] == "after"
    c.close()


def test_splitter_frames_like_a_streaming_parser() -> None:
    s = JsonSplitter(limit=64)
    assert s.feed(b'  {"a": [1, {"b": "}"}]}  42 {') == [(b'{"a": [1, {"b": "}"}]}', None),
                                                         (b"42", None)]
    assert s.pending == 1
    assert s.feed(b"}") == [(b"{}", None)]
    out = s.feed(b"[" + b"1," * 40 + b"1]{}")
    assert out[0] == (b"", "JSON parse error, message exceeds 64 bytes")
    assert out[1:] == [(b"{}", None)]  # the rest of the oversized text was skipped


async def test_qemu_qmp_client_errors_and_several_clients(server) -> None:
    clients = [QMPClient(f"c{i}") for i in range(3)]
    for c in clients:
        await c.connect(server.path)
    assert len(server.sessions) == 3
    names = {d["name"] for d in await clients[0].execute("query-commands")}  # type: ignore[union-attr]
    assert {"qmp_capabilities", "query-commands", "query-version", "query-mali-gpu",
            "query-mali-mmu", "x-query-mali-translate", "x-query-mali-page-table",
            "query-mali-csg", "query-mali-stats"} <= names
    with pytest.raises(ExecuteError) as e:
        await clients[1].execute("x-query-mali-translate", {"as": 1})
    assert e.value.error_class == "GenericError" and str(e.value) == "Parameter 'va' is missing"
    with pytest.raises(ExecuteError) as e:
        await clients[1].execute("query-mali-gpu", {"verbose": True})
    assert str(e.value) == "Parameter 'verbose' is unexpected"
    # Still connected after errors; a client that leaves does not disturb the others.
    await clients[1].disconnect()
    assert (await clients[2].execute("query-version")) == server.version
    await clients[0].disconnect()
    await clients[2].disconnect()
    for _ in range(100):
        if not server.sessions:
            break
        await asyncio.sleep(0.01)
    assert not server.sessions


async def test_events_only_after_negotiation(server) -> None:
    c = await Raw.open(Path(server.path))
    await c.recv()  # greeting; not negotiated yet
    dev = server.device
    dev.gpu.mmu.read(3, 0x5000, 4)  # AS3 disabled: a translation fault, reported
    await c.send({"execute": "qmp_capabilities", "id": 1})
    assert await c.recv() == {"return": {}, "id": 1}  # no event was queued before it
    dev.gpu.mmu.write(2, 0x7008, b"\0" * 8)
    ev = await c.recv()
    assert ev["event"] == "MALI_MMU_FAULT"
    assert ev["data"] == {"as": 2, "va": 0x7008, "latched": True, "access": "write",
                          "exception-type": 0xC0, "exception-name": "TRANSLATION_FAULT_0",
                          "bus": False, "faultstatus": 0xC0 | 3 << 8}
    ts = ev["timestamp"]
    assert set(ts) == {"seconds", "microseconds"} and 0 <= ts["microseconds"] < 1_000_000
    c.close()


async def test_cli_client_prints_the_result(server, capsys) -> None:
    ns = argparse.Namespace(socket=server.path, qmp_command="x-query-mali-translate",
                            args=["as=1", "va=0x1000", "access=write"], verbose=0)
    assert await asyncio.to_thread(qmp_main, ns) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["as"] == 1 and out["va"] == 0x1000 and out["access"] == "write"
    assert out["translated"] is False
    with pytest.raises(UserError, match=r"qmp: bogus: CommandNotFound: The command bogus"):
        await run_command(server.path, "bogus", {})
    with pytest.raises(UserError, match=r"Invalid parameter type for 'va', expected: integer"):
        await run_command(server.path, "x-query-mali-translate", {"as": 1, "va": "zz"})


async def test_cli_client_without_a_server(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"qmp: cannot connect to .*nothing.sock"):
        await run_command(str(tmp_path / "nothing.sock"), "query-version", {})


def test_cli_value_parsing() -> None:
    assert parse_value("0x10") == 16 and parse_value("12") == 12 and parse_value("-3") == -3
    assert parse_value("true") is True and parse_value("False") is False
    assert parse_value("read") == "read" and parse_value("") == ""
    assert parse_arguments(["as=2", "va=0xffff0000", "access=read"]) == {
        "as": 2, "va": 0xFFFF0000, "access": "read"}
    with pytest.raises(UserError, match="not key=value"):
        parse_arguments(["as"])
    with pytest.raises(UserError, match="given twice"):
        parse_arguments(["as=1", "as=2"])

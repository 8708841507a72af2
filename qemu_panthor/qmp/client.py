"""``qemu-panthor qmp [--socket PATH] COMMAND [key=value ...]``: one query to a running backend.

Connects with qemu.qmp's ``QMPClient`` (greeting + negotiation), executes COMMAND with the
arguments given as ``key=value`` (values: ``true``/``false`` -> bool, ``0x..``/decimal -> int,
anything else -> string) and prints the result as JSON. Connection and command errors become one
clear line and a non-zero exit (via :class:`~qemu_panthor.errors.UserError`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys

from ..errors import UserError

#: Environment fallback for ``--socket`` (e.g. exported by a wrapper script).
SOCKET_ENV = "QEMU_PANTHOR_QMP"
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0


#: A command-line argument value.
ArgValue = bool | int | str


def parse_value(text: str) -> ArgValue:
    """``true``/``false`` -> bool, integer literals (``0x`` hex, ``0o``, ``0b``, decimal) ->
    int, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text, 0)
    except ValueError:
        return text


def parse_arguments(items: list[str]) -> dict[str, ArgValue]:
    out: dict[str, ArgValue] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"qmp: argument {item!r} is not key=value")
        if key in out:
            raise UserError(f"qmp: argument {key!r} given twice")
        out[key] = parse_value(value)
    return out


async def run_command(path: str, command: str, arguments: dict[str, ArgValue]) -> object:
    """Connect to the QMP socket at ``path``, execute one command, return its (JSON) result."""
    from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, QMPClient

    client = QMPClient("qemu-panthor-qmp")
    try:
        await asyncio.wait_for(client.connect(path), CONNECT_TIMEOUT)
    except ConnectError as e:
        cause = e.exc.strerror if isinstance(e.exc, OSError) and e.exc.strerror else e.exc
        raise UserError(f"qmp: cannot connect to {path}: {cause}") from None
    except TimeoutError:
        raise UserError(f"qmp: no QMP greeting from {path} within {CONNECT_TIMEOUT:.0f} s") \
            from None
    try:
        return await asyncio.wait_for(client.execute(command, arguments or None),
                                      COMMAND_TIMEOUT)
    except ExecuteError as e:
        raise UserError(f"qmp: {command}: {e.error_class}: {e}") from None
    except ExecInterruptedError:
        raise UserError(f"qmp: {command}: the server closed the connection") from None
    except TimeoutError:
        raise UserError(f"qmp: {command}: no reply within {COMMAND_TIMEOUT:.0f} s") from None
    finally:
        with contextlib.suppress(Exception):  # a hang-up after the reply changes nothing
            await client.disconnect()


def qmp_main(args: argparse.Namespace) -> int:
    path = args.socket or os.environ.get(SOCKET_ENV)
    if not path:
        raise UserError(f"qmp: give the backend's QMP socket with --socket PATH "
                        f"(or set {SOCKET_ENV})")
    arguments = parse_arguments(list(args.args))
    if not args.verbose:  # qemu.qmp logs failures itself; we print one line
        logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    result = asyncio.run(run_command(path, args.qmp_command, arguments))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


__all__ = ["parse_arguments", "parse_value", "qmp_main", "run_command"]

"""QMP commands declared as data: names, typed arguments, validation with QEMU's wording.

A :class:`Command` names its arguments (QAPI-style, ``dashed-names``) with a type, optional
bounds or choices; :meth:`CommandTable.call` validates the request's ``arguments`` and calls the
handler with keyword arguments (:attr:`Arg.pyname`: ``max-ranges`` -> ``max_ranges``,
``as`` -> ``as_``). Errors are :class:`QmpError` with
the QMP error class QEMU would use (``GenericError``, ``CommandNotFound``).
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_TYPE_NAMES = {"int": "integer", "bool": "boolean", "str": "string", "[str]": "array"}
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1


class QmpError(Exception):
    """A command failure: becomes ``{"error": {"class": error_class, "desc": desc}}``."""

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc


def generic(desc: str) -> QmpError:
    return QmpError("GenericError", desc)


@dataclass(frozen=True)
class Arg:
    """One command argument. ``type``: "int", "bool", "str" or "[str]"."""

    name: str
    type: str
    optional: bool = False
    doc: str = ""
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    @property
    def pyname(self) -> str:
        """The handler's keyword: dashes become underscores, Python keywords get a ``_``."""
        n = self.name.replace("-", "_")
        return n + "_" if keyword.iskeyword(n) else n

    def check(self, value: Any) -> Any:
        t = self.type
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
            "[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[t]
        if not ok:
            raise generic(f"Invalid parameter type for '{self.name}', expected: {_TYPE_NAMES[t]}")
        if t == "int":
            lo = _I64_MIN if self.minimum is None else self.minimum
            hi = _U64_MAX if self.maximum is None else self.maximum
            if not lo <= value <= hi:
                raise generic(f"Parameter '{self.name}' expects a value in {lo:#x}..{hi:#x}")
        if self.choices and value not in self.choices:
            raise generic(f"Parameter '{self.name}' does not accept value '{value}' "
                          f"(one of: {', '.join(self.choices)})")
        return value


@dataclass(frozen=True)
class Command:
    """A QMP command: ``handler(**validated_args)`` returns the JSON-able result."""

    name: str
    handler: Callable[..., Any]
    args: tuple[Arg, ...] = ()
    doc: str = ""


class CommandTable:
    """The commands a server offers, by name."""

    def __init__(self) -> None:
        self._cmds: dict[str, Command] = {}

    def register(self, cmd: Command) -> None:
        if cmd.name in self._cmds:
            raise ValueError(f"QMP command {cmd.name!r} registered twice")
        self._cmds[cmd.name] = cmd

    def __contains__(self, name: object) -> bool:
        return name in self._cmds

    def names(self) -> list[str]:
        return sorted(self._cmds)

    def get(self, name: str) -> Command:
        cmd = self._cmds.get(name)
        if cmd is None:
            raise QmpError("CommandNotFound", f"The command {name} has not been found")
        return cmd

    def validate(self, name: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Checked keyword arguments for ``name`` (unknown, missing, mistyped -> QmpError)."""
        cmd = self.get(name)
        known = {a.name: a for a in cmd.args}
        for key in args:
            if key not in known:
                raise generic(f"Parameter '{key}' is unexpected")
        kwargs: dict[str, Any] = {}
        for a in cmd.args:
            if a.name in args:
                kwargs[a.pyname] = a.check(args[a.name])
            elif not a.optional:
                raise generic(f"Parameter '{a.name}' is missing")
        return kwargs

    def call(self, name: str, args: Mapping[str, Any]) -> Any:
        kwargs = self.validate(name, args)
        return self._cmds[name].handler(**kwargs)

    def describe(self) -> list[dict[str, Any]]:
        """Every command with its arguments (for ``x-query-mali-schema`` and the docs)."""
        out = []
        for name in self.names():
            cmd = self._cmds[name]
            out.append({
                "name": name,
                "doc": cmd.doc,
                "arguments": [
                    {"name": a.name, "type": a.type, "optional": a.optional, "doc": a.doc}
                    | ({"choices": list(a.choices)} if a.choices else {})
                    for a in cmd.args
                ],
            })
        return out


__all__ = ["Arg", "Command", "CommandTable", "QmpError", "generic"]

"""The backend's QMP server: QEMU Machine Protocol introspection of the emulated Mali GPU.

See docs/qmp.md. ``build_server(device, vfio)`` returns a :class:`QmpServer` offering the Mali
commands and the :class:`MaliEvents` wiring its events; ``await server.start(path)`` listens.
"""

from .commands import MaliEvents, MaliIntrospection, build_server
from .protocol import JsonSplitter, QmpServer, QmpSession
from .schema import Arg, Command, CommandTable, QmpError

__all__ = [
    "Arg",
    "Command",
    "CommandTable",
    "JsonSplitter",
    "MaliEvents",
    "MaliIntrospection",
    "QmpError",
    "QmpServer",
    "QmpSession",
    "build_server",
]

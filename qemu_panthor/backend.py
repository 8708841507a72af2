"""``qemu-panthor serve``: the device backend, following the vfio-user backend conventions
(``--socket-path`` or an inherited ``--fd``, no daemonizing, SIGTERM ends it cleanly,
``--print-capabilities`` prints JSON and exits)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from typing import TYPE_CHECKING

from . import eventloop, tracelog
from .errors import UserError

if TYPE_CHECKING:
    from .device import MaliPciFunction
    from .qmp import MaliEvents, QmpServer
    from .vfio_user import VfioUserServer

log = logging.getLogger(__name__)


def capabilities() -> dict:
    from .gpu.models import MODELS

    return {"type": "gpu", "features": ["mali-csf"], "models": sorted(MODELS)}


async def _serve(args: argparse.Namespace) -> int:
    # --trace: register/IRQ/protocol traces on stderr, written through aiofiles by a task.
    tracer = tracelog.install(2) if args.trace else None
    try:
        return await _serve_device(args)
    finally:
        if tracer is not None:
            await tracer.aclose()


async def _serve_device(args: argparse.Namespace) -> int:
    from .device import MaliPciFunction
    from .gpu.models import MODELS
    from .vfio_user import VfioUserServer

    loop = asyncio.get_running_loop()
    device = MaliPciFunction(MODELS[args.gpu], trace=args.trace, loop=loop)
    server = VfioUserServer(device, trace=args.trace)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.fd is not None:
        try:
            os.fstat(args.fd)
        except OSError:
            raise UserError(f"--fd {args.fd} is not an open file descriptor") from None
        task = asyncio.create_task(server.serve_fd(args.fd))
    else:
        try:
            await server.listen_path(args.socket_path)
        except OSError as e:
            raise UserError(f"cannot listen on {args.socket_path}: {e.strerror}") from None
        task = asyncio.create_task(server.serve())
    log.info("serving %s on %s", device.model.model_name, args.socket_path or f"fd {args.fd}")
    qmp = await _start_qmp(args.qmp, device, server) if args.qmp else None
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if qmp is not None:
        qmp_server, events = qmp
        events.detach()
        await qmp_server.close()
    await server.close()
    for t in (task, stopper):
        t.cancel()
    await asyncio.gather(task, stopper, return_exceptions=True)
    device.close()
    return 0


async def _start_qmp(
    path: str, device: MaliPciFunction, vfio: VfioUserServer
) -> tuple[QmpServer, MaliEvents]:
    """The QMP introspection server (docs/qmp.md) on ``path``, in this event loop."""
    from .qmp import build_server

    qmp_server, events = build_server(device, vfio)
    try:
        await qmp_server.start(path)
    except OSError as e:
        events.detach()
        raise UserError(f"--qmp: cannot listen on {path}: {e.strerror}") from None
    log.info("QMP on %s", path)
    return qmp_server, events


def serve_main(args: argparse.Namespace) -> int:
    if args.print_capabilities:
        print(json.dumps(capabilities()))
        return 0
    if args.socket_path is None and args.fd is None:
        raise UserError("serve needs --socket-path PATH or --fd N")
    return eventloop.run(_serve(args))

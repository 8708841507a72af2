"""``qemu-panthor serve``: the device backend, following the vfio-user backend conventions
(``--socket-path`` or an inherited ``--fd``, no daemonizing, SIGTERM ends it cleanly,
``--print-capabilities`` prints JSON and exits).

Lifetime (docs/launcher.md): a standalone server serves one client after another until
SIGTERM/SIGINT (exit status 0, its socket file removed). ``--once`` ends it when its first
client disconnects, and ``--parent-pid PID`` when that parent process dies
(``PR_SET_PDEATHSIG``): ``qemu-panthor boot`` passes both, so its backend never outlives the
QEMU it serves nor the launcher itself.
"""

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


def capabilities() -> dict[str, object]:
    from .gpu.models import MODELS

    return {"type": "gpu", "features": ["mali-csf", "mali-jm"], "models": sorted(MODELS)}


async def _serve(args: argparse.Namespace) -> int:
    # --trace: register/IRQ/protocol traces on stderr, written through aiofiles by a task.
    tracer = tracelog.install(2) if args.trace else None
    try:
        return await _serve_device(args)
    finally:
        if tracer is not None:
            await tracer.aclose()


async def _serve_device(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signo: int) -> None:
        log.info("%s: stopping", signal.Signals(signo).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    from .device import MaliPciFunction
    from .gpu.models import MODELS
    from .vfio_user import VfioUserServer

    device = MaliPciFunction(MODELS[args.gpu], trace=args.trace, loop=loop,
                             work_scale=args.work_scale)
    timeline = None
    if args.timeline:
        from .timeline import Timeline

        try:
            with open(args.timeline, "wb"):
                pass
        except OSError as e:
            raise UserError(f"--timeline {args.timeline}: {e.strerror}") from None
        timeline = Timeline(args.timeline)
        timeline.start()
        device.attach_timeline(timeline)
    server = VfioUserServer(device, trace=args.trace)
    once = bool(args.once)
    tasks: set[asyncio.Task[object]] = set()
    qmp: tuple[QmpServer, MaliEvents] | None = None
    try:
        if args.fd is not None:
            try:
                os.fstat(args.fd)
            except OSError:
                raise UserError(f"--fd {args.fd} is not an open file descriptor") from None
            serving = asyncio.create_task(server.serve_fd(args.fd, once=once))
        else:
            try:
                await server.listen_path(args.socket_path)
            except OSError as e:
                raise UserError(f"cannot listen on {args.socket_path}: {e.strerror}") from None
            serving = asyncio.create_task(server.serve(once=once))
        tasks.add(serving)
        log.info("serving %s on %s%s", device.model.model_name,
                 args.socket_path or f"fd {args.fd}", " (one client)" if once else "")
        if args.qmp:
            qmp = await _start_qmp(args.qmp, device, server)
        stopper = asyncio.create_task(stop.wait())
        tasks.add(stopper)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if serving.done() and not serving.cancelled() and serving.exception() is None:
            log.info("the client disconnected; exiting" if once else "server closed")
        if device.firmware is not None:
            st = device.firmware.stats
            log.info("command streams ran: %d jobs, %d instructions, %d CS fatal", st["jobs"],
                     st["cs_instructions"], st["cs_fatal"])
        if device.gpu.jobs is not None:
            totals = device.gpu.jobs.totals()
            log.info("job slots ran: %d jobs, %d chains done, %d failed or stopped",
                     totals["jobs"], totals["chains-done"], totals["chains-failed"])
    finally:
        # The signal handlers stay: another SIGTERM during this short clean-up is a no-op.
        if qmp is not None:
            qmp_server, events = qmp
            events.detach()
            await qmp_server.close()
        await server.close()
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if timeline is not None:
            device.attach_timeline(None)
            await timeline.aclose()
            log.info("timeline: %d events in %s", timeline.events, timeline.path)
        device.close()
    for r in results:
        if isinstance(r, Exception):
            log.error("the vfio-user server failed: %r", r, exc_info=r)
            return 1
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


class _Stopped(Exception):
    """SIGTERM/SIGINT before the event loop took the signals over."""


def _early_stop(signo: int, frame: object) -> None:
    raise _Stopped(signo)


def serve_main(args: argparse.Namespace) -> int:
    if args.print_capabilities:
        print(json.dumps(capabilities()))
        return 0
    if args.socket_path is None and args.fd is None:
        raise UserError("serve needs --socket-path PATH or --fd N")
    # SIGTERM/SIGINT end the server cleanly at any time, with exit status 0: until the loop
    # installs its own handlers (first thing it does), they unwind through _Stopped.
    previous = {sig: signal.signal(sig, _early_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if args.parent_pid is not None:
            from .launcher.procs import set_parent_death_signal

            set_parent_death_signal(signal.SIGTERM, args.parent_pid)
        return eventloop.run(_serve(args))
    except _Stopped as e:
        log.info("%s before serving: stopped", signal.Signals(e.args[0]).name)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

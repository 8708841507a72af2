"""``qemu-panthor boot``: start the backend and QEMU, stream the guest console, power off.

The backend runs as its own process (``qemu-panthor serve --fd N --once --parent-pid PID``) on
a listening socket that this launcher creates first, so QEMU can never dial before the server
listens. QEMU is driven only through qemu.qmp: it dials our QMP server at start, we confirm
the GPU with ``query-pci`` and end it with ``quit`` when it does not power off by itself.

Every process the launcher starts is watched (docs/launcher.md): whichever of QEMU and the
backend ends first, the other is stopped within about a second; SIGINT/SIGTERM/SIGHUP stop
both and end the launcher with 128+signal; neither can outlive the launcher, even a SIGKILLed
one (``PR_SET_PDEATHSIG``, :mod:`.procs`). The console is bounded (:mod:`.console`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiofiles
from qemu.qmp import EventListener, QMPClient

from ..errors import UserError
from ..setup import recipes
from ..setup.initramfs import InitramfsSpec, build_initramfs
from ..setup.pipeline import Images
from ..setup.tree import boot_images
from . import suites
from .console import DEFAULT_CAP_BYTES, ConsoleFilter
from .dtb import build_boot_dtb
from .guestfiles import firmware_files, gpu_driver, guest_files
from .procs import describe_status, with_parent_death_signal
from .qemu import QemuConfig, machine_argv, qemu_argv
from .report import report

log = logging.getLogger(__name__)

T = TypeVar("T")

PCI_VENDOR_ARM = 0x13B5
RESULT_RE = re.compile(r"@qp result rc=(\d+)")
# Lines kept in BootResult.console even after the console cap (what the summary needs).
_ESSENTIAL = re.compile(
    r"^(@qp |ok |not ok |1\.\.|# qp-info|# igt-(test|exit) |# vulkaninfo-exit "
    r"|# vkmark-exit |# vkmark \[)")

# Exit codes of `qemu-panthor boot` besides the guest's own result (0, 1 = a selftest failed,
# 2 = the guest's own error); docs/launcher.md has the table.
EXIT_USAGE = 2  # UserError: bad arguments, set-up or QEMU start failure
EXIT_NO_RESULT = 3  # QEMU ended (or was killed) before the guest reported a result
EXIT_BACKEND = 4  # the GPU backend died while the guest ran
EXIT_TIMEOUT = 124  # the guest did not power off within --timeout
# 128 + N: stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP)

STOP_GRACE_S = 1.0  # SIGTERM, then SIGKILL after this long
# QEMU whose backend died can hang in its vfio-user client (SIGTERM alone does not end it).
DEAD_BACKEND_GRACE_S = 0.5
BACKEND_LEFT_GRACE_S = 1.0  # a backend that ended cleanly: how long QEMU gets to end too
BACKEND_SELF_EXIT_S = 1.0  # QEMU ended: how long the backend gets to notice and end by itself
CONSOLE_DRAIN_S = 2.0  # after QEMU ended, how long its console pipe may take to reach EOF
READ_CHUNK = 1 << 16
MAX_LINE = 1 << 16  # a longer "line" is cut (the guest console has no such lines)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class BootResult:
    rc: int | None  # the guest's result, None if it never reported one
    console: list[str] = field(default_factory=list)
    qemu_rc: int | None = None
    setup_s: float = 0.0
    boot_s: float = 0.0
    run_dir: Path | None = None
    pci: list[dict[str, Any]] = field(default_factory=list)
    # How the run ended: "powered-off" (QEMU exited by itself), "backend-died", "timeout",
    # "interrupted" (a signal; see .signal), "start-failed".
    outcome: str = ""
    fault: str | None = None  # one line: what went wrong (None when nothing did)
    signal: int | None = None  # the signal that stopped the run
    backend_rc: int | None = None
    backend_pid: int | None = None
    qemu_pid: int | None = None
    console_truncated: bool = False
    kept: bool = False  # run_dir still exists (--keep, or logs kept after a fault)

    @property
    def exit_code(self) -> int:
        """The launcher's exit status for this run (before the KTAP summary is applied)."""
        if self.signal is not None:
            return 128 + self.signal
        if self.outcome == "backend-died":
            return EXIT_BACKEND
        if self.rc is None:
            return EXIT_NO_RESULT
        return self.rc


async def _write(path: Path, data: bytes) -> None:
    async with aiofiles.open(path, "wb") as fh:
        await fh.write(data)


async def _in_daemon_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a daemon thread: unlike ``asyncio.to_thread``, an interrupted launcher
    does not wait for it at exit."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        if not fut.done():
            outcome()

    def work() -> None:
        try:
            value = fn()
        except BaseException as e:  # delivered to the awaiting task
            exc = e
            done = lambda: fut.set_exception(exc)  # noqa: E731
        else:
            done = lambda: fut.set_result(value)  # noqa: E731
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            loop.call_soon_threadsafe(deliver, done)

    threading.Thread(target=work, name="qemu-panthor-build", daemon=True).start()
    return await fut


class Boot:
    """One guest run. ``await run()`` returns its :class:`BootResult`; it never leaves a
    process behind. :meth:`request_stop` (a signal handler, or a test) ends it early."""

    def __init__(self, images: Images, *, gpu: str, run: str, qmp: str | None, trace: bool,
                 timeout: float, append: str, with_gpu: bool = True, keep: bool = False,
                 echo: bool = True, interactive: bool = False,
                 console_cap: int = DEFAULT_CAP_BYTES, hotplug: bool = False,
                 backend_socket: Path | None = None, coherent: bool = False,
                 shares: list[tuple[str, Path]] | None = None,
                 extra_files: dict[str, tuple[bytes, int]] | None = None,
                 keep_logs: bool = False, timeline: Path | None = None,
                 suite: str = "default", late_modules: list[str] | None = None,
                 display: bool = False) -> None:
        self.images = images
        #: which selftests (--run selftests): default, long or all
        self.suite = suite
        #: --timeline: the backend writes a Perfetto trace here; the guest marks its submits
        self.timeline = timeline
        #: host directories shared read-only into the guest (virtio-9p mount tag, path)
        self.shares = shares or []
        #: more files for the initramfs (path -> data, mode)
        self.extra_files = extra_files or {}
        #: modules the guest loads after the GPU's device (a suite's, when the kernel has them)
        self.late_modules = late_modules or []
        #: the machine's display controller beside the GPU (images/arches.toml `display`)
        self.display = display
        #: keep the run directory's logs (and results) after a clean run too
        self.keep_logs = keep_logs
        #: mark the GPU dma-coherent in the guest's device tree (RK3588's is not)
        self.coherent = coherent
        self.gpu = gpu
        self.run_mode = run
        self.qmp_path = qmp
        self.trace = trace
        self.timeout = timeout
        self.append = append
        self.with_gpu = with_gpu
        self.keep = keep
        self.echo = echo
        self.interactive = interactive
        self.hotplug = hotplug
        # A backend someone else runs (`qemu-panthor serve --socket-path`): QEMU dials it and
        # the launcher neither starts nor watches nor stops it.
        self.backend_socket = backend_socket
        self.run_dir = Path(tempfile.mkdtemp(prefix="qemu-panthor-run-"))
        self.result = BootResult(rc=None, run_dir=self.run_dir)
        self.console_filter = ConsoleFilter(cap=console_cap)
        # QEMU's QMP (the launcher is its only client); tests may send it commands.
        self.qemu_qmp: QMPClient | None = None
        self.qemu_events: list[dict[str, Any]] = []  # every QMP event QEMU sent
        self._backend: asyncio.subprocess.Process | None = None
        self._qemu: asyncio.subprocess.Process | None = None
        self._console_task: asyncio.Task[None] | None = None
        self._stop_signal: int | None = None
        self._stopping = False  # the run is being ended (by a signal, a fault or its end)
        self._stop = asyncio.Event()
        self._gpu_deleted = asyncio.Event()

    # -- control -----------------------------------------------------------------------------
    def request_stop(self, signo: int) -> None:
        """Stop the run (QEMU and the backend) and end it as interrupted by ``signo``; a
        second request kills both at once."""
        if self._stop_signal is None:
            self._stop_signal = signo
            self._stopping = True
            self._stop.set()
            return
        for p in (self._qemu, self._backend):
            if p is not None and p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()

    def _qmp_log_filter(self, record: logging.LogRecord) -> bool:
        """QMP session errors while the run is being stopped (QEMU goes away under the
        session) are expected, not news."""
        return not (self._stopping or "CancelledError" in record.getMessage())

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def backend_log(self) -> Path:
        return self.run_dir / "backend.log"

    # -- the run -------------------------------------------------------------------------------
    async def run(self) -> BootResult:
        t0 = time.monotonic()
        main = asyncio.create_task(self._run_guest())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if main.done():
                main.result()  # UserError and friends reach the caller (after the clean-up)
        finally:
            stopper.cancel()
            if not main.done():
                main.cancel()
            await asyncio.gather(main, stopper, return_exceptions=True)
            if self._stop_signal is not None:
                self.result.signal = self._stop_signal
                self.result.outcome = "interrupted"
            self._stopping = True
            await self._shutdown()
            self.result.boot_s = time.monotonic() - t0
            self._tidy_run_dir()
        return self.result

    async def _run_guest(self) -> None:
        model_fw = firmware_files(self.gpu)
        spec = InitramfsSpec(
            modules_dir=self.images.modules_dir, busybox=self.images.busybox,
            init_script=recipes.GUEST_DIR / "init", glue_ko=self.images.glue_ko,
            firmware=model_fw,
            extra_files=guest_files(self.images, self.gpu) | self.extra_files,
            shares=bool(self.shares), driver=gpu_driver(self.gpu),
            late_modules=self.late_modules,
        )
        initrd = self.run_dir / "initramfs.cpio"
        await _write(initrd, await _in_daemon_thread(lambda: build_initramfs(spec)))
        gpu_sock: Path | None = None
        if self.with_gpu:
            gpu_sock = self.backend_socket or await self._start_backend()
        qmp_sock = self.run_dir / "qmp.sock"
        # A kernel tree of your own shows warnings (WARN, lockdep) on the console too.
        quiet = "quiet loglevel=5" if self.images.tree else "quiet"
        append = (f"console={self.images.arch.console} {quiet} panic=-1 qp.run={self.run_mode}"
                  f" qp.gpu={self.gpu} qp.coherent={int(self.coherent)}"
                  f"{' qp.mark=1' if self.timeline else ''} qp.suite={self.suite}")
        cfg = QemuConfig(kernel=self.images.kernel_image, initrd=initrd,
                         append=f"{append} {self.append}".strip(), qmp_socket=qmp_sock,
                         gpu_socket=gpu_sock, interactive=self.interactive,
                         hotplug=self.hotplug, arch=self.images.arch, shares=self.shares,
                         display=self.display)
        if self.images.needs_boot_dtb and self.with_gpu:
            if self.hotplug:
                raise UserError("hotplug: the boot device tree names the GPU at 00:02.0; "
                                "this kernel line needs the GPU there")

            cfg.dtb = await build_boot_dtb(
                self.images.qemu, machine_argv(self.images.qemu, cfg), self.run_dir / "boot.dtb",
                coherent=self.coherent, driver=gpu_driver(self.gpu),
            )
        argv = qemu_argv(self.images.qemu, cfg)
        async with aiofiles.open(self.run_dir / "qemu.cmdline", "w") as fh:
            await fh.write(" ".join(argv) + "\n")
        qmp = self.qemu_qmp = QMPClient("qemu-panthor-launcher")
        qmp.logger.addFilter(self._qmp_log_filter)
        await qmp.start_server(str(qmp_sock))
        # QEMU gets SIGKILL if the launcher dies; in its own process group unless it owns
        # the terminal (--run shell), so a terminal's Ctrl-C reaches the launcher alone and
        # the launcher stops the run in order.
        self._qemu = await asyncio.create_subprocess_exec(
            *with_parent_death_signal(argv, signal.SIGKILL),
            stdin=None if self.interactive else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            process_group=None if self.interactive else 0,
        )
        self.result.qemu_pid = self._qemu.pid
        log.info("QEMU pid %d", self._qemu.pid)
        assert self._qemu.stdout is not None
        self._console_task = asyncio.create_task(self._console(self._qemu.stdout))
        qemu_end = asyncio.ensure_future(self._qemu.wait())
        backend_end = asyncio.ensure_future(self._backend.wait()) if self._backend else None
        try:
            await self._watch(qmp, qemu_end, backend_end)
        finally:
            for f in (qemu_end, backend_end):
                if f is not None:
                    f.cancel()

    async def _watch(self, qmp: QMPClient, qemu_end: asyncio.Future[int],
                     backend_end: asyncio.Future[int] | None) -> None:
        assert self._qemu is not None
        ends: set[asyncio.Future[Any]] = {qemu_end} | ({backend_end} if backend_end else set())
        accept = asyncio.ensure_future(qmp.accept())
        try:
            await asyncio.wait({accept, *ends}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            accept.cancel()
            with contextlib.suppress(BaseException):
                await accept
            raise
        if backend_end is not None and backend_end.done() and not qemu_end.done():
            accept.cancel()
            with contextlib.suppress(BaseException):
                await accept
            self._backend_died()
            return
        if not accept.done() or accept.exception() is not None:
            accept.cancel()
            with contextlib.suppress(BaseException):
                await accept
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(qemu_end), 10)
            await self._drain_console()
            self.result.outcome = "start-failed"
            tail = "\n".join(self.result.console[-10:])
            raise UserError(f"QEMU did not start ({describe_status(self._qemu.returncode)}; "
                            f"logs in {self.run_dir}):\n{tail}" + self._backend_tail())
        events = asyncio.create_task(self._qemu_events(qmp))
        try:
            if self.with_gpu:
                await self._check_pci(qmp)
            await self._wait_for_end(qmp, qemu_end, backend_end)
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events

    async def _wait_for_end(self, qmp: QMPClient, qemu_end: asyncio.Future[int],
                            backend_end: asyncio.Future[int] | None) -> None:
        assert self._qemu is not None
        deadline = time.monotonic() + self.timeout
        while True:
            ends: set[asyncio.Future[Any]] = {qemu_end}
            if backend_end is not None:
                ends.add(backend_end)
            left = deadline - time.monotonic()
            done, _ = await asyncio.wait(ends, timeout=max(left, 0),
                                         return_when=asyncio.FIRST_COMPLETED)
            if qemu_end in done:
                self.result.outcome = "powered-off"
                return
            if backend_end is not None and backend_end in done:
                if await self._backend_left_cleanly(qemu_end):
                    if qemu_end.done():
                        self.result.outcome = "powered-off"
                        return
                    backend_end = None  # the GPU was unplugged: the guest runs on without it
                    continue
                self._backend_died()
                return
            if not done:
                self.result.outcome = "timeout"
                self.result.fault = f"the guest did not power off within {self.timeout:.0f} s"
                if self.result.rc is None:
                    self.result.rc = EXIT_TIMEOUT
                print(f"qemu-panthor: {self.result.fault}; quitting QEMU", file=sys.stderr)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(qmp.execute("quit"), 2)
                return

    async def _backend_left_cleanly(self, qemu_end: asyncio.Future[int]) -> bool:
        """The backend ended: was it the normal end of its client (exit status 0 because
        QEMU is exiting, or the GPU was unplugged with device_del)?"""
        assert self._backend is not None
        if self._backend.returncode != 0:
            return False
        unplugged = asyncio.ensure_future(self._gpu_deleted.wait())
        either: set[asyncio.Future[Any]] = {qemu_end, unplugged}
        try:
            await asyncio.wait(either, timeout=BACKEND_LEFT_GRACE_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            unplugged.cancel()
        if not qemu_end.done() and self._gpu_deleted.is_set():
            log.info("the backend ended after the GPU was unplugged (device_del)")
        return qemu_end.done() or self._gpu_deleted.is_set()

    def _backend_died(self) -> None:
        assert self._backend is not None
        rc = self._backend.returncode
        self.result.outcome = "backend-died"
        self.result.fault = (f"the GPU backend (qemu-panthor serve, pid {self._backend.pid}) "
                             f"ended while the guest ran: {describe_status(rc)}")

    async def _qemu_events(self, qmp: QMPClient) -> None:
        listener = EventListener()
        qmp.register_listener(listener)
        try:
            async for ev in listener:
                data: dict[str, Any] = dict(ev)
                self.qemu_events.append(data)
                info = data.get("data") or {}
                log.info("QEMU event %s %s", data.get("event"), info)
                if data.get("event") == "DEVICE_DELETED" and info.get("device") == "gpu0":
                    self._gpu_deleted.set()
        finally:
            qmp.remove_listener(listener)

    # -- ending ----------------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Stop whatever still runs, QEMU first: its console, then the backend."""
        gentle = self.result.outcome in ("powered-off", "timeout")
        grace = 10.0 if gentle else STOP_GRACE_S
        dead_backend = self.result.outcome == "backend-died"
        if dead_backend:
            grace = DEAD_BACKEND_GRACE_S
        tasks = [self._stop_process(self._qemu, "QEMU", grace=grace, may_hang=dead_backend)]
        if not gentle:  # nothing to wait for: the backend goes at the same time
            tasks.append(self._stop_process(self._backend, "the backend", grace=STOP_GRACE_S))
        await asyncio.gather(*tasks)
        await self._drain_console()
        if self.qemu_qmp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qemu_qmp.disconnect(), 1)
        # A backend whose QEMU is gone ends by itself (--once); SIGTERM makes sure.
        if gentle and self._backend is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._backend.wait(), BACKEND_SELF_EXIT_S)
        await self._stop_process(self._backend, "the backend", grace=STOP_GRACE_S)
        if self._qemu is not None:
            self.result.qemu_rc = self._qemu.returncode
        if self._backend is not None:
            self.result.backend_rc = self._backend.returncode
        if self.result.outcome == "powered-off" and self.result.rc is None:
            self.result.fault = ("the guest ended without reporting a result "
                                 f"(QEMU exit {self.result.qemu_rc}: "
                                 f"{describe_status(self.result.qemu_rc)})")

    @staticmethod
    async def _stop_process(p: asyncio.subprocess.Process | None, what: str, *,
                            grace: float, may_hang: bool = False) -> None:
        if p is None:
            return
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(p.wait(), grace)
            except TimeoutError:
                log.log(logging.INFO if may_hang else logging.WARNING,
                        "%s (pid %d) ignored SIGTERM for %.1f s: SIGKILL", what, p.pid, grace)
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        await p.wait()

    async def _drain_console(self) -> None:
        t = self._console_task
        if t is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(t), CONSOLE_DRAIN_S)
        except TimeoutError:
            # Someone else holds QEMU's stdout open (a process QEMU started): stop reading.
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _tidy_run_dir(self) -> None:
        r = self.result
        if self.keep:
            r.kept = True
            return
        if (r.fault is None and r.signal is None and r.outcome == "powered-off"
                and not self.keep_logs):
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        # Something went wrong (or the logs were asked for): keep the logs, drop what set-up
        # can rebuild.
        for name in ("initramfs.cpio", "boot.dtb", "boot.qemu.dtb", "gpu.sock", "qmp.sock"):
            with contextlib.suppress(OSError):
                (self.run_dir / name).unlink()
        r.kept = True

    # -- processes -------------------------------------------------------------------------------
    async def _start_backend(self) -> Path:
        sock_path = self.run_dir / "gpu.sock"
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(str(sock_path))
        lsock.listen(1)
        # --once: it ends when QEMU disconnects; --parent-pid: when the launcher dies.
        argv = [sys.executable, "-m", "qemu_panthor", "-v", "serve", "--fd", str(lsock.fileno()),
                "--gpu", self.gpu, "--once", "--parent-pid", str(os.getpid())]
        if self.qmp_path:
            argv += ["--qmp", self.qmp_path]
        if self.trace:
            argv += ["--trace"]
        if self.timeline:
            argv += ["--timeline", str(self.timeline)]
        logf = open(self.backend_log, "wb")
        try:
            self._backend = await asyncio.create_subprocess_exec(
                *argv, pass_fds=[lsock.fileno()], stdin=asyncio.subprocess.DEVNULL,
                stdout=logf, stderr=logf, process_group=0,
            )
        finally:
            logf.close()
            lsock.close()  # the child holds it now
        self.result.backend_pid = self._backend.pid
        log.info("backend pid %d", self._backend.pid)
        return sock_path

    def _backend_tail(self, n: int = 10) -> str:
        lines = self.backend_log_tail(n)
        return ("\nbackend log:\n" + "\n".join(lines)) if lines else ""

    def backend_log_tail(self, n: int = 10) -> list[str]:
        try:
            with open(self.backend_log, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                text = fh.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-n:]

    async def _check_pci(self, qmp: QMPClient) -> None:
        buses = await qmp.execute("query-pci")
        assert isinstance(buses, list)
        devices: list[dict[str, Any]] = []

        def walk(devs: list[dict[str, Any]]) -> None:  # devices behind bridges too
            for d in devs:
                devices.append(d)
                walk(d.get("pci_bridge", {}).get("devices", []))

        for bus in buses:
            walk(bus.get("devices", []))
        self.result.pci = devices
        if self.hotplug:
            # Behind the root port, the function is listed only once the guest has numbered
            # the port's secondary bus: check that QEMU realized it instead.
            if await qmp.execute("qom-get", {"path": "/machine/peripheral/gpu0",
                                             "property": "realized"}) is True:
                return
        if not any(d.get("id", {}).get("vendor") == PCI_VENDOR_ARM for d in devices):
            raise UserError("QEMU realized no GPU function (query-pci lists no Arm device)")

    # -- the console -------------------------------------------------------------------------------
    async def _console(self, stream: asyncio.StreamReader) -> None:
        """QEMU's stdout+stderr until EOF: every line is parsed; what is shown and recorded
        goes through the console filter (repeats collapsed, size capped)."""
        pending = b""
        async with aiofiles.open(self.console_log, "w") as logfh:
            try:
                while True:
                    chunk = await stream.read(READ_CHUNK)
                    if not chunk:
                        break
                    parts = (pending + chunk).split(b"\n")
                    pending = parts.pop()
                    if len(pending) > MAX_LINE:
                        parts.append(pending)
                        pending = b""
                    await self._emit(logfh, self._lines(parts))
            finally:
                tail = self._lines([pending]) if pending else []
                out = [o for line in tail for o in self._feed(line)]
                out += self.console_filter.close()
                self.result.console.extend(out)
                await self._write_out(logfh, out)

    @staticmethod
    def _lines(parts: list[bytes]) -> list[str]:
        return [p.decode(errors="replace").rstrip("\r") for p in parts]

    def _feed(self, line: str) -> list[str]:
        m = RESULT_RE.search(line)
        if m:
            self.result.rc = int(m.group(1))
        out = self.console_filter.feed(line)
        if self.console_filter.cap.truncated:
            self.result.console_truncated = True
            if line not in out and _ESSENTIAL.match(line):
                self.result.console.append(line)  # for the summary; not shown or logged
        return out

    async def _emit(self, logfh: Any, lines: list[str]) -> None:
        out = [o for line in lines for o in self._feed(line)]
        self.result.console.extend(out)
        await self._write_out(logfh, out)

    async def _write_out(self, logfh: Any, out: list[str]) -> None:
        if not out:
            return
        text = "\n".join(out) + "\n"
        if self.echo:
            sys.stdout.write(text)
            sys.stdout.flush()
        await logfh.write(text)


async def _run_with_signals(boot: Boot) -> BootResult:
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, _on_stop_signal, boot, sig)
    try:
        return await boot.run()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def _on_stop_signal(boot: Boot, sig: int) -> None:
    first = boot._stop_signal is None
    print(f"qemu-panthor: {signal.Signals(sig).name}: "
          + ("stopping QEMU and the backend" if first else "killing QEMU and the backend"),
          file=sys.stderr, flush=True)
    boot.request_stop(sig)


class _Terminated(Exception):
    """SIGTERM/SIGHUP during set-up (before the run's own handlers)."""


def _raise_terminated(signo: int, frame: object) -> None:
    raise _Terminated(signo)


def boot_main(args: argparse.Namespace) -> int:
    # Stop signals work from the start, even when SIGINT came in ignored (a background job
    # of a non-interactive shell): during set-up they unwind, during the run they stop it.
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, _raise_terminated)
    try:
        t0 = time.monotonic()
        # IGT's suite runs where Debian builds it (x86_64) unless --arch says otherwise
        # a userland suite runs where Debian builds it (IGT: x86_64) unless --arch says
        arch = args.arch or suites.suite_arch(args.run)
        plan = suites.prepare(args, arch)
        late = plan.late_modules() if plan else []
        # a kernel line, a config built here, or a kernel tree's PATH; on the guest arch
        images = boot_images(args.kernel, arch)
        setup_s = time.monotonic() - t0
        boot = Boot(images, gpu=args.gpu, run=args.run, qmp=args.qmp, trace=args.trace,
                    timeout=args.timeout, append=args.append, with_gpu=not args.no_gpu,
                    keep=args.keep, interactive=args.run == "shell",
                    backend_socket=Path(args.backend_socket) if args.backend_socket else None,
                    coherent=args.coherent,
                    shares=plan.shares() if plan else None,
                    extra_files=plan.guest_files() if plan else None,
                    late_modules=late, display=bool(late),
                    keep_logs=plan is not None,
                    timeline=Path(args.timeline).resolve() if args.timeline else None,
                    suite=args.suite)
        try:
            result = asyncio.run(_run_with_signals(boot))
        except OSError as e:
            raise UserError(f"boot failed: {e}") from None
    except _Terminated as e:
        print(f"qemu-panthor: {signal.Signals(e.args[0]).name} during set-up", file=sys.stderr)
        return 128 + int(e.args[0])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    result.setup_s = setup_s
    return report(result, args, suite=plan)


__all__ = ["EXIT_BACKEND", "EXIT_NO_RESULT", "EXIT_TIMEOUT", "Boot", "BootResult", "boot_main"]

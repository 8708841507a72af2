"""``qemu-panthor boot``: start the backend and QEMU, stream the guest console, power off.

The backend runs as its own process (``qemu-panthor serve --fd N``) on a listening socket
that this launcher creates first, so QEMU can never dial before the server listens. QEMU is
driven only through qemu.qmp: it dials our QMP server at start, we confirm the GPU with
``query-pci`` and end it with ``quit`` when it does not power off by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiofiles
from qemu.qmp import QMPClient

from ..errors import UserError
from ..setup import recipes
from ..setup.initramfs import InitramfsSpec, build_initramfs
from ..setup.pipeline import Images, ensure_images
from .dtb import build_boot_dtb
from .ktap import parse_ktap
from .qemu import QemuConfig, machine_argv, qemu_argv

log = logging.getLogger(__name__)

PCI_VENDOR_ARM = 0x13B5
RESULT_RE = re.compile(r"@qp result rc=(\d+)")
EXIT_TIMEOUT = 124
EXIT_NO_RESULT = 3


@dataclass
class BootResult:
    rc: int | None  # the guest's result, None if it never reported one
    console: list[str] = field(default_factory=list)
    qemu_rc: int | None = None
    setup_s: float = 0.0
    boot_s: float = 0.0
    run_dir: Path | None = None
    pci: list[dict] = field(default_factory=list)


def _firmware_files(gpu: str) -> dict[str, bytes]:
    """Our firmware image, at the path panthor requests for this GPU's architecture."""
    from ..csf.fwimage import build_image
    from ..gpu.models import MODELS

    model = MODELS[gpu]
    return {model.firmware_path: build_image(model=model)}


def gpu_expectations(gpu: str) -> bytes:
    """What the in-guest selftests must find (KEY=VALUE lines): the GPU model's identity."""
    from ..gpu.models import MODELS

    m = MODELS[gpu]
    values = {
        "GPU_MODEL": m.key, "GPU_NAME": m.model_name, "GPU_ID": m.gpu_id,
        "GPU_REV": m.gpu_revid, "CSF_ID": m.csf_id, "L2_FEATURES": m.l2_features,
        "TILER_FEATURES": m.tiler_features, "MEM_FEATURES": m.mem_features,
        "MMU_FEATURES": m.mmu_features, "THREAD_FEATURES": m.thread_features,
        "MAX_THREADS": m.thread_max_threads, "THREAD_MAX_WORKGROUP_SIZE":
        m.thread_max_workgroup_size, "THREAD_MAX_BARRIER_SIZE": m.thread_max_barrier_size,
        "COHERENCY_FEATURES": m.coherency_features, "AS_PRESENT": m.as_present,
        "SHADER_PRESENT": m.shader_present, "L2_PRESENT": m.l2_present,
        "TILER_PRESENT": m.tiler_present, "CORE_FEATURES": m.core_features,
        "TEXTURE_FEATURES0": m.texture_features[0], "CSG_COUNT": m.csg_count,
        "CS_PER_CSG": m.cs_per_csg, "CS_REG_COUNT": m.cs_reg_count,
        "SCOREBOARDS": m.scoreboards, "TIMESTAMP_HZ": m.timestamp_hz,
    }
    lines = [f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}" for k, v in values.items()]
    return ("\n".join(lines) + "\n").encode()


def guest_files(images: Images, gpu: str) -> dict[str, tuple[bytes, int]]:
    """The selftest suite (the built C binary, else the shell probe) and its expectations."""
    files = {"etc/qp/gpu.env": (gpu_expectations(gpu), 0o644)}
    st = images.selftests or recipes.GUEST_DIR / "selftests" / "qp-selftests"
    if st.is_file():
        files["bin/qp-selftests"] = (st.read_bytes(), 0o755)
    return files


async def _write(path: Path, data: bytes) -> None:
    async with aiofiles.open(path, "wb") as fh:
        await fh.write(data)


class Boot:
    def __init__(self, images: Images, *, gpu: str, run: str, qmp: str | None, trace: bool,
                 timeout: float, append: str, with_gpu: bool = True, keep: bool = False,
                 echo: bool = True, interactive: bool = False) -> None:
        self.images = images
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
        self.run_dir = Path(tempfile.mkdtemp(prefix="qemu-panthor-run-"))
        self.result = BootResult(rc=None, run_dir=self.run_dir)
        self._backend: asyncio.subprocess.Process | None = None
        self._qemu: asyncio.subprocess.Process | None = None

    async def _start_backend(self) -> Path:
        sock_path = self.run_dir / "gpu.sock"
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(str(sock_path))
        lsock.listen(1)
        argv = [sys.executable, "-m", "qemu_panthor", "serve", "--fd", str(lsock.fileno()),
                "--gpu", self.gpu]
        if self.qmp_path:
            argv += ["--qmp", self.qmp_path]
        if self.trace:
            argv += ["--trace"]
        logf = open(self.run_dir / "backend.log", "wb")
        try:
            self._backend = await asyncio.create_subprocess_exec(
                *argv, pass_fds=[lsock.fileno()], stdin=asyncio.subprocess.DEVNULL,
                stdout=logf, stderr=logf,
            )
        finally:
            logf.close()
            lsock.close()  # the child holds it now
        return sock_path

    async def _console(self, stream: asyncio.StreamReader) -> None:
        async with aiofiles.open(self.run_dir / "console.log", "w") as logfh:
            while True:
                raw = await stream.readline()
                if not raw:
                    break
                line = raw.decode(errors="replace").rstrip("\r\n")
                self.result.console.append(line)
                if self.echo:
                    print(line, flush=True)
                await logfh.write(line + "\n")
                m = RESULT_RE.search(line)
                if m:
                    self.result.rc = int(m.group(1))

    async def run(self) -> BootResult:
        t0 = time.monotonic()
        model_fw = _firmware_files(self.gpu)
        spec = InitramfsSpec(
            modules_dir=self.images.modules_dir, busybox=self.images.busybox,
            init_script=recipes.GUEST_DIR / "init", glue_ko=self.images.glue_ko,
            firmware=model_fw, extra_files=guest_files(self.images, self.gpu),
        )
        initrd = self.run_dir / "initramfs.cpio"
        await _write(initrd, await asyncio.to_thread(build_initramfs, spec))
        gpu_sock = await self._start_backend() if self.with_gpu else None
        qmp_sock = self.run_dir / "qmp.sock"
        append = f"console=ttyAMA0 quiet panic=-1 qp.run={self.run_mode} qp.gpu={self.gpu}"
        cfg = QemuConfig(kernel=self.images.kernel_image, initrd=initrd,
                         append=f"{append} {self.append}".strip(), qmp_socket=qmp_sock,
                         gpu_socket=gpu_sock, interactive=self.interactive)
        if recipes.kernel_line(self.images.line).boot_dtb_nodes and self.with_gpu:
            from ..gpu.models import MODELS

            cfg.dtb = await build_boot_dtb(
                self.images.qemu, machine_argv(self.images.qemu, cfg), self.run_dir / "boot.dtb",
                coherent=bool(MODELS[self.gpu].coherency_features & 1),
            )
        argv = qemu_argv(self.images.qemu, cfg)
        async with aiofiles.open(self.run_dir / "qemu.cmdline", "w") as fh:
            await fh.write(" ".join(argv) + "\n")
        qmp = QMPClient("qemu-panthor-launcher")
        await qmp.start_server(str(qmp_sock))
        try:
            self._qemu = await asyncio.create_subprocess_exec(
                *argv,
                stdin=None if self.interactive else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            assert self._qemu.stdout is not None
            console = asyncio.create_task(self._console(self._qemu.stdout))
            accept = asyncio.create_task(qmp.accept())
            done, _ = await asyncio.wait({accept, asyncio.ensure_future(self._qemu.wait())},
                                         timeout=60, return_when=asyncio.FIRST_COMPLETED)
            if accept not in done or accept.exception() is not None:
                accept.cancel()
                with contextlib.suppress(BaseException):
                    await accept
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._qemu.wait(), 10)
                await console
                tail = "\n".join(self.result.console[-10:])
                raise UserError(f"QEMU did not start (exit {self._qemu.returncode}):\n{tail}"
                                + self._backend_tail())
            if self.with_gpu:
                await self._check_pci(qmp)
            try:
                await asyncio.wait_for(self._qemu.wait(), timeout=self.timeout)
            except TimeoutError:
                print(f"qemu-panthor: guest did not power off within {self.timeout:.0f} s; "
                      "quitting QEMU", file=sys.stderr)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(qmp.execute("quit"), 5)
                try:
                    await asyncio.wait_for(self._qemu.wait(), 10)
                except TimeoutError:
                    self._qemu.kill()
                    await self._qemu.wait()
                self.result.rc = EXIT_TIMEOUT if self.result.rc is None else self.result.rc
            await console
            self.result.qemu_rc = self._qemu.returncode
        finally:
            with contextlib.suppress(Exception):
                await qmp.disconnect()
            if self._qemu is not None and self._qemu.returncode is None:
                self._qemu.kill()
                await self._qemu.wait()
            await self._stop_backend()
            self.result.boot_s = time.monotonic() - t0
            if not self.keep:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        return self.result

    def _backend_tail(self) -> str:
        try:
            lines = (self.run_dir / "backend.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return ("\nbackend log:\n" + "\n".join(lines[-10:])) if lines else ""

    async def _check_pci(self, qmp: QMPClient) -> None:
        buses = await qmp.execute("query-pci")
        devices = [d for bus in buses for d in bus.get("devices", [])]  # type: ignore[union-attr]
        self.result.pci = devices
        if not any(d.get("id", {}).get("vendor") == PCI_VENDOR_ARM for d in devices):
            raise UserError("QEMU realized no GPU function (query-pci lists no Arm device)")

    async def _stop_backend(self) -> None:
        b = self._backend
        if b is None or b.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            b.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(b.wait(), 10)
        except TimeoutError:
            b.kill()
            await b.wait()


def boot_main(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    images = ensure_images(args.kernel)
    setup_s = time.monotonic() - t0
    boot = Boot(images, gpu=args.gpu, run=args.run, qmp=args.qmp, trace=args.trace,
                timeout=args.timeout, append=args.append, with_gpu=not args.no_gpu,
                keep=args.keep, interactive=args.run == "shell")
    try:
        result = asyncio.run(boot.run())
    except OSError as e:
        raise UserError(f"boot failed: {e}") from None
    result.setup_s = setup_s
    print(f"qemu-panthor: set-up {setup_s:.1f} s, boot to power-off {result.boot_s:.1f} s"
          + (f", run dir kept at {result.run_dir}" if args.keep else ""), file=sys.stderr)
    if args.run == "selftests":
        summary = parse_ktap(result.console)
        for name in summary.failed:
            print(f"qemu-panthor: FAILED {name}", file=sys.stderr)
        for name, why in summary.skipped:
            print(f"qemu-panthor: skipped {name}: {why}", file=sys.stderr)
        print(f"selftests: {summary.line()}")
        if summary.failed and result.rc == 0:
            result.rc = 1
    if result.rc is None:
        print("qemu-panthor: the guest ended without reporting a result "
              f"(QEMU exit {result.qemu_rc})", file=sys.stderr)
        return EXIT_NO_RESULT
    return result.rc


__all__ = ["Boot", "BootResult", "boot_main"]

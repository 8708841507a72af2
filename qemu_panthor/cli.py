"""Command-line entry point: ``qemu-panthor serve|boot|setup|kernel|fw-info|qmp``.

Each subcommand lives in the module that owns it; this file only parses arguments and turns
:class:`~qemu_panthor.errors.UserError` into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import select
import signal
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UserError

DEFAULT_GPU = "g610"
DEFAULT_KERNEL = "7.2"
BOOT_TIMEOUT_S = 600.0


def _gpu_models() -> list[str]:
    from .gpu.models import MODELS  # here, not at the top: keeps `--help` and `setup` light

    return sorted(MODELS)


def _scale(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= v <= 1e6:  # NaN fails the comparison too
        raise argparse.ArgumentTypeError(f"{value}: a scale from 0 to 1e6")
    return v


def _seconds(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not (v > 0 and math.isfinite(v)):  # NaN fails the comparison too
        raise argparse.ArgumentTypeError(f"{value}: a number of seconds above 0")
    return v


def _new_file(option: str, path: str, kind: str) -> None:
    """``path`` can be created (its directory exists and is writable) and is not a directory:
    checked before anything starts, so a typo does not end a run after QEMU is up."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{option} {path}: is a directory, not a {kind}")
    parent = p.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: no such directory {str(parent)!r}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: cannot create a {kind} in {str(parent)!r} "
                        "(permission denied)")


def _check_boot_args(args: argparse.Namespace) -> None:
    """Arguments whose mistakes would otherwise show only once QEMU runs."""
    if args.suite != "default" and args.run != "selftests":
        raise UserError(f"--suite {args.suite}: only with --run selftests")
    if args.timeline:
        _new_file("--timeline", args.timeline, "file")
    if args.qmp:
        _new_file("--qmp", args.qmp, "socket")
    if args.backend_socket:
        try:
            mode = os.stat(args.backend_socket).st_mode
        except OSError as e:
            raise UserError(f"--backend-socket {args.backend_socket}: {e.strerror} (start "
                            "`qemu-panthor serve --socket-path PATH` first)") from None
        if not stat.S_ISSOCK(mode):
            raise UserError(f"--backend-socket {args.backend_socket}: not a socket")


def _arches() -> list[str]:
    from .setup.recipes import guest_arches

    return sorted(guest_arches())


def build_parser() -> argparse.ArgumentParser:
    from .launcher.igt import RUN_TIMEOUT_S, SUBTEST_TIMEOUT_S

    p = argparse.ArgumentParser(
        prog="qemu-panthor",
        description="Arm Mali CSF GPU (Mali-G610) device model for QEMU's vfio-user-pci.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("serve", help="run the device backend (vfio-user server)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--socket-path", metavar="PATH", help="UNIX socket to listen on")
    where.add_argument("--fd", type=int, metavar="N", help="inherited listening socket fd")
    s.add_argument("--gpu", default=DEFAULT_GPU, metavar="MODEL", help="GPU model (default g610)")
    s.add_argument("--qmp", metavar="PATH", help="also serve QMP on this UNIX socket")
    s.add_argument("--trace", action="store_true", help="log every register access and IRQ")
    s.add_argument("--timeline", metavar="FILE",
                   help="write a Perfetto trace of the device's events to FILE (docs/perf.md)")
    s.add_argument("--work-scale", type=_scale, default=1.0, metavar="X",
                   help="scale of the work-item cost model (RUN_* durations; 0: complete at "
                        "once; docs/command-streams.md)")
    s.add_argument("--once", action="store_true",
                   help="exit when the first client disconnects (default: serve the next one)")
    s.add_argument("--parent-pid", type=int, metavar="PID",
                   help="exit (SIGTERM) when this parent process dies (the launcher's pid)")
    s.add_argument(
        "--print-capabilities", action="store_true", help="print vfio-user backend JSON and exit"
    )

    b = sub.add_parser("boot", help="boot a guest on the emulated GPU and run the selftests")
    b.add_argument("--kernel", default=None, metavar="VERSION|CONFIG|PATH",
                   help="kernel line: 7.2 (sid, default on arm64) or 6.12 (trixie); a kernel "
                        "built here from a config (default, debug: built once, cached; the "
                        "only kind on x86_64); or a kernel tree: a build directory or an "
                        "installed layout (docs/kernel-dev.md)")
    b.add_argument("--arch", choices=_arches(), default=None,
                   help="guest architecture: arm64 (virt; the default) or x86_64 (q35, a "
                        "COMPILE_TEST panthor kernel; the default for --run igt)")
    b.add_argument("--gpu", default=DEFAULT_GPU, metavar="MODEL", help="GPU model (default g610)")
    b.add_argument("--run", default="selftests",
                   choices=["selftests", "igt", "vulkaninfo", "vkmark", "shell", "none"],
                   help="what the guest does after loading the driver: the selftests "
                        "(default), IGT's panthor tests, vulkaninfo or vkmark's scenes "
                        "through panvk (docs/igt.md), a shell, nothing")
    b.add_argument("--suite", default="default", choices=["default", "long", "all"],
                   help="--run selftests: the default suite, the long one (tests that wait "
                        "on driver or firmware timers: resets, job and progress timeouts; "
                        "~40 s) or all (docs/selftests.md)")
    b.add_argument("--igt-tests", default="", metavar="REGEX",
                   help="--run igt: only subtests whose name (panthor/panthor_vm@vm_bind) "
                        "matches this extended regex")
    b.add_argument("--igt-expectations", metavar="DIR",
                   help="--run igt: drm-ci style *-fails.txt, *-flakes.txt, *-skips.txt")
    b.add_argument("--igt-build", metavar="DIR",
                   help="--run igt: run the panthor_* programs of this IGT build (for the "
                        "guest's architecture) instead of Debian's")
    b.add_argument("--igt-timeout", type=int, default=SUBTEST_TIMEOUT_S, metavar="S",
                   help="--run igt: kill a subtest after S seconds (reported as timeout)")
    b.add_argument("--vkmark-scenes", metavar="LIST",
                   help="--run vkmark: these scenes (vkmark -b options, comma-separated, "
                        "e.g. cube:duration=2,clear) instead of vkmark's default list")
    b.add_argument("--qmp", metavar="PATH", help="serve the backend's QMP on this socket")
    b.add_argument("--keep", action="store_true", help="keep the run directory (logs, sockets)")
    b.add_argument("--trace", action="store_true", help="backend register/IRQ trace in the log")
    b.add_argument("--timeline", metavar="FILE",
                   help="write a Perfetto trace of the device's events to FILE (open it in "
                        "the Perfetto UI; the selftests mark their submits; docs/perf.md)")
    b.add_argument("--timeout", type=_seconds, default=None, metavar="S",
                   help=f"give up on the guest after S seconds (default {BOOT_TIMEOUT_S:.0f}; "
                        f"{RUN_TIMEOUT_S} for --run igt)")
    b.add_argument("--append", default="", metavar="ARGS", help="extra kernel command line")
    b.add_argument("--coherent", action="store_true",
                   help="mark the GPU dma-coherent (default: not, as on RK3588, so panthor's "
                        "cache-maintenance paths run)")
    b.add_argument("--no-gpu", action="store_true",
                   help="boot without the GPU device (to compare against a plain guest)")
    b.add_argument("--backend-socket", metavar="PATH",
                   help="use a running `serve --socket-path PATH` instead of starting a backend")

    st = sub.add_parser("setup", help="build/download the tool root and guest images (cached)")
    st.add_argument("--kernel", default=DEFAULT_KERNEL, metavar="VERSION")
    st.add_argument("--gpu", default=DEFAULT_GPU, metavar="MODEL")
    st.add_argument("--refresh", action="store_true",
                    help="re-resolve Debian package versions even if the cache has them")

    f = sub.add_parser("fw-info", help="validate and describe a mali_csffw.bin image")
    f.add_argument("file", metavar="FILE")

    k = sub.add_parser("kernel", help="build a guest kernel (cached) for boot --kernel PATH")
    ksub = k.add_subparsers(dest="kernel_command", metavar="ACTION")
    ksub.required = True
    kb = ksub.add_parser("build", help="build a guest kernel (arm64 virt, or --arch x86_64 q35) "
                         "into the cache; prints the directory to pass to boot --kernel")
    kb.add_argument("--arch", choices=_arches(), help="guest architecture (default: arm64)")
    kb.add_argument("--source", metavar="DIR",
                    help="kernel source tree (default: Debian's linux-source of the default "
                         "kernel line)")
    kb.add_argument("--config", nargs="+", metavar="CONFIG",
                    help="default (trimmed), debug (KASAN, lockdep, kmemleak, ...), and/or "
                         "fragment files merged over the trimmed base (default: default)")
    kb.add_argument("--patch", nargs="+", metavar="FILE", help="patches applied (-p1) in order")
    kb.add_argument("--jobs", "-j", type=int, metavar="N", help="parallel jobs (default: cores)")
    km = ksub.add_parser("make", help="make for the guest architecture (arm64 with the kbuild "
                         "root's cross compiler by default) on host trees (e.g. -C ~/linux "
                         "O=~/out Image modules)")
    km.add_argument("--arch", choices=_arches(), help="guest architecture (default: arm64)")
    km.add_argument("make_args", nargs="*", metavar="ARGS",
                    help="make's arguments: everything after `make` (ARCH and CROSS_COMPILE "
                         "are set)")

    q = sub.add_parser("qmp", help="send one QMP command to a running backend")
    q.add_argument("--socket", metavar="PATH", help="the backend's QMP socket")
    q.add_argument("qmp_command", metavar="COMMAND")
    q.add_argument("args", nargs="*", metavar="key=value")
    return p


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "boot" and args.timeout is None:
        from .launcher.igt import RUN_TIMEOUT_S

        args.timeout = float(RUN_TIMEOUT_S) if args.run == "igt" else BOOT_TIMEOUT_S
    if args.command in ("serve", "boot", "setup") and args.gpu not in _gpu_models():
        raise UserError(
            f"unknown GPU model {args.gpu!r}; choose one of: {', '.join(_gpu_models())}"
        )
    if args.command == "serve":
        from .backend import serve_main

        return serve_main(args)
    if args.command == "boot":
        from .launcher.boot import boot_main

        _check_boot_args(args)

        return boot_main(args)
    if args.command == "setup":
        from .setup.pipeline import setup_main

        return setup_main(args)
    if args.command == "fw-info":
        from .csf.fwimage import fw_info_main

        return fw_info_main(args)
    if args.command == "qmp":
        from .qmp.client import qmp_main

        return qmp_main(args)
    if args.command == "kernel":
        from .setup.kernel import kernel_main

        return kernel_main(args)
    raise UserError(f"unknown command {args.command!r}")


def _split_make_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``kernel make ARGS``: everything after ``make`` goes to make untouched (argparse would
    read ``-C`` or ``-j`` as options of its own)."""
    for i in range(len(argv) - 1):
        if argv[i] == "kernel" and argv[i + 1] == "make":
            return argv[: i + 2], argv[i + 2 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    own, make_args = _split_make_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    if args.command == "kernel" and args.kernel_command == "make":
        args.make_args = make_args
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except UserError as e:
        print(f"qemu-panthor: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("qemu-panthor: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's peer went away: not ours to hide
        return 128 + signal.SIGPIPE  # `qemu-panthor qmp ... | head`: quiet, as a shell tool is


def _stdout_closed() -> bool:
    """Whether the reader of our standard output has gone (the pipe is broken); if so, point
    stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        fd = sys.stdout.fileno()
    except (ValueError, OSError):
        return False
    p = select.poll()
    p.register(fd, 0)  # POLLERR: a pipe whose reader closed
    if not any(ev & select.POLLERR for _, ev in p.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    return True


if __name__ == "__main__":
    sys.exit(main())

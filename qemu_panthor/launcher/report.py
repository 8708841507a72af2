"""What ``qemu-panthor boot`` prints when a run has ended, and its exit code
(docs/launcher.md has the table)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .kernel_reports import active_debug, apply_reports, check_console
from .ktap import KtapSummary, parse_ktap
from .procs import describe_status

if TYPE_CHECKING:
    from .boot import BootResult
    from .suites import GuestSuite


def report(result: BootResult, args: argparse.Namespace, suite: GuestSuite | None = None) -> int:
    """The summary lines after a run, and the exit code."""
    err = sys.stderr
    code = result.exit_code
    summary = parse_ktap(result.console) if args.run == "selftests" else None
    where = f"{result.run_dir} (console.log, backend.log)"
    if result.outcome == "backend-died":
        print(f"qemu-panthor: {result.fault}; QEMU stopped "
              f"({describe_status(result.qemu_rc)}); logs in {where}", file=err)
        tail = _tail_of(result.run_dir, "backend.log")
        print("qemu-panthor: backend.log " + ("ends with:" if tail else "is empty"), file=err)
        for line in tail:
            print(f"  {line}", file=err)
    elif result.signal is not None:
        parts = [f"QEMU (pid {result.qemu_pid}) {describe_status(result.qemu_rc)}"]
        if result.backend_pid is not None:
            parts.append(f"backend (pid {result.backend_pid}) "
                         f"{describe_status(result.backend_rc)}")
        parts.append(f"{len(result.console)} console lines")
        if summary is not None:
            parts.append(f"selftests so far: {_progress(summary)}")
        print(f"qemu-panthor: interrupted by {signal.Signals(result.signal).name} after "
              f"{result.boot_s:.1f} s: " + ", ".join(parts) + f"; logs in {where}", file=err)
        return code
    elif result.fault is not None:
        print(f"qemu-panthor: {result.fault}; logs in {where}", file=err)
    if result.console_truncated:
        print("qemu-panthor: the console exceeded its cap; console.log is truncated", file=err)
    print(f"qemu-panthor: set-up {result.setup_s:.1f} s, boot to power-off {result.boot_s:.1f} s"
          + (f", run dir kept at {result.run_dir}" if result.kept and result.fault is None
             else ""), file=err)
    kernel_failing = _kernel_reports(result, summary)
    if suite is not None and result.run_dir is not None:
        # the suite judges its own results (expectations may excuse a failure the guest
        # counted); the kernel's reports fail the run whatever the suite says
        code = suite.report(result, code)
        return 1 if kernel_failing and code == 0 else code
    if kernel_failing and code == 0:
        code = 1
    if summary is not None and result.outcome != "backend-died":
        for name in summary.failed:
            print(f"qemu-panthor: FAILED {name}", file=err)
        for name, why in summary.skipped:
            print(f"qemu-panthor: skipped {name}: {why}", file=err)
        print(f"selftests: {summary.line()}")
        if summary.failed and code == 0:
            code = 1
    return code


def _kernel_reports(result: BootResult, summary: KtapSummary | None) -> bool:
    """The kernel's own reports (KASAN, lockdep, WARN, ...) fail the test they appeared in,
    or the run (docs/kernel-dev.md): printed; True if any fails the run."""
    err = sys.stderr
    active = active_debug(result.console)
    if active:
        print(f"qemu-panthor: kernel bug finders active: {', '.join(active)}", file=err)
    verdict = check_console(result.console)
    for line in verdict.lines():
        print(f"qemu-panthor: {line}", file=err)
    if verdict.failing and summary is not None:
        apply_reports(summary, verdict)
    return bool(verdict.failing)


def _progress(s: KtapSummary) -> str:
    """Results so far (the parser counts planned tests without a result as failed)."""
    failed = [n for n in s.failed if not n.startswith("(missing result")]
    planned = f" of {s.planned}" if s.planned is not None else ""
    done = len(s.passed) + len(failed) + len(s.skipped)
    return (f"{done}{planned} done ({len(s.passed)} passed, {len(failed)} failed, "
            f"{len(s.skipped)} skipped)")


def _tail_of(run_dir: Path | None, name: str, n: int = 5) -> list[str]:
    if run_dir is None:
        return []
    try:
        with open(run_dir / name, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16 * 1024))
            return fh.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []

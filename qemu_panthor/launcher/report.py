"""What ``qemu-panthor boot`` prints when a run has ended, and its exit code
(docs/launcher.md has the table)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .igt import IgtPlan, judge, parse_console, summary_line, uname_of, write_results
from .kernel_reports import active_debug, apply_reports, check_console
from .ktap import KtapSummary, parse_ktap
from .procs import describe_status

if TYPE_CHECKING:
    from .boot import BootResult


def report(result: BootResult, args: argparse.Namespace, igt: IgtPlan | None = None) -> int:
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
    code = _kernel_reports(result, summary, code)
    if summary is not None and result.outcome != "backend-died":
        for name in summary.failed:
            print(f"qemu-panthor: FAILED {name}", file=err)
        for name, why in summary.skipped:
            print(f"qemu-panthor: skipped {name}: {why}", file=err)
        print(f"selftests: {summary.line()}")
        if summary.failed and code == 0:
            code = 1
    if igt is not None and result.run_dir is not None and result.signal is None:
        code = _igt_report(result, igt, code)
    return code


def _igt_report(result: BootResult, plan: IgtPlan, code: int) -> int:
    """IGT's results: results.json, junit.xml and failures.csv in the run directory, the
    failing subtests and the summary line; the exit code as drm-ci would judge the run."""
    err = sys.stderr
    assert result.run_dir is not None
    runs = parse_console(result.console)
    verdicts = judge(runs, plan.expectations)
    files = write_results(result.run_dir, runs, verdicts, uname=uname_of(result.console),
                          start=time.time() - result.boot_s)
    for v in verdicts:
        if v.outcome in ("fail", "unexpected-improvement", "known-flake", "expected-fail"):
            print(f"qemu-panthor: igt {v.outcome} {v.name}: {v.result}", file=err)
    print(f"qemu-panthor: IGT results in {', '.join(str(f) for f in files)}", file=err)
    print(summary_line(verdicts))
    if any(v.fails_run for v in verdicts):
        return code or 1
    if not runs:
        print("qemu-panthor: igt: no subtest ran", file=err)
        return code or 1
    # the guest's own rc counts failures the expectations may excuse: judge by the verdicts
    return 0 if code == 1 and result.rc == 1 else code


def _kernel_reports(result: BootResult, summary: KtapSummary | None, code: int) -> int:
    """The kernel's own reports (KASAN, lockdep, WARN, ...) fail the test they appeared in,
    or the run (docs/kernel-dev.md)."""
    err = sys.stderr
    active = active_debug(result.console)
    if active:
        print(f"qemu-panthor: kernel bug finders active: {', '.join(active)}", file=err)
    verdict = check_console(result.console)
    for line in verdict.lines():
        print(f"qemu-panthor: {line}", file=err)
    if verdict.failing:
        if summary is not None:
            apply_reports(summary, verdict)
        if code == 0:
            code = 1
    return code


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

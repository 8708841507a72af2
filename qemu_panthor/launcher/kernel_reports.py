"""Kernel reports on the guest console, turned into test results.

The kernel's bug finders report on the console: KASAN, lockdep (and RCU lockdep), WARN/BUG/
Oops, "sleeping function called from invalid context", DMA-API debug, debugobjects, hung
tasks, and kmemleak's findings (``/init`` scans after the suite and prints them). Each report
is found by its first line, keeps its first :data:`KEEP_LINES` lines (the summary shows the
first telling ones: not register dumps nor the reporting code's own frames), and is attributed to
the selftest that was running when it appeared (the next KTAP result), to the boot (before
the KTAP plan) or to the end (after the last result). A report that is not known harmless
fails that test, or the run.

Known harmless reports are listed in one reviewed place, ``images/kernel/known-reports.toml``
(a regular expression over a report's lines, and why it is harmless).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from ..errors import UserError
from ..setup.recipes import IMAGES_DIR
from .ktap import KtapSummary

KNOWN_FILE = IMAGES_DIR / "kernel" / "known-reports.toml"
KEEP_LINES = 60
SHOW_LINES = 6
BOOT = "(boot)"
END = "(after the suite)"

# The first line of a report (after the console prefixes are stripped): kind, pattern.
STARTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(p)) for kind, p in (
        ("KASAN", r"^BUG: KASAN: "),
        ("KFENCE", r"^BUG: KFENCE: "),
        ("atomic-sleep", r"^BUG: sleeping function called from invalid context"),
        ("atomic-sleep", r"^BUG: scheduling while atomic"),
        ("lockdep", r"^WARNING: (possible (circular|recursive) locking|inconsistent lock state|"
                    r"possible irq lock inversion|bad unlock balance|held lock freed|"
                    r"lock held when returning|Nested lock was not taken|"
                    r".*-safe -> .*-unsafe lock order|.*still has locks held)"),
        ("lockdep", r"^(BUG|INFO): (MAX_LOCKDEP_\w+ too low|key \S+ has not been registered|"
                    r"trying to register non-static key|lockdep)"),
        ("RCU", r"^WARNING: suspicious RCU usage"),
        ("RCU", r"^(rcu: )?INFO: rcu_\w+ (self-)?detected stall"),
        ("DMA-API", r"^DMA-API: "),
        ("debugobjects", r"^ODEBUG: "),
        ("UBSAN", r"^UBSAN: "),
        ("list", r"^list_\w+ corruption"),
        ("hung-task", r"^INFO: task .* blocked for more than"),
        ("lockup", r"^(watchdog: )?BUG: (soft lockup|workqueue lockup)"),
        ("Oops", r"^(Unable to handle kernel |Internal error: |BUG: unable to handle |"
                 r"BUG: kernel NULL pointer)"),
        ("BUG", r"^(kernel BUG at |BUG: )"),
        ("WARNING", r"^WARNING: CPU: \d+ PID: \d+ at "),
        ("WARNING", r"^WARNING: "),
        ("panic", r"^Kernel panic - not syncing"),
        ("kmemleak", r"^unreferenced object 0x[0-9a-f]+ \(size \d+\):"),
    )
)
# A WARN's own message comes before its "WARNING: CPU: ..." line (DMA-API, ODEBUG): that
# line belongs to the report the message opened.
_WARN_LINE = re.compile(r"^WARNING: CPU: \d+ PID: \d+ at ")
_ENDS = re.compile(r"^---\[ end (trace|Kernel panic)")
# Console prefixes: the /init echo of /dev/kmsg, printk timestamps and caller ids.
_PREFIX = re.compile(r"^(\[dmesg\] )?(\[\s*\d+\.\d+\]\s?)?(\[\s*[TC]\d+\]\s?)?")
# What the summary skips in a report: register dumps, banners, and the frames of the
# reporting machinery itself, so the lines shown reach the code that is at fault.
_NOISE = re.compile(
    r"^\s*$|^(CPU: \d+ |Tainted: |Hardware name: |Call trace:|Modules linked in:|pstate: |"
    r"pc : |lr : |sp : |x\d+ *: |Mem abort info:|Data abort info:|\s+(ESR|EC|SET|EA|FnV|S1PTW|"
    r"ISV|ISS|CM|WnR|TnD|TagAccess|GCS|Xs|FSC) =|user pgtable:|\*\* replaying|\[0+\] pgd=|"
    r"Code: |Workqueue: |\s*<TASK>|\s*</TASK>|-+$|=+$)"
    r"|^\s*(show_stack|dump_stack\w*|print_report|\w*kasan_\w+|__warn\w*|report_bug|"
    r"warn_slowpath\w*|bug_brk_handler|call_break_hook|brk_handler|do_debug_exception|el1_dbg|"
    r"el1h_64_sync\w*|el1_brk64|print_\w+|debug_print_object|__might_resched|__might_sleep|"
    r"lockdep_rcu_suspicious|err_printk|check_unmap|check_sync|debug_dma_\w+)\+0x"
)
# Lines of the guest's user space that never belong to a report.
_USER = re.compile(r"^(ok |not ok |1\.\.\d|KTAP version|@qp |# )")
_RESULT = re.compile(r"^(ok|not ok)\s+\d+\s+(?:-\s*)?(\S+)")


@dataclass
class Report:
    kind: str
    lines: list[str]
    test: str  # a selftest's name, BOOT or END
    echoed: bool = False  # seen through /init's [dmesg] echo, not printed by the kernel
    known: str | None = None  # why it is harmless (known-reports.toml), if it is

    @property
    def title(self) -> str:
        return self.lines[0]

    def essential(self, n: int = SHOW_LINES) -> list[str]:
        """The first ``n`` lines after the title that say something: no register dumps,
        banners or frames of the reporting code (the first driver frames, mostly)."""
        return [x for x in self.lines[1:] if not _NOISE.match(x)][:n]


@dataclass(frozen=True)
class KnownReport:
    pattern: re.Pattern[str]
    why: str


@cache
def known_reports(path: Path = KNOWN_FILE) -> tuple[KnownReport, ...]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    out = []
    for i, entry in enumerate(data.get("known", [])):
        try:
            out.append(KnownReport(re.compile(entry["match"]), str(entry["why"])))
        except (KeyError, re.error) as e:
            raise UserError(f"{path}: entry {i + 1} is invalid ({e})") from None
    return tuple(out)


def _strip(line: str) -> tuple[str, bool]:
    m = _PREFIX.match(line)
    assert m is not None
    return line[m.end():], bool(m.group(1))


def _start(text: str) -> str | None:
    for kind, pattern in STARTS:
        if pattern.match(text):
            return kind
    return None


def find_reports(console: list[str], known: tuple[KnownReport, ...] | None = None) -> list[Report]:
    """Every kernel report on the console, in order, with the test it belongs to."""
    reports: list[Report] = []
    pending: list[Report] = []  # reports waiting for the result line of their test
    # The open report of each stream: the kernel's own console lines, and /init's echo of
    # /dev/kmsg, which interleave.
    current: dict[bool, Report | None] = {False: None, True: None}
    started = False  # the KTAP plan has been printed
    ended_tests = False
    last_result: str | None = None
    for raw in console:
        text, echoed = _strip(raw)
        if not echoed and _USER.match(text):
            if text.startswith("1..") and not started:
                started = True
            m = _RESULT.match(text)
            if m and started:
                last_result = m.group(2)
                for r in pending:
                    r.test = m.group(2)
                pending.clear()
            if text.startswith("@qp result") or text.startswith("@qp status phase=kmemleak"):
                ended_tests = True
            continue
        open_ = current[echoed]
        kind = _start(text)
        if kind is not None and open_ is not None and _continues(open_, kind, text):
            kind = None
        if kind is not None:
            open_ = current[echoed] = Report(kind, [text], BOOT, echoed)
            reports.append(open_)
            if not started:
                open_.test = BOOT
            elif ended_tests:
                open_.test = END
            else:
                pending.append(open_)
            continue
        if open_ is not None:
            if _ENDS.match(text):
                current[echoed] = None
            elif len(open_.lines) < KEEP_LINES and text.strip():
                open_.lines.append(text)
    for r in pending:  # the suite never reported its result: the run ended in that test
        r.test = END if last_result is None or ended_tests else f"(after {last_result})"
    reports = _drop_echo_duplicates(reports)
    for r in reports:
        r.known = _known_why(r, known_reports() if known is None else known)
    return reports


def _continues(report: Report, kind: str, text: str) -> bool:
    """A report's first line that belongs to the open report instead: the WARN line under
    the message that opened it (DMA-API, ODEBUG, ...), or "Internal error: Oops" under the
    fault or BUG that caused it."""
    if _WARN_LINE.match(text) and len(report.lines) <= 3:
        return report.kind in ("DMA-API", "debugobjects", "list", "RCU")
    return kind == "Oops" and report.kind in ("Oops", "BUG", "list")


def _drop_echo_duplicates(reports: list[Report]) -> list[Report]:
    """/init echoes panthor/drm kernel lines as "[dmesg] ...": a report the kernel also
    printed itself is kept once."""
    direct = {r.title for r in reports if not r.echoed}
    return [r for r in reports if not r.echoed or r.title not in direct]


def _known_why(report: Report, known: tuple[KnownReport, ...]) -> str | None:
    text = "\n".join(report.lines)
    for k in known:
        if k.pattern.search(text):
            return k.why
    return None


@dataclass
class ReportVerdict:
    reports: list[Report] = field(default_factory=list)

    @property
    def failing(self) -> list[Report]:
        return [r for r in self.reports if r.known is None]

    @property
    def harmless(self) -> list[Report]:
        return [r for r in self.reports if r.known is not None]

    def lines(self, first: int = SHOW_LINES) -> list[str]:
        """What the launcher prints: every failing report with its first telling lines, one
        line per known harmless one."""
        out = []
        for r in self.failing:
            where = r.test if r.test.startswith("(") else f"in {r.test}"
            out.append(f"kernel report ({r.kind}) {where}: {r.title}")
            out.extend(f"    {line.strip()}" for line in r.essential(first))
        for r in self.harmless:
            out.append(f"known harmless kernel report ({r.kind}): {r.title} [{r.known}]")
        return out


def apply_reports(summary: KtapSummary, verdict: ReportVerdict) -> None:
    """A failing report fails the test it appeared in (or adds a failure for the boot or the
    end of the run)."""
    for r in verdict.failing:
        name = r.test if not r.test.startswith("(") else f"kernel report {r.test}"
        if name in summary.passed:
            summary.passed.remove(name)
        summary.skipped = [(n, why) for n, why in summary.skipped if n != name]
        if name not in summary.failed:
            summary.failed.append(name)


def check_console(console: list[str]) -> ReportVerdict:
    return ReportVerdict(find_reports(console))


ACTIVE = re.compile(r"@qp status debug=(\S+)")


def active_debug(console: list[str]) -> list[str]:
    """The bug finders the guest found active (``@qp status debug=kasan,lockdep,...``)."""
    for line in console:
        m = ACTIVE.search(line)
        if m:
            return [x for x in m.group(1).split(",") if x]
    return []


__all__ = ["BOOT", "END", "Report", "ReportVerdict", "active_debug", "apply_reports",
           "check_console", "find_reports", "known_reports"]

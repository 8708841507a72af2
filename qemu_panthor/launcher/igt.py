"""``boot --run igt``: IGT's tests of the GPU's driver (panthor, or panfrost for a Job Manager
GPU) in the guest, and their results in CI formats.

The guest side is ``guest/igt`` (one subtest per process, as IGT's runner runs them); it
reports KTAP with each subtest's stdout, stderr, kernel log and exit status as diagnostic
lines. Here those become:

- ``results.json`` in IGT runner's format (results_version 10: ``tests`` keyed
  ``igt@<binary>@<subtest>``, ``totals``, ``runtimes``, ``time_elapsed``);
- ``junit.xml`` (one testsuite per binary);
- the summary line ``igt: N passed, N failed, N skipped``, with expectations applied when
  ``--igt-expectations DIR`` gives drm-ci style lists (docs/igt.md).

Results follow IGT runner's rules (runner/resultgen.c): exit 0 pass, 77/79 skip, 112 abort,
a signal crash, killed at the time limit timeout, anything else fail; a pass whose kernel log
has a message at warning level or worse is dmesg-warn, such a fail dmesg-fail.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..setup.userland import Userland
from .guestfiles import USERLAND_TAG, userland_guest_files

if TYPE_CHECKING:
    from .boot import BootResult

BUILD_TAG = "qpbuild"
EM_X86_64 = 62  # ELF e_machine of the guest IGT runs in
SUBTEST_TIMEOUT_S = 120  # --igt-timeout: one subtest, then it is killed (timeout)
RUN_TIMEOUT_S = 3600  # boot --timeout for a whole IGT run unless given
DMESG_WARN_LEVEL = 4  # IGT runner's default: kernel messages at KERN_WARNING or worse

PASSED = ("pass", "warn", "dmesg-warn")
SKIPPED = ("skip", "notrun")
# drm-ci (deqp-runner) status names for the results IGT runner writes.
CI_STATUS = {"pass": "Pass", "warn": "Warn", "dmesg-warn": "Pass", "skip": "Skip",
             "notrun": "Skip", "fail": "Fail", "dmesg-fail": "Fail", "crash": "Crash",
             "timeout": "Timeout", "abort": "Crash", "incomplete": "Crash"}
CI_SUCCESS = ("Pass", "Skip", "Warn")
CI_STATUSES = frozenset(CI_STATUS.values())
# What Python's re accepts but POSIX extended regexes (busybox grep -E, which filters in the
# guest) do not: inline flags and groups, class escapes, lazy quantifiers.
_NOT_ERE = re.compile(r"\(\?|\\[dDwWsSbBAZ]|[*+?}]\?")


def check_ere(pattern: str, what: str) -> str:
    """``pattern`` if it means the same to Python's re and to POSIX ERE; else a clear error."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise UserError(f"{what}: {pattern!r} is not a regular expression ({e})") from None
    m = _NOT_ERE.search(pattern)
    if m:
        raise UserError(f"{what}: {pattern!r} uses {m.group(0)!r}, which POSIX extended "
                        "regexes (grep -E in the guest) do not have")
    return pattern


@dataclass
class IgtPlan:
    """What the guest needs for one IGT run."""

    userland: Userland
    build: Path | None = None
    driver: str = "panthor"  # whose tests: IGT's tests/<driver>/<driver>_* programs
    tests: str = ""  # extended regex over binary@subtest ("" = all)
    expectations: Expectations | None = None
    timeout_s: int = SUBTEST_TIMEOUT_S

    def shares(self) -> list[tuple[str, Path]]:
        out = [(USERLAND_TAG, self.userland.path)]
        if self.build is not None:
            out.append((BUILD_TAG, self.build))
        return out

    def guest_files(self) -> dict[str, tuple[bytes, int]]:
        skips = self.expectations.skips_regex() if self.expectations else ""
        env = {"IGT_PROGRAMS": " ".join(driver_programs(self.userland.programs, self.driver)),
               "IGT_DRIVER": self.driver,
               "IGT_BUILD": "1" if self.build is not None else "0",
               "IGT_TESTS": self.tests, "IGT_SKIPS": skips, "IGT_TIMEOUT": str(self.timeout_s)}
        text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
        return {"etc/qp/igt.env": (text.encode(), 0o644), **userland_guest_files("igt")}

    def late_modules(self) -> list[str]:
        """The display controller's driver, loaded after the GPU (images/initramfs.toml
        igt_late_modules; the machine then has its display, images/arches.toml): IGT's prime
        tests import its dumb buffers."""
        from ..setup import recipes

        return list(recipes.initramfs_recipe().get("igt_late_modules", []))

    def report(self, result: BootResult, code: int) -> int:
        """results.json, junit.xml and failures.csv in the run directory, the failing
        subtests and the summary line; the exit code as drm-ci would judge the run."""
        err = sys.stderr
        assert result.run_dir is not None
        runs = parse_console(result.console)
        verdicts = judge(runs, self.expectations)
        files = write_results(result.run_dir, runs, verdicts, uname=uname_of(result.console),
                              start=time.time() - result.boot_s)
        for v in verdicts:
            if v.outcome in ("fail", "unexpected-improvement", "known-flake", "expected-fail"):
                print(f"qemu-panthor: igt {v.outcome} {v.name}: {v.result}", file=err)
        print(f"qemu-panthor: IGT results in {', '.join(str(f) for f in files)}", file=err)
        print(summary_line(verdicts))
        if any(v.fails_run for v in verdicts):
            return code or 1
        planned = planned_count(result.console)
        judged = sum(r.rc is not None for r in runs)
        if planned is None or judged != planned or not runs:
            print(f"qemu-panthor: igt: {judged} of {planned if planned is not None else '?'} "
                  "subtests reported a result", file=err)
            return code or 1
        # every planned subtest was judged: the guest's rc 1 counted failures the
        # expectations may excuse, judged above
        return 0 if code == 1 and result.rc == 1 else code


def driver_programs(programs: tuple[str, ...] | list[str], driver: str) -> list[str]:
    """The userland's IGT programs of one driver (``.../<driver>/<driver>_*``)."""
    return [p for p in programs if Path(p).name.startswith(f"{driver}_")
            and Path(p).parent.name == driver]


def check_build_libs(build: Path, land: Userland, driver: str = "panthor") -> None:
    """Every shared library the build's programs of ``driver`` and its ``lib/`` need must be
    in ``lib/`` or in the userland: said before booting, not as 127 exits in the guest."""
    from ..setup.elf import elf_deps, is_elf

    have = {p.name for d in (build / "lib", land.path / "usr/lib" / land.arch.triplet,
                             land.path / "usr/lib") if d.is_dir() for p in d.iterdir()}
    files = build_programs(build, driver)
    if (build / "lib").is_dir():
        files += [p for p in (build / "lib").iterdir() if ".so" in p.name and p.is_file()]
    missing: dict[str, str] = {}
    for f in files:
        if not is_elf(f):
            continue
        try:
            data = f.read_bytes()
        except OSError as e:
            raise UserError(f"--igt-build {build}: cannot read {f}: {e.strerror}") from None
        if data[4:5] != b"\x02" or int.from_bytes(data[18:20], "little") != EM_X86_64:
            raise UserError(f"--igt-build {build}: {f.relative_to(build)} is not an x86_64 "
                            "ELF64 program (the IGT guest is x86_64)")
        for name in elf_deps(data).needed:
            if name not in have:
                missing.setdefault(name, str(f.relative_to(build)))
    if missing:
        detail = ", ".join(f"{n} (needed by {w})" for n, w in sorted(missing.items()))
        raise UserError(f"--igt-build {build}: {detail}: in neither its lib/ nor the IGT "
                        "userland; add the Debian package that holds it to the igt userland "
                        "in images/userlands.toml")


def build_programs(build: Path, driver: str = "panthor") -> list[Path]:
    """The <driver>_* programs of an IGT build the guest runs: executable files, not links
    (guest/igt's ``find -type f`` does not follow them)."""
    return [p for p in build.rglob(f"{driver}_*")
            if p.is_file() and not p.is_symlink() and p.stat().st_mode & 0o111]


def check_build_dir(path: str, driver: str = "panthor") -> Path:
    """``--igt-build DIR``: an IGT build (or install) tree holding <driver>_* programs."""
    d = Path(path).expanduser().resolve()
    if not d.is_dir():
        raise UserError(f"--igt-build {path}: no such directory")
    if not build_programs(d, driver):
        raise UserError(f"--igt-build {path}: no {driver}_* test programs in it (an IGT "
                        f"build directory holds tests/{driver}/{driver}_..., ...)")
    return d


# -- expectations (drm-ci: <driver>-<board>-fails.txt, -flakes.txt, -skips.txt) ----------
@dataclass
class Expectations:
    fails: dict[str, str] = field(default_factory=dict)  # name -> expected status (Fail, ...)
    flakes: list[re.Pattern[str]] = field(default_factory=list)
    skips: list[str] = field(default_factory=list)  # regexes (unanchored, as drm-ci's)
    files: list[Path] = field(default_factory=list)

    def skips_regex(self) -> str:
        return "|".join(f"({s})" for s in self.skips)

    def is_flake(self, name: str) -> bool:
        return any(p.search(name) for p in self.flakes)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def default_expectations(driver: str) -> str:
    """The project's expectations for a driver's IGT tests (images/igt-expectations/<driver>,
    drm-ci's format, each entry with its reason), or "" when it has none."""
    from ..setup import recipes

    d = recipes.IMAGES_DIR / "igt-expectations" / driver
    return str(d) if d.is_dir() else ""


def load_expectations(path: str) -> Expectations | None:
    """Every ``*fails.txt``, ``*flakes.txt`` and ``*skips.txt`` in the directory (None for
    no directory)."""
    if not path:
        return None
    d = Path(path).expanduser()
    if not d.is_dir():
        raise UserError(f"--igt-expectations {path}: no such directory")
    exp = Expectations()
    for f in sorted(d.iterdir()):
        if f.name.endswith("fails.txt"):
            for line in _lines(f):
                name, _, status = line.partition(",")
                if not status:
                    raise UserError(f"{f}: {line!r} is not 'test,Status' (e.g. "
                                    "panthor/panthor_vm@vm_bind,Fail)")
                status = status.strip()
                if status not in CI_STATUSES:
                    raise UserError(f"{f}: {line!r}: status {status!r} is none of "
                                    f"{', '.join(sorted(CI_STATUSES))}")
                exp.fails[_bare(name.strip())] = status
        elif f.name.endswith("flakes.txt"):
            exp.flakes += [_regex(f, line) for line in _lines(f)]
        elif f.name.endswith("skips.txt"):
            exp.skips += [check_ere(line, str(f)) for line in _lines(f)]
        else:
            continue
        exp.files.append(f)
    if not exp.files:
        raise UserError(f"--igt-expectations {path}: no *-fails.txt, *-flakes.txt or "
                        "*-skips.txt in it")
    return exp


def _regex(f: Path, line: str) -> re.Pattern[str]:
    try:
        return re.compile(line)
    except re.error as e:
        raise UserError(f"{f}: {line!r} is not a regular expression ({e})") from None


def _bare(name: str) -> str:
    return name.removeprefix("igt@")


# -- results --------------------------------------------------------------------------------
@dataclass
class SubtestRun:
    name: str  # panthor/panthor_vm@vm_bind
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    dmesg: list[str] = field(default_factory=list)  # "<level>message"
    rc: int | None = None
    time_s: float = 0.0
    timed_out: bool = False

    @property
    def dmesg_warnings(self) -> list[str]:
        out = []
        for line in self.dmesg:
            m = re.match(r"<(\d+)>", line)
            if m and int(m.group(1)) % 8 <= DMESG_WARN_LEVEL and "[IGT]" not in line:
                out.append(line)
        return out

    @property
    def result(self) -> str:
        if self.rc is None:
            return "incomplete"
        if self.timed_out:
            return "timeout"
        if self.rc == 0:
            base = "pass"
        elif self.rc in (77, 79):
            return "skip"
        elif self.rc == 112:
            return "abort"
        elif self.rc >= 128 or self.rc < -1:
            base = "crash"
        else:
            base = "fail"
        if self.dmesg_warnings:
            return {"pass": "dmesg-warn", "fail": "dmesg-fail"}.get(base, base)
        return base


_DIAG = re.compile(r"^# igt-(test|out|err|dmesg|exit)(?: (.*))?$")
_PLAN = re.compile(r"^1\.\.(\d+)$")


def planned_count(console: list[str]) -> int | None:
    """The guest's KTAP plan (``1..N``): how many subtests it set out to run."""
    for line in console:
        m = _PLAN.match(line)
        if m:
            return int(m.group(1))
    return None
_EXIT = re.compile(r"rc=(-?\d+) time=([\d.]+)( timeout)?")


def parse_console(lines: list[str]) -> list[SubtestRun]:
    """The subtests guest/igt reported, from its ``# igt-*`` diagnostic lines."""
    runs: list[SubtestRun] = []
    cur: SubtestRun | None = None
    for line in lines:
        m = _DIAG.match(line)
        if m:
            kind, rest = m.group(1), m.group(2) or ""
            if kind == "test":
                cur = SubtestRun(rest.strip())
                runs.append(cur)
            elif cur is not None and kind == "exit":
                e = _EXIT.search(rest)
                if e:
                    cur.rc, cur.time_s = int(e.group(1)), float(e.group(2))
                    cur.timed_out = bool(e.group(3))
            elif cur is not None:
                getattr(cur, kind).append(rest)
            continue
    return runs


@dataclass
class Verdict:
    name: str
    result: str  # IGT runner's result
    status: str  # drm-ci's
    outcome: str  # pass / fail / skip / expected-fail / known-flake / unexpected-improvement

    @property
    def fails_run(self) -> bool:
        return self.outcome in ("fail", "unexpected-improvement")


def judge(runs: list[SubtestRun], exp: Expectations | None) -> list[Verdict]:
    """Each run's IGT result, its drm-ci status, and the outcome against the expectations
    (deqp-runner's rules)."""
    out = []
    for r in runs:
        result = r.result
        status = CI_STATUS[result]
        expected = exp.fails.get(r.name) if exp else None
        if expected is not None:
            if status == expected:
                outcome = "expected-fail"
            elif status in CI_SUCCESS:
                outcome = "unexpected-improvement"
            else:
                outcome = "fail"
        elif status in CI_SUCCESS:
            outcome = "skip" if result in SKIPPED else "pass"
        elif exp is not None and exp.is_flake(r.name):
            outcome = "known-flake"
        else:
            outcome = "fail"
        out.append(Verdict(r.name, result, status, outcome))
    return out


def summary_line(verdicts: list[Verdict]) -> str:
    """``igt: N passed, N failed, N skipped`` (and the expectation outcomes)."""
    passed = sum(v.result in PASSED for v in verdicts)
    skipped = sum(v.result in SKIPPED for v in verdicts)
    failed = len(verdicts) - passed - skipped
    line = f"igt: {passed} passed, {failed} failed, {skipped} skipped"
    extra = [f"{n} {what}" for what, n in (
        ("expected failures", sum(v.outcome == "expected-fail" for v in verdicts)),
        ("known flakes", sum(v.outcome == "known-flake" for v in verdicts)),
        ("unexpected improvements", sum(v.outcome == "unexpected-improvement"
                                        for v in verdicts))) if n]
    return line + (f" ({', '.join(extra)})" if extra else "")


def results_json(runs: list[SubtestRun], *, name: str, uname: str, start: float,
                 end: float) -> dict[str, Any]:
    """IGT runner's results.json (results_version 10)."""
    counters = ("crash", "pass", "dmesg-fail", "dmesg-warn", "skip", "incomplete", "abort",
                "timeout", "notrun", "fail", "warn")
    tests: dict[str, Any] = {}
    totals: dict[str, dict[str, int]] = {"": dict.fromkeys(counters, 0),
                                         "root": dict.fromkeys(counters, 0)}
    runtimes: dict[str, Any] = {}
    for r in runs:
        binary = r.name.partition("@")[0]
        key = f"igt@{r.name}".lower()
        entry: dict[str, Any] = {
            "out": "".join(f"{x}\n" for x in r.out), "err": "".join(f"{x}\n" for x in r.err),
            "dmesg": "".join(f"{x}\n" for x in r.dmesg), "result": r.result,
            "time": {"__type__": "TimeAttribute", "start": 0.0, "end": r.time_s},
        }
        if r.dmesg_warnings:
            entry["dmesg-warnings"] = "".join(f"{x}\n" for x in r.dmesg_warnings)
        tests[key] = entry
        bkey = f"igt@{binary}".lower()
        totals.setdefault(bkey, dict.fromkeys(counters, 0))
        for t in ("", "root", bkey):
            totals[t][r.result] += 1
        rt = runtimes.setdefault(bkey, {"time": {"__type__": "TimeAttribute", "start": 0.0,
                                                 "end": 0.0}})
        rt["time"]["end"] = round(rt["time"]["end"] + r.time_s, 3)
    return {"__type__": "TestrunResult", "results_version": 10, "name": name, "uname": uname,
            "time_elapsed": {"__type__": "TimeAttribute", "start": start, "end": end},
            "tests": tests, "totals": totals, "runtimes": runtimes}


def junit_xml(runs: list[SubtestRun], verdicts: list[Verdict]) -> bytes:
    """JUnit XML: a testsuite per binary, a testcase per subtest."""
    root = ET.Element("testsuites", name="igt")
    suites: dict[str, ET.Element] = {}
    for r, v in zip(runs, verdicts, strict=True):
        binary, _, sub = r.name.partition("@")
        suite = suites.get(binary)
        if suite is None:
            suite = suites[binary] = ET.SubElement(root, "testsuite", name=f"igt@{binary}")
        case = ET.SubElement(suite, "testcase", classname=f"igt.{binary.replace('/', '.')}",
                             name=sub or binary, time=f"{r.time_s:.3f}")
        if v.result in SKIPPED:
            ET.SubElement(case, "skipped", message=_skip_reason(r))
        elif v.outcome in ("fail", "unexpected-improvement"):
            kind = "failure" if v.result not in ("crash", "abort", "timeout") else "error"
            el = ET.SubElement(case, kind, type=v.status,
                               message=f"{v.result} ({v.outcome}, exit {r.rc})")
            el.text = "\n".join(r.err[-40:] or r.out[-40:])
        ET.SubElement(case, "system-out").text = "\n".join(r.out)
        ET.SubElement(case, "system-err").text = "\n".join(r.err)
    for el in [root, *suites.values()]:
        cases = list(el.iter("testcase"))
        el.set("tests", str(len(cases)))
        el.set("failures", str(sum(c.find("failure") is not None for c in cases)))
        el.set("errors", str(sum(c.find("error") is not None for c in cases)))
        el.set("skipped", str(sum(c.find("skipped") is not None for c in cases)))
        el.set("time", f"{sum(float(c.get('time', '0')) for c in cases):.3f}")
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def _skip_reason(r: SubtestRun) -> str:
    for line in r.out + r.err:
        if "Test requirement" in line or "SKIP" in line:
            return line.strip()
    return "skipped"


def write_results(run_dir: Path, runs: list[SubtestRun], verdicts: list[Verdict], *,
                  uname: str, start: float) -> list[Path]:
    """results.json, junit.xml and failures.csv into ``run_dir``; their paths."""
    data = results_json(runs, name="qemu-panthor", uname=uname, start=start, end=time.time())
    rj = run_dir / "results.json"
    rj.write_text(json.dumps(data, indent=4) + "\n")
    ju = run_dir / "junit.xml"
    ju.write_bytes(junit_xml(runs, verdicts))
    # drm-ci's failures.csv: what fails the run, in the fails.txt syntax
    failures = run_dir / "failures.csv"
    failures.write_text("".join(f"{v.name},{_ci_line_status(v)}\n" for v in verdicts
                                if v.fails_run))
    return [rj, ju, failures]


def _ci_line_status(v: Verdict) -> str:
    if v.outcome == "unexpected-improvement":
        return f"UnexpectedImprovement({v.status})"
    return v.status


def prepare(args: argparse.Namespace, arch_name: str) -> IgtPlan:
    """The IGT run ``boot --run igt`` asked for, on a guest of ``arch_name``."""
    from ..setup.userland import ensure_userland, userland_arch

    land_arch = userland_arch("igt")
    if arch_name != land_arch:
        raise UserError(f"--run igt: Debian builds IGT for amd64 only, so the suite runs in "
                        f"the {land_arch} guest (--arch {land_arch}, the default for --run "
                        f"igt), not {arch_name}")
    from ..gpu.models import MODELS

    driver = MODELS[args.gpu].driver
    build = check_build_dir(args.igt_build, driver) if args.igt_build else None
    exp = load_expectations(args.igt_expectations or default_expectations(driver))
    if args.igt_tests:
        check_ere(args.igt_tests, "--igt-tests")
    if args.igt_timeout <= 0:
        raise UserError("--igt-timeout must be positive")
    land = ensure_userland("igt")
    if not driver_programs(land.programs, driver):
        raise UserError(f"--run igt: the IGT userland has no {driver} tests; images/"
                        f"userlands.toml must keep usr/libexec/igt-gpu-tools/{driver}/*")
    if build is not None:
        check_build_libs(build, land, driver)
    return IgtPlan(land, build=build, driver=driver, tests=args.igt_tests, expectations=exp,
                   timeout_s=args.igt_timeout)


def uname_of(console: list[str]) -> str:
    """``Linux <release>`` of the guest, from its init status line."""
    for line in console:
        m = re.match(r"^@qp status phase=init kernel=(\S+)", line)
        if m:
            return f"Linux {m.group(1)}"
    return ""


__all__ = ["Expectations", "IgtPlan", "SubtestRun", "Verdict", "check_build_dir", "judge",
           "junit_xml", "load_expectations", "parse_console", "prepare", "results_json",
           "summary_line", "uname_of", "write_results"]

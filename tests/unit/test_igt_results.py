"""launcher/igt.py: the guest's per-subtest report becomes IGT runner's results.json, JUnit
and a drm-ci verdict. Results follow IGT runner's rules (runner/resultgen.c): exit 0 pass,
77 skip, 98 fail, 112 abort, 128+N crash, killed at the limit timeout; a kernel message at
KERN_WARNING or worse turns pass into dmesg-warn and fail into dmesg-fail. drm-ci
(deqp-runner): an expected status is ExpectedFail, a better one UnexpectedImprovement (fails
the run), a failure matching a flake regex KnownFlake."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qemu_panthor.errors import UserError
from qemu_panthor.launcher.igt import (
    judge,
    junit_xml,
    load_expectations,
    parse_console,
    results_json,
    summary_line,
    uname_of,
)

CONSOLE = """\
@qp status phase=init kernel=7.2.13-qp run=igt gpu=g610
@qp status phase=igt programs=2 subtests=6
KTAP version 1
1..6
# igt-test panthor/panthor_query@query
[dmesg] [IGT] panthor_query: executing
# igt-out IGT-Version: 2.5-NO-GIT (x86_64) (Linux: 7.2.13-qp x86_64)
# igt-out Subtest query: SUCCESS (0.001s)
# igt-dmesg <14>[    9.6] [IGT] panthor_query: starting subtest query
# igt-exit rc=0 time=0.500
ok 1 panthor/panthor_query@query
# igt-test panthor/panthor_vm@vm_bind
# igt-out Subtest vm_bind: SUCCESS (0.002s)
# igt-dmesg <3>[    9.7] panthor qemu-panthor.16: [drm] *ERROR* something
# igt-exit rc=0 time=0.250
ok 2 panthor/panthor_vm@vm_bind
# igt-test panthor/panthor_vm@vm_unbind
# igt-err (panthor_vm:12) CRITICAL: Test assertion failure function vm_unbind
# igt-out Subtest vm_unbind: FAIL (0.003s)
# igt-exit rc=98 time=0.300
not ok 3 panthor/panthor_vm@vm_unbind
# igt-test panthor/panthor_vm@vm_skip
# igt-out Test requirement not met in function f, file x.c:1:
# igt-out Subtest vm_skip: SKIP (0.000s)
# igt-exit rc=77 time=0.100
ok 4 panthor/panthor_vm@vm_skip # SKIP Test requirement not met in function f, file x.c:1:
# igt-test panthor/panthor_vm@vm_hang
# igt-out Starting subtest: vm_hang
# igt-exit rc=137 time=120.000 timeout
not ok 5 panthor/panthor_vm@vm_hang
# igt-test panthor/panthor_vm@vm_segv
# igt-exit rc=139 time=0.200
not ok 6 panthor/panthor_vm@vm_segv
""".splitlines()


def test_results_follow_igt_runner_rules() -> None:
    runs = parse_console(CONSOLE)
    assert [(r.name, r.result) for r in runs] == [
        ("panthor/panthor_query@query", "pass"),
        ("panthor/panthor_vm@vm_bind", "dmesg-warn"),
        ("panthor/panthor_vm@vm_unbind", "fail"),
        ("panthor/panthor_vm@vm_skip", "skip"),
        ("panthor/panthor_vm@vm_hang", "timeout"),
        ("panthor/panthor_vm@vm_segv", "crash"),
    ]
    assert runs[0].out[-1] == "Subtest query: SUCCESS (0.001s)"
    assert runs[2].err == ["(panthor_vm:12) CRITICAL: Test assertion failure function vm_unbind"]
    assert uname_of(CONSOLE) == "Linux 7.2.13-qp"


def test_a_subtest_without_an_exit_line_is_incomplete() -> None:
    runs = parse_console(["# igt-test panthor/panthor_gem@bo_create",
                          "# igt-out Starting subtest: bo_create"])
    assert runs[0].result == "incomplete"


def test_results_json_has_igt_runner_shape() -> None:
    runs = parse_console(CONSOLE)
    data = results_json(runs, name="n", uname="Linux x", start=10.0, end=20.0)
    assert data["__type__"] == "TestrunResult" and data["results_version"] == 10
    assert data["time_elapsed"] == {"__type__": "TimeAttribute", "start": 10.0, "end": 20.0}
    t = data["tests"]["igt@panthor/panthor_vm@vm_bind"]
    assert t["result"] == "dmesg-warn" and "*ERROR* something" in t["dmesg-warnings"]
    assert t["time"] == {"__type__": "TimeAttribute", "start": 0.0, "end": 0.25}
    assert t["out"] == "Subtest vm_bind: SUCCESS (0.002s)\n"
    root = data["totals"]["root"]
    assert (root["pass"], root["dmesg-warn"], root["fail"], root["skip"], root["timeout"],
            root["crash"]) == (1, 1, 1, 1, 1, 1)
    assert data["totals"]["igt@panthor/panthor_vm"]["fail"] == 1
    assert data["totals"][""] == root
    assert data["runtimes"]["igt@panthor/panthor_query"]["time"]["end"] == 0.5


def test_verdicts_without_expectations() -> None:
    verdicts = judge(parse_console(CONSOLE), None)
    assert [v.outcome for v in verdicts] == ["pass", "pass", "fail", "skip", "fail", "fail"]
    assert summary_line(verdicts) == "igt: 2 passed, 3 failed, 1 skipped"


def _xfails(tmp: Path) -> Path:
    d = tmp / "xfails"
    d.mkdir()
    (d / "panthor-rk3588-fails.txt").write_text(
        "# comment\n\npanthor/panthor_vm@vm_unbind,Fail\npanthor/panthor_query@query,Fail\n"
        "panthor/panthor_vm@vm_segv,Timeout\n")
    (d / "panthor-rk3588-flakes.txt").write_text("# Bug Report: x\nvm_hang\n")
    (d / "panthor-rk3588-skips.txt").write_text("# slow\n^panthor/panthor_gem@.*\nkms_.*\n")
    (d / "README").write_text("not a list\n")
    return d


def test_drm_ci_expectations(tmp_path: Path) -> None:
    exp = load_expectations(str(_xfails(tmp_path)))
    assert exp.fails == {"panthor/panthor_vm@vm_unbind": "Fail",
                         "panthor/panthor_query@query": "Fail",
                         "panthor/panthor_vm@vm_segv": "Timeout"}
    assert exp.skips_regex() == "(^panthor/panthor_gem@.*)|(kms_.*)"
    verdicts = judge(parse_console(CONSOLE), exp)
    by = {v.name: v for v in verdicts}
    assert by["panthor/panthor_vm@vm_unbind"].outcome == "expected-fail"
    assert by["panthor/panthor_query@query"].outcome == "unexpected-improvement"
    assert by["panthor/panthor_vm@vm_hang"].outcome == "known-flake"
    # a different failure than the expected one is a failure
    assert by["panthor/panthor_vm@vm_segv"].outcome == "fail"
    assert [v.name for v in verdicts if v.fails_run] == ["panthor/panthor_query@query",
                                                         "panthor/panthor_vm@vm_segv"]
    assert summary_line(verdicts) == ("igt: 2 passed, 3 failed, 1 skipped (1 expected "
                                      "failures, 1 known flakes, 1 unexpected improvements)")


def test_bad_expectation_files_are_named(tmp_path: Path) -> None:
    d = tmp_path / "x"
    d.mkdir()
    with pytest.raises(UserError, match=r"no \*-fails\.txt"):
        load_expectations(str(d))
    (d / "a-fails.txt").write_text("panthor/panthor_vm@vm_bind\n")
    with pytest.raises(UserError, match="is not 'test,Status'"):
        load_expectations(str(d))
    (d / "a-fails.txt").write_text("")
    (d / "a-skips.txt").write_text("panthor_(vm\n")
    with pytest.raises(UserError, match="not a regular expression"):
        load_expectations(str(d))


def test_junit_counts_and_cases() -> None:
    runs = parse_console(CONSOLE)
    root = ET.fromstring(junit_xml(runs, judge(runs, None)))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"),
            root.get("skipped")) == ("6", "1", "2", "1")
    suites = {s.get("name"): s for s in root}
    assert set(suites) == {"igt@panthor/panthor_query", "igt@panthor/panthor_vm"}
    vm = suites["igt@panthor/panthor_vm"]
    cases = {c.get("name"): c for c in vm}
    assert cases["vm_unbind"].find("failure").get("type") == "Fail"
    assert cases["vm_hang"].find("error").get("type") == "Timeout"
    assert "Test requirement" in cases["vm_skip"].find("skipped").get("message")
    assert cases["vm_bind"].find("failure") is None


def test_a_build_needing_a_library_nobody_has_is_refused_before_booting(tmp_path: Path) -> None:
    """--igt-build: every DT_NEEDED of the build's programs and lib/ must be in its lib/ or
    in the userland (an upstream IGT links libproc2, Debian's does not)."""
    from support.elf_writer import make_elf

    from qemu_panthor.launcher.igt import check_build_libs
    from qemu_panthor.setup.recipes import guest_arch
    from qemu_panthor.setup.userland import Userland

    land = tmp_path / "land"
    (land / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (land / "usr/lib/x86_64-linux-gnu/libc.so.6").write_bytes(b"")
    build = tmp_path / "build"
    (build / "tests/panthor").mkdir(parents=True)
    (build / "lib").mkdir()
    prog = build / "tests/panthor/panthor_query"
    prog.write_bytes(make_elf("/lib64/ld-linux-x86-64.so.2", ["libigt.so.0", "libc.so.6"]))
    prog.chmod(0o755)
    (build / "lib/libigt.so.0").write_bytes(make_elf(None, ["libproc2.so.1", "libc.so.6"]))
    userland = Userland("igt", land, guest_arch("x86_64"), (), {})
    with pytest.raises(UserError, match=r"libproc2\.so\.1 \(needed by lib/libigt\.so\.0\)"):
        check_build_libs(build, userland)
    (land / "usr/lib/x86_64-linux-gnu/libproc2.so.1").write_bytes(b"")
    check_build_libs(build, userland)  # now complete


def test_regexes_must_mean_the_same_to_grep_e_in_the_guest() -> None:
    from qemu_panthor.launcher.igt import check_ere

    assert check_ere(r"panthor_vm@vm_(bind|unbind)$", "x") == r"panthor_vm@vm_(bind|unbind)$"
    assert check_ere(r"^panthor/panthor_gem@.*", "x")
    for bad in (r"(?i)vm", r"vm_bind(?!x)", r"bo_\d", r"vm.*?bind", r"\bvm"):
        with pytest.raises(UserError, match="POSIX extended regexes"):
            check_ere(bad, "--igt-tests")


def _boot_result(tmp_path: Path, console: list[str], rc: int):
    from qemu_panthor.launcher.boot import BootResult

    return BootResult(rc=rc, console=console, run_dir=tmp_path, outcome="powered-off")


WARN = ["[   30.000002] WARNING: CPU: 0 PID: 88 at drivers/gpu/drm/panthor/panthor_sched.c:1 "
        "group_release+0x10/0x20 [panthor]",
        "[   30.000003] Modules linked in: panthor",
        "[   30.000004] ---[ end trace 0000000000000000 ]---"]


def test_kernel_reports_fail_an_igt_run_that_expectations_excuse(tmp_path: Path) -> None:
    """A failure the fails list expects passes the run, unless the kernel reported something
    (a WARN fails the run whatever the suite says)."""
    import argparse

    from qemu_panthor.launcher.igt import IgtPlan
    from qemu_panthor.launcher.report import report
    from qemu_panthor.setup.recipes import guest_arch
    from qemu_panthor.setup.userland import Userland

    d = tmp_path / "x"
    d.mkdir()
    (d / "a-fails.txt").write_text("panthor/panthor_vm@vm_unbind,Fail\n")
    plan = IgtPlan(Userland("igt", tmp_path, guest_arch("x86_64"), (), {}),
                   expectations=load_expectations(str(d)))
    failing = ["1..1", "# igt-test panthor/panthor_vm@vm_unbind", "# igt-exit rc=98 time=0.1",
               "not ok 1 panthor/panthor_vm@vm_unbind", "@qp result rc=1"]
    args = argparse.Namespace(run="igt")
    assert report(_boot_result(tmp_path, failing, 1), args, suite=plan) == 0
    assert report(_boot_result(tmp_path, failing[:-2] + WARN + failing[-2:], 1), args,
                  suite=plan) == 1


def test_an_igt_run_missing_planned_results_fails(tmp_path: Path) -> None:
    """The guest planned 3 subtests, 1 reported (the console was cut, or the guest died):
    the run fails even though what was reported passed."""
    import argparse

    from qemu_panthor.launcher.igt import IgtPlan
    from qemu_panthor.launcher.report import report
    from qemu_panthor.setup.recipes import guest_arch
    from qemu_panthor.setup.userland import Userland

    plan = IgtPlan(Userland("igt", tmp_path, guest_arch("x86_64"), (), {}))
    console = ["1..3", "# igt-test panthor/panthor_query@query", "# igt-exit rc=0 time=0.1",
               "ok 1 panthor/panthor_query@query", "@qp result rc=1"]
    assert report(_boot_result(tmp_path, console, 1), argparse.Namespace(run="igt"),
                  suite=plan) == 1

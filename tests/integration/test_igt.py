"""[igt] IGT's panthor tests (Debian's amd64 build) in the x86_64 guest on the emulated GPU.

The expected subtests are what the test programs themselves list (``--list-subtests``, run
here on the host inside the userland), not a list kept in this repo. Each test boots the real
guest: the COMPILE_TEST panthor kernel (built into the cache once), the glue, the real driver.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from qemu_panthor.setup.userland import Userland, ensure_userland

pytestmark = pytest.mark.integration

BOOT_TIMEOUT_S = 900  # includes building the x86_64 kernel on a fresh machine (~6 min)


@pytest.fixture(scope="module")
def userland() -> Userland:
    return ensure_userland("igt")


def listed_subtests(land: Userland, driver: str = "panthor") -> list[str]:
    """binary@subtest for every subtest the userland's programs of ``driver`` list (run on
    the host)."""
    out = []
    for prog in land.programs:
        if Path(prog).parent.name != driver:
            continue
        p = subprocess.run(["chroot", str(land.path), prog, "--list-subtests"],
                           capture_output=True, text=True, check=True, timeout=60)
        name = f"{driver}/" + Path(prog).name
        out += [f"{name}@{s}" for s in p.stdout.split()]
    return out


def boot_igt(*args: str) -> tuple[subprocess.CompletedProcess[str], Path | None]:
    p = subprocess.run([sys.executable, "-m", "qemu_panthor", "boot", "--run", "igt", *args],
                       capture_output=True, text=True, timeout=BOOT_TIMEOUT_S + 60,
                       stdin=subprocess.DEVNULL)
    m = re.search(r"IGT results in (\S+)/results\.json", p.stderr)
    return p, Path(m.group(1)) if m else None


def _tail(p: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(p.stdout.splitlines()[-30:]) + "\n" + p.stderr[-3000:]


@pytest.mark.timeout(BOOT_TIMEOUT_S + 120)
def test_every_debian_igt_panthor_subtest_passes(userland: Userland) -> None:
    expected = listed_subtests(userland)
    assert len(expected) >= 20, expected  # Debian's 2.5-1 lists 23
    p, run_dir = boot_igt()
    tail = _tail(p)
    assert run_dir is not None, tail
    try:
        assert re.search(rf"^igt: {len(expected)} passed, 0 failed, 0 skipped$", p.stdout,
                         re.M), tail
        assert p.returncode == 0, tail
        results = json.loads((run_dir / "results.json").read_text())
        assert results["__type__"] == "TestrunResult" and results["results_version"] == 10
        assert results["uname"].startswith("Linux ") and "-qp" in results["uname"]
        keys = sorted(results["tests"])
        assert keys == sorted(f"igt@{n}".lower() for n in expected)
        for key, entry in results["tests"].items():
            assert entry["result"] == "pass", (key, entry)
            sub = key.rsplit("@", 1)[1]
            # IGT's own verdict line, from the program's stdout in the guest
            assert re.search(rf"^Subtest {re.escape(sub)}: SUCCESS", entry["out"], re.M), entry
            assert f"starting subtest {sub}" in entry["dmesg"], entry
            assert entry["time"]["__type__"] == "TimeAttribute" and entry["time"]["end"] > 0
        assert results["totals"]["root"]["pass"] == len(expected)
        # group_submit is the one subtest the GPU executes (a STORE of 0xdeadbeef it checks)
        assert "igt@panthor/panthor_group@group_submit" in results["tests"]
        suites = ET.parse(run_dir / "junit.xml").getroot()
        assert suites.get("tests") == str(len(expected)) and suites.get("failures") == "0"
        assert (run_dir / "failures.csv").read_text() == ""
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# What panfrost logs at KERN_ERR for a job timeout and an unhandled page fault (its
# multi-line fault report included)
PANFROST_EXPECTED_WARNING = re.compile(
    r"gpu sched timeout|Unhandled Page fault|js fault|Reason: |raw fault status|"
    r"decoded fault status|exception type|access type|source id")


@pytest.mark.timeout(BOOT_TIMEOUT_S + 120)
def test_every_debian_igt_panfrost_subtest_passes_on_the_g52(userland: Userland) -> None:
    """[panfrost] IGT's panfrost tests against the Mali-G52 model: panfrost built with
    COMPILE_TEST in the x86_64 kernel, per-file address spaces, a job that faults, IGT's
    endless job loop through the driver's timeout and reset."""
    expected = listed_subtests(userland, "panfrost")
    assert {"panfrost/panfrost_submit@pan-reset",
            "panfrost/panfrost_submit@pan-unhandled-pagefault"} <= set(expected), expected
    # the one expected failure, with its reason: images/igt-expectations/panfrost
    stale = "panfrost/panfrost_submit@pan-submit-error-bad-requirements"
    p, run_dir = boot_igt("--gpu", "g52")
    tail = _tail(p)
    assert run_dir is not None, tail
    try:
        assert re.search(rf"^igt: {len(expected) - 1} passed, 1 failed, 0 skipped "
                         r"\(1 expected failures\)$", p.stdout, re.M), tail
        assert f"igt expected-fail {stale}" in p.stderr, tail
        assert p.returncode == 0, tail
        results = json.loads((run_dir / "results.json").read_text())
        assert sorted(results["tests"]) == sorted(f"igt@{n}".lower() for n in expected)
        for key, entry in results["tests"].items():
            if key == f"igt@{stale}":
                # the kernel accepts requirements = 2 (JD_REQ_CYCLE_COUNT since uAPI 1.3)
                assert entry["result"] == "fail" and "0 != -1" in entry["err"], entry
                continue
            # pan-reset's and pan-submit-and-close's endless jobs time out and
            # pan-unhandled-pagefault faults on purpose: panfrost logs those at KERN_ERR, which
            # IGT's runner rules make a dmesg-warn (a timeout may land in the next subtest's
            # log); nothing else may be logged
            assert entry["result"] in ("pass", "dmesg-warn"), (key, entry)
            unexpected = [w for w in entry.get("dmesg-warnings", "").splitlines()
                          if not PANFROST_EXPECTED_WARNING.search(w)]
            assert not unexpected, (key, unexpected)
        assert "panthor" not in " ".join(results["tests"])
        # prime: a dumb buffer of the display controller (cirrus-qemu, card1) into panfrost
        prime = results["tests"]["igt@panfrost/panfrost_prime@gem-prime-import"]
        assert re.search(r"^Subtest gem-prime-import: SUCCESS", prime["out"], re.M), prime
        # the job loop: the scheduler's timeout and panfrost's reset, then the next job runs;
        # the page fault: the job ends with JOB_BUS_FAULT once panfrost disables the AS
        tests = results["tests"]
        assert "gpu sched timeout" in tests["igt@panfrost/panfrost_submit@pan-reset"]["dmesg"]
        fault = tests["igt@panfrost/panfrost_submit@pan-unhandled-pagefault"]["dmesg"]
        assert "Unhandled Page fault" in fault and "status=JOB_BUS_FAULT" in fault, fault
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.timeout(BOOT_TIMEOUT_S + 120)
def test_expectations_and_test_selection(tmp_path: Path) -> None:
    """drm-ci lists: a skipped test is not run, an expected failure that passes is an
    unexpected improvement that fails the run (deqp-runner's rule), a flake regex is read;
    --igt-tests selects by extended regex."""
    exp = tmp_path / "xfails"
    exp.mkdir()
    (exp / "panthor-qemu-fails.txt").write_text(
        "# expected failures\npanthor/panthor_gem@bo_create,Fail\n")
    (exp / "panthor-qemu-flakes.txt").write_text("# Bug Report: none\npanthor_vm@nothing\n")
    (exp / "panthor-qemu-skips.txt").write_text("# not run\n^panthor/panthor_gem@bo_zeroed$\n")
    p, run_dir = boot_igt("--igt-tests", r"panthor_gem@bo_(create|zeroed)$|panthor_query",
                          "--igt-expectations", str(exp))
    tail = _tail(p)
    assert run_dir is not None, tail
    try:
        results = json.loads((run_dir / "results.json").read_text())
        assert sorted(results["tests"]) == ["igt@panthor/panthor_gem@bo_create",
                                            "igt@panthor/panthor_query@query"], tail
        assert "1 unexpected improvements" in p.stdout, tail
        assert p.returncode == 1, tail
        assert (run_dir / "failures.csv").read_text() == \
            "panthor/panthor_gem@bo_create,UnexpectedImprovement(Pass)\n"
        assert "igt unexpected-improvement panthor/panthor_gem@bo_create" in p.stderr
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.timeout(BOOT_TIMEOUT_S + 120)
def test_a_user_igt_build_runs_instead(userland: Userland, tmp_path: Path) -> None:
    """--igt-build DIR: the panthor_* programs of an IGT build directory (meson's layout:
    tests/panthor/, lib/) run, with that build's libigt first. The build here is made from
    Debian's binaries (no IGT source reaches this machine); a real one: docs/igt.md."""
    build = tmp_path / "igt-build"
    (build / "tests/panthor").mkdir(parents=True)
    (build / "lib").mkdir()
    shutil.copy2(userland.path / "usr/libexec/igt-gpu-tools/panthor/panthor_query",
                 build / "tests/panthor/panthor_query")
    libigt = userland.path / "usr/lib/x86_64-linux-gnu/libigt.so.0"
    shutil.copy2(libigt.resolve(), build / "lib/libigt.so.0")
    p, run_dir = boot_igt("--igt-build", str(build))
    tail = _tail(p)
    assert run_dir is not None, tail
    try:
        assert re.search(r"^igt: 1 passed, 0 failed, 0 skipped$", p.stdout, re.M), tail
        results = json.loads((run_dir / "results.json").read_text())
        assert list(results["tests"]) == ["igt@panthor/panthor_query@query"]
        assert p.returncode == 0, tail
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_bad_igt_arguments_get_one_clear_error(tmp_path: Path) -> None:
    cases = [
        (["--igt-build", str(tmp_path / "nope")], "no such directory"),
        (["--igt-build", str(tmp_path)], "no panthor_* test programs"),
        (["--igt-expectations", str(tmp_path)], "no *-fails.txt"),
        (["--igt-tests", "panthor_(vm"], "not a regular expression"),
        (["--arch", "arm64"], "Debian builds IGT for amd64 only"),
    ]
    for args, msg in cases:
        p = subprocess.run([sys.executable, "-m", "qemu_panthor", "boot", "--run", "igt",
                            *args], capture_output=True, text=True, timeout=600,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 2, (args, p.stderr)
        assert msg in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr, p.stderr

"""CLI bad input and set-up checks: one clear line, non-zero exit, nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qemu_panthor.cli import main
from qemu_panthor.errors import UserError
from qemu_panthor.launcher.ktap import parse_ktap
from qemu_panthor.setup import recipes
from qemu_panthor.setup.cache import Cache


def test_unknown_kernel_line(capsys) -> None:
    rc = main(["boot", "--kernel", "5.10"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "unknown kernel line '5.10'" in err and "7.2" in err


def test_unknown_gpu(capsys) -> None:
    rc = main(["boot", "--gpu", "g999"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown GPU model 'g999'" in err and "g610" in err


def test_wrong_flag_is_usage_error() -> None:
    p = subprocess.run([sys.executable, "-m", "qemu_panthor", "boot", "--frobnicate"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "unrecognized arguments: --frobnicate" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--timeout", "-5"], "argument --timeout: -5: a number of seconds above 0"),
    (["--timeout", "0"], "argument --timeout: 0: a number of seconds above 0"),
    (["--timeout", "nan"], "argument --timeout: nan: a number of seconds above 0"),
    (["--timeline", "/nonexistent/t.pftrace"], "--timeline /nonexistent/t.pftrace: no such "
                                               "directory '/nonexistent'"),
    (["--timeline", "/"], "--timeline /: is a directory, not a file"),
    (["--qmp", "/nonexistent/q.sock"], "--qmp /nonexistent/q.sock: no such directory"),
    (["--backend-socket", "/nonexistent/b.sock"], "--backend-socket /nonexistent/b.sock: No "
                                                  "such file or directory (start"),
    (["--backend-socket", "/dev/null"], "--backend-socket /dev/null: not a socket"),
    (["--suite", "long", "--run", "shell"], "--suite long: only with --run selftests"),
    (["--igt-build", "/tmp"], "--igt-build: only with --run igt"),
])
def test_boot_refuses_bad_arguments_before_starting_anything(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistake that would only show once QEMU runs (a QEMU abort, a backend gone, a run that
    ends at once) is one line and exit 2 up front; no guest, no set-up is started."""
    import qemu_panthor.launcher.boot as boot

    def no_boot(*a: object, **k: object) -> object:
        raise AssertionError("a guest was started")

    monkeypatch.setattr(boot, "boot_images", no_boot)
    monkeypatch.setattr(boot, "Boot", no_boot)
    if args[0] == "--timeout":  # an argparse type: the usage, then the error, exit 2
        with pytest.raises(SystemExit) as e:
            main(["boot", *args])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "usage: qemu-panthor boot" in err and err.splitlines()[-1].endswith(message)
        return
    assert main(["boot", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qemu-panthor: ") and message in err


def test_version_checks() -> None:
    assert recipes.version_tuple("1:11.1.3+ds-1") == (11, 1, 3)
    assert recipes.version_tuple("7.2.13+deb14-arm64") == (7, 2, 13)
    assert recipes.at_least("1:11.1.3+ds-1", "10.1")
    assert not recipes.at_least("1:10.0.2+ds-1", "10.1")
    assert recipes.at_least("7.2.13+deb14-arm64", "7.0")
    assert not recipes.at_least("6.12.107+deb13-arm64", "7.0")


def test_kernel_lines_declared() -> None:
    lines = recipes.kernel_lines()
    assert {"7.2", "6.12"} <= set(lines)
    with pytest.raises(UserError):
        recipes.kernel_line("nope")


def test_cache_commit_is_atomic_and_sweeps_leftovers(tmp_path) -> None:
    c = Cache(tmp_path / "cache")
    with c.locked():
        t = c.new_tmp("thing")
        (t / "f").write_text("1")
        final = c.commit(t, c.path("things", "v1"))
        assert (final / "f").read_text() == "1"
        half = c.new_tmp("interrupted")
        (half / "partial").write_text("x")
    with c.locked():  # a later set-up removes what an interrupted one left behind
        assert not half.exists()
        assert (final / "f").exists()


def test_manifest_survives_garbage(tmp_path) -> None:
    c = Cache(tmp_path)
    c.manifest_path.write_text("{not json")
    assert c.manifest() == {}
    c.update_manifest("k", {"a": 1})
    assert c.manifest() == {"k": {"a": 1}}


def test_ktap_summary() -> None:
    s = parse_ktap([
        "KTAP version 1", "1..5", "ok 1 a", "not ok 2 b", "ok 3 c # SKIP no uAPI",
        "    ok 1 sub", "ok 4 d",
    ])
    assert s.passed == ["a", "d"] and s.failed[0] == "b"
    assert s.skipped == [("c", "no uAPI")]
    assert "(missing result 5)" in s.failed
    assert s.line() == "2 passed, 2 failed, 1 skipped"


def test_prune_roots_keeps_only_what_the_manifest_names(tmp_path) -> None:
    from qemu_panthor.setup.pipeline import prune_roots

    c = Cache(tmp_path)
    for name in ("sid-7.2.13-qemu11-aaaa", "sid-7.2.12-qemu11-bbbb", "trixie-6.12-cccc"):
        (c.path("roots", name, "usr")).mkdir(parents=True)
    with c.locked():
        removed = prune_roots(c, keep={"sid-7.2.13-qemu11-aaaa", "trixie-6.12-cccc"})
    assert removed == ["sid-7.2.12-qemu11-bbbb"]
    assert sorted(p.name for p in c.path("roots").iterdir()) == [
        "sid-7.2.13-qemu11-aaaa", "trixie-6.12-cccc"]


def test_closed_stdout_pipe_is_quiet() -> None:
    """`qemu-panthor ... | head`: when the reader goes first, exit 141 (SIGPIPE's status in a
    shell) with nothing on stderr, not a BrokenPipeError traceback."""
    import os

    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written
    try:
        p = subprocess.run([sys.executable, "-m", "qemu_panthor.cli", "serve",
                            "--print-capabilities"], stdout=w, stderr=subprocess.PIPE,
                           timeout=60)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert p.stderr == b""

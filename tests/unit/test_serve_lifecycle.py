"""`qemu-panthor serve` as a process: signals, --once, --parent-pid (no guest, no QEMU).

Every wait is for an event (a socket file, a pid's end, a log line) with a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.processes import alive, wait_for

from qemu_panthor.launcher.procs import describe_status, with_parent_death_signal

SERVE = [sys.executable, "-m", "qemu_panthor", "-v", "serve"]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def start_serve(procs: list[subprocess.Popen[bytes]], log: Path,
                *args: str) -> subprocess.Popen[bytes]:
    fh = open(log, "wb")
    p = subprocess.Popen([*SERVE, *args], stdout=fh, stderr=fh, stdin=subprocess.DEVNULL)
    fh.close()
    procs.append(p)
    return p


def connect_and_close(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_ends_serve_cleanly(tmp_path: Path, procs: list[subprocess.Popen[bytes]],
                                   sig: signal.Signals) -> None:
    sock, log = tmp_path / "gpu.sock", tmp_path / "serve.log"
    p = start_serve(procs, log, "--socket-path", str(sock))
    wait_for(sock.exists, 30, "the socket")
    p.send_signal(sig)
    assert p.wait(10) == 0
    assert not sock.exists(), "socket file left behind"
    text = log.read_text()
    assert "Traceback" not in text, text
    assert f"{sig.name}: stopping" in text


def test_signal_while_a_client_is_connected(tmp_path: Path,
                                            procs: list[subprocess.Popen[bytes]]) -> None:
    sock, log = tmp_path / "gpu.sock", tmp_path / "serve.log"
    p = start_serve(procs, log, "--socket-path", str(sock))
    wait_for(sock.exists, 30, "the socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(sock))
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        client.settimeout(5)
        assert client.recv(1) == b"", "the server did not close the client's connection"
    assert not sock.exists()
    assert "Traceback" not in log.read_text()


def test_standalone_serve_accepts_the_next_client(tmp_path: Path,
                                                  procs: list[subprocess.Popen[bytes]]) -> None:
    sock, log = tmp_path / "gpu.sock", tmp_path / "serve.log"
    p = start_serve(procs, log, "--socket-path", str(sock))
    wait_for(sock.exists, 30, "the socket")
    for _ in range(3):
        connect_and_close(sock)
    # Still listening: one more client connects, and the process is alive.
    connect_and_close(sock)
    assert p.poll() is None
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0


def test_once_ends_when_the_client_disconnects(tmp_path: Path,
                                               procs: list[subprocess.Popen[bytes]]) -> None:
    sock, log = tmp_path / "gpu.sock", tmp_path / "serve.log"
    p = start_serve(procs, log, "--socket-path", str(sock), "--once")
    wait_for(sock.exists, 30, "the socket")
    connect_and_close(sock)
    assert p.wait(10) == 0
    assert not sock.exists()
    assert "the client disconnected; exiting" in log.read_text()


def test_once_on_an_inherited_fd(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """What the launcher does: it listens, the backend inherits the fd (--fd N --once)."""
    sock, log = tmp_path / "gpu.sock", tmp_path / "serve.log"
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(sock))
    lsock.listen(1)
    with open(log, "wb") as fh:
        p = subprocess.Popen([*SERVE, "--fd", str(lsock.fileno()), "--once"],
                             pass_fds=[lsock.fileno()], stdout=fh, stderr=fh)
    procs.append(p)
    lsock.close()
    connect_and_close(sock)  # the backlog holds it until the child accepts
    assert p.wait(30) == 0
    assert "the client disconnected; exiting" in log.read_text()


def test_backend_ends_when_its_parent_is_killed(tmp_path: Path,
                                                procs: list[subprocess.Popen[bytes]]) -> None:
    """--parent-pid: a SIGKILLed launcher takes its backend along (PR_SET_PDEATHSIG)."""
    sock, log, pidfile = tmp_path / "gpu.sock", tmp_path / "serve.log", tmp_path / "pid"
    # The "launcher": starts serve with --parent-pid <itself>, writes the child's pid, waits.
    launcher = subprocess.Popen([sys.executable, "-c", f"""
import os, subprocess, sys, time
with open({str(log)!r}, "wb") as fh:
    p = subprocess.Popen({[*SERVE]!r} + ["--socket-path", {str(sock)!r},
                         "--parent-pid", str(os.getpid())], stdout=fh, stderr=fh)
open({str(pidfile)!r}, "w").write(str(p.pid))
time.sleep(600)
"""])
    procs.append(launcher)
    wait_for(sock.exists, 30, "the socket")
    backend = int(pidfile.read_text())
    launcher.kill()
    launcher.wait()
    took = wait_for(lambda: not alive(backend), 10, "the backend to end")
    assert took < 5
    wait_for(lambda: not sock.exists(), 5, "the socket file to go")  # SIGTERM: clean end
    assert "SIGTERM: stopping" in log.read_text()


def test_parent_already_gone_ends_the_backend_at_once(tmp_path: Path,
                                                      procs: list[subprocess.Popen[bytes]]) -> None:
    """--parent-pid of a process that is not (or no longer) the parent: end at once."""
    sock, log = tmp_path / "gpu.sock", tmp_path / "serve.log"
    p = start_serve(procs, log, "--socket-path", str(sock), "--parent-pid", "1")
    assert p.wait(30) == 0
    assert not sock.exists()


def test_exec_wrapper_kills_the_program_with_its_parent(tmp_path: Path,
                                                        procs: list[subprocess.Popen[bytes]]
                                                        ) -> None:
    """How QEMU is started: `sleep` wrapped to get SIGKILL when its parent dies."""
    pidfile = tmp_path / "pid"
    sleep = "/bin/sleep" if os.path.exists("/bin/sleep") else "/usr/bin/sleep"
    parent = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, time
from qemu_panthor.launcher.procs import with_parent_death_signal
p = subprocess.Popen(with_parent_death_signal([{sleep!r}, "600"]))
open({str(pidfile)!r}, "w").write(str(p.pid))
time.sleep(600)
"""])
    procs.append(parent)
    wait_for(pidfile.exists, 30, "the child's pid")
    wait_for(lambda: pidfile.read_text() != "", 5, "the pid file's content")
    child = int(pidfile.read_text())
    wait_for(lambda: os.readlink(f"/proc/{child}/exe").endswith("sleep"), 10,
             "the wrapper to exec the program")
    parent.kill()
    parent.wait()
    assert wait_for(lambda: not alive(child), 5, "the wrapped program to die") < 5


def test_exec_wrapper_runs_the_program() -> None:
    out = subprocess.run(with_parent_death_signal(["/bin/sh", "-c", "echo $0 ok", "wrapped"]),
                         capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "wrapped ok\n"


def test_describe_status() -> None:
    assert describe_status(0) == "exit status 0"
    assert describe_status(3) == "exit status 3"
    assert describe_status(-9) == "killed by SIGKILL"
    assert describe_status(-15) == "killed by SIGTERM"
    assert describe_status(None) == "still running"

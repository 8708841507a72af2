"""`qemu-panthor serve`: the vfio-user backend conventions, end to end as a process.

The backend is started as a real subprocess; a pure-Python vfio-user client reads GPU_ID
through BAR0 (so the Mali function really is what is served), then SIGTERM must end it
cleanly and remove its socket.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from support.vfio_user_client import VfioUserClient

SERVE = [sys.executable, "-m", "qemu_panthor", "serve"]


def test_print_capabilities() -> None:
    p = subprocess.run([*SERVE, "--print-capabilities"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    caps = json.loads(p.stdout)
    assert caps["type"] == "gpu" and "g610" in caps["models"]


def test_serve_needs_a_socket() -> None:
    p = subprocess.run(SERVE, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr.strip() == "qemu-panthor: serve needs --socket-path PATH or --fd N"


def test_serve_bad_fd() -> None:
    p = subprocess.run([*SERVE, "--fd", "987"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--fd 987 is not an open file descriptor" in p.stderr
    assert "Traceback" not in p.stderr


def test_serve_unknown_gpu() -> None:
    p = subprocess.run([*SERVE, "--socket-path", "/tmp/x.sock", "--gpu", "mali-t880"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown GPU model 'mali-t880'" in p.stderr


async def _wait_for_socket(path: Path, proc: asyncio.subprocess.Process) -> None:
    for _ in range(600):  # bounded: 30 s
        if path.exists():
            return
        if proc.returncode is not None:
            raise AssertionError(f"backend exited with {proc.returncode}")
        await asyncio.sleep(0.05)
    raise AssertionError("backend never created its socket")


async def test_serve_reads_gpu_id_and_stops_on_sigterm(tmp_path: Path) -> None:
    sock = tmp_path / "gpu.sock"
    proc = await asyncio.create_subprocess_exec(
        *SERVE, "--socket-path", str(sock), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        await _wait_for_socket(sock, proc)
        c = await VfioUserClient.connect(str(sock))
        try:
            await c.negotiate()
            gpu_id = int.from_bytes(await c.region_read(0, 0x0, 4), "little")
            assert gpu_id == 0xA8670005  # Mali-G610 r0p0 status 5 (reference §2.8)
            vendor = int.from_bytes(await c.region_read(7, 0x0, 2), "little")
            assert vendor == 0x13B5
        finally:
            c.close()
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 15)
        _, err = await proc.communicate()
        assert rc == 0, err.decode()
        assert b"Traceback" not in err
        assert not sock.exists()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_serve_inherits_listening_fd(tmp_path: Path) -> None:
    """--fd: the launcher's way (the socket listens before the backend even starts)."""
    import socket

    path = tmp_path / "fd.sock"
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(str(path))
    lsock.listen(1)
    proc = subprocess.Popen([*SERVE, "--fd", str(lsock.fileno())], pass_fds=[lsock.fileno()],
                            stderr=subprocess.PIPE)
    lsock.close()
    try:
        async def probe() -> int:
            c = await VfioUserClient.connect(str(path))
            try:
                await c.negotiate()
                return int.from_bytes(await c.region_read(0, 0x0, 4), "little")
            finally:
                c.close()

        assert asyncio.run(probe()) == 0xA8670005
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0

"""REGION_READ round-trip latency: our vfio-user server vs a bare echo server.

Both servers run in a child process on a UNIX stream socket; the same blocking Python client
sends 4-byte BAR0 REGION_READ requests and waits for each reply. The echo server reads the
32-byte request and writes a 36-byte reply without decoding anything, so the ratio is the
cost of the server's framing, dispatch and device callback. Goal: ratio <= 1.3 (issue
[perf]). Not asserted.
An asyncio echo server (the same echo behind loop.add_reader) shows the event loop's own share.

    python bench/bench_vfio_user.py [-n 20000] [--no-pin]

By default both processes are pinned to one CPU: cross-CPU wake-ups on small VMs cost more
than everything measured here (see docs/vfio-user.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

HDR = struct.Struct("<HHIII")
READ_REQ = struct.Struct("<HHIIIQII")


def serve_echo(path: str) -> None:
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)
    print("ready", flush=True)
    conn, _ = ls.accept()
    buf = bytearray(32)
    view = memoryview(buf)
    reply = bytearray(36)
    while True:
        got = 0
        while got < 32:
            n = conn.recv_into(view[got:])
            if n == 0:
                return
            got += n
        reply[:32] = buf
        reply[8] = 1  # flags: reply
        conn.sendall(reply)


def serve_aecho(path: str) -> None:
    """The floor for any asyncio server: the echo above driven by loop.add_reader."""

    async def main() -> None:
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(path)
        ls.listen(1)
        print("ready", flush=True)
        conn, _ = ls.accept()
        conn.setblocking(False)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        buf = bytearray(4096)
        view = memoryview(buf)
        have = 0

        def on_readable() -> None:
            nonlocal have
            try:
                n = conn.recv_into(view[have:])
            except BlockingIOError:
                return
            if n == 0:
                loop.remove_reader(conn.fileno())
                done.set_result(None)
                return
            have += n
            while have >= 32:
                reply = bytearray(buf[:32]) + bytes(4)
                reply[8] = 1
                conn.send(reply)
                buf[: have - 32] = buf[32:have]
                have -= 32

        loop.add_reader(conn.fileno(), on_readable)
        await done

    run_loop(main())


def run_loop(coro: object) -> None:
    """The loop the backend uses (qemu_panthor.eventloop: uvloop unless
    QEMU_PANTHOR_LOOP=asyncio), for the asyncio echo server and ours alike."""
    from qemu_panthor import eventloop

    eventloop.run(coro)  # type: ignore[arg-type]


def serve_vfio(path: str) -> None:
    from qemu_panthor.vfio_user import BarSpec, PciFunction, VfioUserServer

    class Dev(PciFunction):
        def __init__(self) -> None:
            super().__init__(vendor_id=0x1AF4, device_id=0x10F0, class_code=0x0B4000,
                             bars={0: BarSpec(0x1000)})
            self.regs = [0] * 1024

        def bar_read(self, bar: int, offset: int, size: int) -> int:
            return self.regs[offset >> 2]

        def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
            self.regs[offset >> 2] = value

    async def main() -> None:
        server = VfioUserServer(Dev())
        await server.listen_path(path)
        print("ready", flush=True)
        await server.serve(once=True)
        await server.close()

    run_loop(main())


def recv_exact(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed")
        data += chunk
    return bytes(data)


def run_client(path: str, n: int, negotiate: bool) -> float:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if negotiate:
        doc = json.dumps({"capabilities": {"max_msg_fds": 16}}).encode() + b"\0"
        payload = struct.pack("<HH", 0, 0) + doc
        s.sendall(HDR.pack(0, 1, 16 + len(payload), 0, 0) + payload)
        size = HDR.unpack(recv_exact(s, 16))[2]
        recv_exact(s, size - 16)
    reqs = [READ_REQ.pack(i & 0xFFFF, 9, 32, 0, 0, 0x10, 0, 4) for i in range(256)]
    for i in range(200):  # warm-up
        s.sendall(reqs[i & 255])
        recv_exact(s, 36)
    t0 = time.perf_counter_ns()
    for i in range(n):
        s.sendall(reqs[i & 255])
        reply = s.recv(64)
        if len(reply) < 36:
            reply += recv_exact(s, 36 - len(reply))
    dt = time.perf_counter_ns() - t0
    s.close()
    return dt / n / 1000.0


def measure(kind: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.sock")
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, path], stdout=subprocess.PIPE, text=True
        )
        try:
            if child.stdout is None or child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{kind} server did not start")
            return run_client(path, n, negotiate=kind == "vfio")
        finally:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="round trips per server")
    ap.add_argument("--no-pin", action="store_true", help="do not pin both processes to CPU 0")
    ap.add_argument("--asyncio-loop", action="store_true",
                    help="run the servers on asyncio's own loop instead of uvloop")
    ap.add_argument("--serve", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        servers = {"echo": serve_echo, "aecho": serve_aecho, "vfio": serve_vfio}
        servers[args.serve[0]](args.serve[1])
        return
    if args.asyncio_loop:
        os.environ["QEMU_PANTHOR_LOOP"] = "asyncio"  # children inherit it
    if not args.no_pin:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # children inherit it
    echo = measure("echo", args.n)
    vfio = measure("vfio", args.n)
    aecho = measure("aecho", args.n)
    echo2 = measure("echo", args.n)  # bracket: the machine is shared
    echo = min(echo, echo2)
    print(f"echo server        : {echo:7.1f} us per REGION_READ round trip")
    print(f"asyncio echo server: {aecho:7.1f} us  (ratio {aecho / echo:4.2f}: the loop's share)")
    print(f"vfio-user          : {vfio:7.1f} us")
    print(f"ratio              : {vfio / echo:7.2f} (goal <= 1.3)")


if __name__ == "__main__":
    main()

"""Black-box fuzzer of the vfio-user server: bounded, seeded, reproducible.

Each lane runs the real backend (``python -m qemu_panthor serve --socket-path ...``, the Mali
function on uvloop) and drives it over its UNIX socket with batches of random and
structure-aware messages (vfio_user_cases.py), junk fds (pipes, sockets, regular files,
truncated or unsealed memfds, saturated eventfds), connection churn, garbage and abrupt
disconnects. Lanes run side by side (one server process each); each lane's connections
follow one another, as the server serves one client at a time.

Checked, per batch and overall:
- no crash: the server process stays alive (a crash is a finding; the lane restarts it);
- no hang: every message that asks for a reply gets it (matching id and command, errors
  header-only) within ``--deadline`` seconds, and the server never hangs up on its own;
- MMIO stays prompt: a REGION_READ of GPU_ID placed at a random point of every batch; its
  round trip is reported (median, p99, max) and the median must stay under ``--probe-ms``;
- no traceback (or "Fatal Python error") in the server's log, and no log flood;
- RSS bounded (``--max-rss-mib``).

    PYTHONPATH=tests python -m fuzz.fuzz_vfio_user --seed 1 --cases 1000000 --seconds 300

The message stream of a lane is a pure function of (seed, lane, connection number), so a
run is reproducible up to timing. Each finding writes the batch that provoked it as JSON
under ``--findings``; ``--replay FILE`` sends such a batch to a fresh server. A hang finding
carries the server's state (CPU, epoll set, sockets, Python stacks). ``--repo DIR`` serves
another checkout (A/B against older code); ``FUZZ_SERVER_WRAPPER='strace -o /tmp/{name}'``
wraps the server command.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import errno
import json
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.vfio_user_cases import (
    ERROR,
    HDR,
    REPLY,
    Case,
    CaseGen,
    FdFactory,
    close_all,
)

REPO = Path(__file__).resolve().parents[1]
CLIENT_ERRNOS = {errno.EINVAL, errno.ENOTSUP, errno.E2BIG, errno.EEXIST, errno.ENOENT,
                 errno.ENOSPC}
ANC_SPACE = socket.CMSG_SPACE(64 * 4)


def rss_of(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Server:
    """One ``qemu-panthor serve`` process on its own socket, its stderr in a log file."""

    def __init__(self, workdir: Path, name: str, gpu: str, repo: Path = REPO) -> None:
        self.workdir = workdir
        self.name = name
        self.gpu = gpu
        self.repo = repo
        self.path = str(workdir / f"{name}.sock")
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_pos = 0
        self.log_lines = 0
        self.starts = 0

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a dead server's socket
        with open(self.log_path, "ab") as log:
            wrap = os.environ.get("FUZZ_SERVER_WRAPPER", "").split()  # e.g. strace, for debugging
            self.proc = subprocess.Popen(
                [*[w.replace("{name}", self.name) for w in wrap],
                 sys.executable, "-X", "faulthandler", "-m", "qemu_panthor", "serve",
                 "--socket-path", self.path,
                 "--gpu", self.gpu],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.repo,
            )
        self.starts += 1
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: server did not start (see {self.log_path})")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def exited(self) -> int | None:
        assert self.proc is not None
        return self.proc.poll()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def dump_and_restart(self) -> str:
        """A hung server: whether it is busy or waiting, what its epoll set and sockets hold
        (a lost watch shows there), its Python stacks (faulthandler on SIGABRT, into the
        log); then a fresh server."""
        pid = self.pid

        def cpu() -> int:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                return -1
        c0 = cpu()
        time.sleep(1.0)
        busy = cpu() - c0
        wchan = "?"
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/status") as f:
                wchan = " ".join(line.strip() for line in f
                                 if line.startswith(("State", "Threads"))) + " "
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/wchan") as f:
                wchan += f.read()
        epolls = ""
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventpoll]":
                        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                            epolls += f"epoll fd {fd}: " + " | ".join(
                                line.split(" pos:")[0].strip() for line in f
                                if line.startswith("tfd:")) + "\n"
        sockets = epolls
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            ss = subprocess.run(["ss", "-xanp"], capture_output=True, text=True, timeout=10)
            sockets += "\n".join(line for line in ss.stdout.splitlines()
                                  if f"pid={pid}," in line)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self.stop()
        stacks = self.new_log()
        self.start()
        return (f"server CPU ticks in 1 s: {busy}, wchan {wchan!r}\nsockets (ss -xanp):\n"
                f"{sockets}\n{stacks[-4000:]}")

    def new_log(self) -> str:
        """Log text written since the last call."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_pos)
                data = f.read()
        except OSError:
            return ""
        self.log_pos += len(data)
        text = data.decode("utf-8", "replace")
        self.log_lines += text.count("\n")
        return text


@dataclass
class Out:
    """Bytes queued for the socket, and the fds that go with their first byte."""

    data: memoryview
    pass_fds: list[int]
    close_fds: list[int]
    probe_mid: int | None = None


@dataclass
class Stats:
    cases: int = 0
    messages_answered: int = 0
    batches: int = 0
    connections: int = 0
    abrupt: int = 0
    garbage: int = 0
    errnos: Counter[int] = field(default_factory=Counter)
    whats: Counter[str] = field(default_factory=Counter)
    probe_ms: list[float] = field(default_factory=list)
    rss_max: int = 0
    rss_first: int = 0
    rss_last: int = 0
    elapsed: float = 0.0
    log_lines: int = 0
    findings: list[dict[str, object]] = field(default_factory=list)


class Lane:
    """One server and the client connections that follow one another on it."""

    def __init__(self, index: int, args: argparse.Namespace, workdir: Path, sel:
                 selectors.BaseSelector, stats: Stats) -> None:
        self.index = index
        self.args = args
        self.server = Server(workdir, f"lane{index}", args.gpu, Path(args.repo))
        self.sel = sel
        self.stats = stats
        self.fds = FdFactory(str(workdir))
        self.conn_no = 0
        self.sock: socket.socket | None = None
        self.gen: CaseGen | None = None
        self.rng = random.Random()
        self.out: deque[Out] = deque()
        self.inbuf = bytearray()
        self.outstanding: dict[int, Case] = {}
        self.batch: list[Case] = []
        self.deadline = 0.0
        self.probe_sent: dict[int, float] = {}
        self.next_mid = 0
        self.gpu_id: bytes | None = None
        self.hangup_after_batch = False
        self.batch_no = 0
        self.held: list[int] = []  # fds kept open while the connection lives
        self.previous = ""  # how the previous connection ended (for findings)
        self.stages: list[list[Case]] = []  # the rest of a sequence, one batch each
        self.shrink_on_reply: dict[int, list[int]] = {}  # mid -> memfds to shrink then

    # -- connection ------------------------------------------------------------------------
    def connect(self) -> None:
        self.conn_no += 1
        self.stats.connections += 1
        self.rng = random.Random(f"{self.args.seed}:{self.index}:{self.conn_no}")
        self.gen = CaseGen(self.rng)
        s = self._connect()
        if s is None:
            self.check_server()  # a crash restarts it
            s = self._connect()
        if s is None:
            state = self.server.dump_and_restart()
            self.finding("not accepting", f"connect failed; {state}")
            s = self._connect()
        if s is None:
            raise RuntimeError(f"lane {self.index}: cannot connect to a fresh server")
        s.setblocking(False)
        self.sock = s
        self.inbuf.clear()
        self.batch_no = 0
        self.sel.register(s, selectors.EVENT_READ, self)

    def _connect(self) -> socket.socket | None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.args.deadline)  # a server that stops accepting: not us stuck too
        try:
            s.connect(self.server.path)
        except OSError:
            s.close()
            return None
        return s

    def hang_up(self) -> None:
        if self.sock is not None:
            self.sel.unregister(self.sock)
            self.sock.close()
            self.sock = None
        for o in self.out:
            close_all(o.close_fds)
        self.out.clear()
        close_all(self.held)
        self.held = []
        self.stages = []
        self.shrink_on_reply.clear()
        self.outstanding.clear()
        self.probe_sent.clear()

    def _mid(self) -> int:
        mid = self.next_mid
        while mid in self.outstanding:
            mid = (mid + 1) & 0xFFFF
        self.next_mid = (mid + 1) & 0xFFFF
        return mid

    # -- batches ---------------------------------------------------------------------------
    def start_batch(self) -> None:
        if self.sock is None:
            self.connect()
        gen, rng = self.gen, self.rng
        assert gen is not None
        cases: list[Case] = []
        if self.batch_no == 0:
            while rng.random() < 0.3:
                cases.append(gen.version(self._mid(), valid=False))
            cases.append(gen.version(self._mid()))
        self.batch_no += 1
        n = rng.randint(1, self.args.batch)
        probe_at = rng.randrange(n + 1)
        for i in range(n):
            if i == probe_at:
                cases.append(gen.probe(self._mid()))
            cases.append(gen.next(self._mid()))
        if probe_at == n:
            cases.append(gen.probe(self._mid()))
        if self.stages:
            cases[0:0] = self.stages.pop(0)
        elif rng.random() < self.args.sequences:
            first, *self.stages = gen.sequence(self._mid)
            cases.extend(first)
        if rng.random() < 0.002:
            cases.append(gen.oversized(self._mid()))
        self.batch = cases
        for c in cases:
            self.queue_case(c)
            if c.replies:
                self.outstanding[c.mid] = c
            if c.what != "probe":
                self.stats.cases += 1
                self.stats.whats[c.what] += 1
        self.deadline = time.monotonic() + self.args.deadline
        self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        # How this connection goes on after the batch.
        r = rng.random()
        self.hangup_after_batch = False
        if r < 0.01:  # abrupt: hang up with replies pending, maybe mid-message
            self.stats.abrupt += 1
            last = self.out[-1] if self.out else None
            if last is not None and rng.random() < 0.5 and len(last.data) > 1:
                last.data = last.data[: rng.randrange(1, len(last.data))]
            self.flush()
            self.end_batch_by_hanging_up()
        elif r < 0.015:  # garbage, then hang up
            self.stats.garbage += 1
            self.out.append(Out(memoryview(gen.garbage()), [], []))
            self.flush()
            self.end_batch_by_hanging_up()
        elif r < 0.04:
            self.hangup_after_batch = True

    def end_batch_by_hanging_up(self) -> None:
        self.previous = (f"connection {self.conn_no} ended abruptly at batch {self.batch_no}: "
                         f"{[(c.what, len(c.data), c.fds) for c in self.batch[-6:]]}, "
                         f"{len(self.outstanding)} replies pending")
        self.hang_up()
        self.batch = []
        self.check_log()

    def queue_case(self, c: Case) -> None:
        pass_fds: list[int] = []
        to_close: list[int] = []
        for kind in c.fds:
            made = self.fds.make(kind)
            pass_fds.append(made.fd)
            if made.shrink:  # kept until the server has answered the map
                fd = os.dup(made.fd)
                self.shrink_on_reply.setdefault(c.mid, []).append(fd)
                self.held.append(fd)
            to_close.extend(made.close)
            self.held.extend(made.hold)
        self.out.append(Out(memoryview(c.data), pass_fds, to_close,
                            c.mid if c.what == "probe" else None))

    def flush(self) -> None:
        """Send what the socket takes now."""
        s = self.sock
        while self.out and s is not None:
            o = self.out[0]
            try:
                if o.pass_fds:
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", o.pass_fds))]
                    n = s.sendmsg([o.data], anc)
                    close_all(o.close_fds)
                    o.pass_fds, o.close_fds = [], []
                else:
                    n = s.send(o.data)
            except BlockingIOError:
                return
            except OSError as e:
                self.finding("server hung up", f"send failed: {e}")
                self.hang_up()
                return
            if n < len(o.data):
                o.data = o.data[n:]
                return
            if o.probe_mid is not None:
                self.probe_sent[o.probe_mid] = time.monotonic()
            self.out.popleft()
        if s is not None and not self.out:
            self.sel.modify(s, selectors.EVENT_READ, self)

    def on_readable(self) -> None:
        s = self.sock
        assert s is not None
        try:
            data, anc, _flags, _ = s.recvmsg(1 << 20, ANC_SPACE)
        except BlockingIOError:
            return
        except OSError as e:
            self.finding("server hung up", f"recv failed: {e}")
            self.hang_up()
            return
        for level, typ, raw in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(raw[: len(raw) - len(raw) % 4])
                close_all(list(a))
        if not data:
            self.finding("server hung up", "EOF from the server with a batch in flight")
            self.hang_up()
            return
        self.inbuf += data
        self.parse()

    def parse(self) -> None:
        buf = self.inbuf
        at = 0
        now = time.monotonic()
        while len(buf) - at >= 16:
            mid, cmd, size, flags, err = HDR.unpack_from(buf, at)
            if size < 16:
                self.finding("protocol", f"reply with size {size}")
                self.hang_up()
                return
            if len(buf) - at < size:
                break
            at += size
            mtype = flags & 0xF
            if mtype == 0:  # a server request (DMA_READ/WRITE): refuse it
                self.out.append(Out(memoryview(HDR.pack(mid, cmd, 16, REPLY | ERROR,
                                                        errno.EFAULT)), [], []))
                continue
            c = self.outstanding.pop(mid, None)
            if mtype != REPLY or c is None or cmd != c.cmd:
                self.finding("protocol", f"unexpected message id={mid} cmd={cmd} "
                             f"flags={flags:#x}")
                continue
            self.stats.messages_answered += 1
            for fd in self.shrink_on_reply.pop(mid, ()):
                os.ftruncate(fd, 0)  # the client shrinks guest memory under the map
            if flags & ERROR:
                self.stats.errnos[err] += 1
                if size != 16 or err not in CLIENT_ERRNOS:
                    self.finding("errno", f"{c.what}: error reply errno={err} size={size}")
            if c.what == "probe":
                t = self.probe_sent.pop(mid, None)
                if t is not None:
                    ms = (now - t) * 1000
                    self.stats.probe_ms.append(ms)
                    if ms > self.args.stall_ms:
                        self.finding("stall", f"GPU_ID read answered after {ms:.0f} ms")
                value = bytes(buf[at - size + 32 : at])
                if flags & ERROR:
                    self.finding("probe", f"GPU_ID read failed: errno {err}")
                elif self.gpu_id is None:
                    self.gpu_id = value
                elif value != self.gpu_id:
                    self.finding("probe", f"GPU_ID {value.hex()} != {self.gpu_id.hex()}")
        del buf[:at]
        if self.out and self.sock is not None:
            self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        if not self.outstanding and self.batch:
            self.batch_done()

    def batch_done(self) -> None:
        self.stats.batches += 1
        self.batch = []
        self.check_log()
        if self.hangup_after_batch:
            self.previous = f"connection {self.conn_no} ended cleanly at batch {self.batch_no}"
            self.hang_up()

    def check_deadline(self, now: float) -> None:
        if self.batch and self.outstanding and now > self.deadline:
            if self.server.exited() is not None:  # not a hang: a crash
                self.check_server()
                return
            whats = Counter(c.what for c in self.outstanding.values())
            missing = len(self.outstanding)
            self.hang_up()
            state = self.server.dump_and_restart()
            self.finding("hang", f"{missing} replies missing after "
                         f"{self.args.deadline} s: {dict(whats)}; {state}")
            self.batch = []
            self.gpu_id = None

    # -- checks ----------------------------------------------------------------------------
    def check_server(self) -> None:
        rc = self.server.exited()
        if rc is not None:
            self.finding("crash", f"server exited with {rc}")
            self.hang_up()
            self.batch = []
            self.check_log()
            self.server.start()
            self.gpu_id = None

    def check_log(self) -> None:
        text = self.server.new_log()
        if not text:
            return
        for marker in ("Traceback", "Fatal Python error"):
            if marker in text:
                at = text.index(marker)
                self.finding("traceback", text[at : at + 3000])
                break

    def finding(self, kind: str, detail: str) -> None:
        f = {"kind": kind, "detail": detail, "lane": self.index, "connection": self.conn_no,
             "batch": self.batch_no, "seed": self.args.seed, "previous": self.previous}
        self.stats.findings.append(f)
        if len(self.stats.findings) <= 50:
            out = Path(self.args.findings)
            out.mkdir(parents=True, exist_ok=True)
            name = out / f"finding-{len(self.stats.findings):03d}-{kind}.json"
            name.write_text(json.dumps({**f, "cases": [c.to_json() for c in self.batch]},
                                       indent=1))
            print(f"FINDING {kind}: {detail[:300]} (lane {self.index} connection "
                  f"{self.conn_no} batch {self.batch_no}; {name})", flush=True)


def run(args: argparse.Namespace) -> Stats:
    stats = Stats()
    workdir = Path(tempfile.mkdtemp(prefix="vfio-user-fuzz-"))
    sel = selectors.DefaultSelector()
    lanes = [Lane(i, args, workdir, sel, stats) for i in range(args.lanes)]
    for lane in lanes:
        lane.server.start()
    t0 = time.monotonic()
    next_rss = 0.0
    last_report = t0
    try:
        while stats.cases < args.cases and time.monotonic() - t0 < args.seconds:
            for lane in lanes:
                if not lane.batch:
                    lane.start_batch()
                    lane.flush()
            for key, ev in sel.select(timeout=0.05):
                lane = key.data
                if ev & selectors.EVENT_READ and lane.sock is not None:
                    lane.on_readable()
                if ev & selectors.EVENT_WRITE and lane.sock is not None:
                    lane.flush()
            now = time.monotonic()
            for lane in lanes:
                lane.check_deadline(now)
            if now >= next_rss:
                next_rss = now + 0.5
                for lane in lanes:
                    lane.check_server()
                    r = rss_of(lane.server.pid)
                    if r:
                        stats.rss_first = stats.rss_first or r
                        stats.rss_last = r
                        stats.rss_max = max(stats.rss_max, r)
                        if r > args.max_rss_mib << 20:
                            lane.finding("rss", f"server RSS {r >> 20} MiB")
                            args.max_rss_mib = 1 << 30  # say it once
            if now - last_report >= 10:
                last_report = now
                print(f"{now - t0:6.0f} s {stats.cases:9d} cases "
                      f"{stats.cases / (now - t0):7.0f}/s  connections {stats.connections}  "
                      f"findings {len(stats.findings)}", flush=True)
    finally:
        elapsed = time.monotonic() - t0
        for lane in lanes:
            lane.hang_up()
            lane.check_log()
            lane.server.stop()
            lane.check_log()
        stats.elapsed = elapsed
        log_lines = stats.log_lines = sum(lane.server.log_lines for lane in lanes)
        budget = 5 * stats.connections + 100
        if log_lines > budget:
            lanes[0].finding("log flood", f"{log_lines} log lines for {stats.connections} "
                             "connections")
        if stats.findings:
            print(f"server logs kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return stats


def replay(args: argparse.Namespace) -> int:
    """Send a finding's batch (after a fresh VERSION) to a fresh server; print what happens."""
    doc = json.loads(Path(args.replay).read_text())
    cases = [Case.from_json(c) for c in doc["cases"]]
    workdir = Path(tempfile.mkdtemp(prefix="vfio-user-replay-"))
    server = Server(workdir, "replay", args.gpu, Path(args.repo))
    server.start()
    fds = FdFactory(str(workdir))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(server.path)
    s.settimeout(args.deadline)
    rc = 0
    try:
        if not any(c.what == "version" for c in cases):
            cases.insert(0, CaseGen(random.Random(0)).version(0xFFFF))
        for c in cases:
            pass_fds, closes, shrink = [], [], []
            for kind in c.fds:
                made = fds.make(kind)
                pass_fds.append(made.fd)
                closes.extend(made.close + made.hold)
                if made.shrink:
                    shrink.append(made.fd)
            t = time.monotonic()
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", pass_fds))]
            s.sendmsg([c.data[:65536]], anc if pass_fds else [])
            if len(c.data) > 65536:
                s.sendall(c.data[65536:])
            for fd in shrink:
                os.ftruncate(fd, 0)
            close_all(closes)
            if not c.replies:
                print(f"{c.what:16s} id={c.mid}: no reply expected")
                continue
            head = b""
            while len(head) < 16:
                head += s.recv(16 - len(head))
            mid, _cmd, size, flags, err = HDR.unpack(head)
            body = b""
            while len(body) < size - 16:
                body += s.recv(size - 16 - len(body))
            print(f"{c.what:16s} id={c.mid}: reply id={mid} flags={flags:#x} "
                  f"errno={errno.errorcode.get(err, err)} {1000 * (time.monotonic() - t):.2f} ms")
    except (OSError, TimeoutError) as e:
        print(f"connection failed: {e}")
        rc = 1
    finally:
        s.close()
        time.sleep(0.2)
        if server.exited() is not None:
            print(f"server exited with {server.exited()}")
            rc = 1
        server.stop()
        log = server.new_log()
        if "Traceback" in log or "Fatal Python error" in log:
            rc = 1
        print(log[-5000:])
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=1_000_000, help="stop after this many cases")
    ap.add_argument("--seconds", type=float, default=300, help="stop after this long")
    ap.add_argument("--lanes", type=int, default=2, help="server processes fuzzed side by side")
    ap.add_argument("--batch", type=int, default=64, help="most messages per batch")
    ap.add_argument("--sequences", type=float, default=0.05,
                    help="share of batches that also carry a device-driving sequence")
    ap.add_argument("--deadline", type=float, default=5.0,
                    help="seconds a batch may take to be answered")
    ap.add_argument("--probe-ms", type=float, default=5.0, help="median GPU_ID round trip bound")
    ap.add_argument("--stall-ms", type=float, default=1000.0,
                    help="a GPU_ID read slower than this is a finding (the loop was held)")
    ap.add_argument("--max-rss-mib", type=int, default=512)
    ap.add_argument("--gpu", default="g610")
    ap.add_argument("--repo", default=str(REPO),
                    help="checkout whose qemu_panthor is served (A/B runs against old code)")
    ap.add_argument("--findings", default="fuzz-findings", help="where findings are written")
    ap.add_argument("--report", help="write the summary as JSON here")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON too")
    ap.add_argument("--replay", help="send a finding's batch to a fresh server")
    args = ap.parse_args()
    # SIGTERM (e.g. from `timeout`) unwinds like ^C, so the servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.replay:
        return replay(args)
    stats = run(args)
    elapsed = stats.elapsed
    probes = sorted(stats.probe_ms)
    med = statistics.median(probes) if probes else 0.0
    p99 = probes[int(len(probes) * 0.99)] if probes else 0.0
    pmax = probes[-1] if probes else 0.0
    if probes and med > args.probe_ms:
        stats.findings.append({"kind": "probe latency", "detail": f"median {med:.2f} ms"})
    summary = {
        "seed": args.seed, "lanes": args.lanes, "cases": stats.cases,
        "seconds": round(elapsed, 1), "cases_per_second": round(stats.cases / elapsed),
        "messages_answered": stats.messages_answered, "batches": stats.batches,
        "connections": stats.connections, "abrupt_disconnects": stats.abrupt,
        "garbage_disconnects": stats.garbage,
        "probe_ms": {"n": len(probes), "median": round(med, 3), "p99": round(p99, 3),
                     "max": round(pmax, 3)},
        "rss_mib": {"first": stats.rss_first >> 20, "max": stats.rss_max >> 20,
                    "last": stats.rss_last >> 20},
        "server_log_lines": stats.log_lines,
        "errnos": {errno.errorcode.get(e, str(e)): n for e, n in stats.errnos.most_common()},
        "findings": stats.findings,
    }
    kinds = Counter(str(f["kind"]) for f in stats.findings)
    print(f"fuzz vfio_user: {stats.cases} cases in {elapsed:.1f} s (seed {args.seed}, "
          f"{args.lanes} lanes, {stats.connections} connections): {kinds['crash']} crashes, "
          f"{kinds['hang'] + kinds['stall']} hangs, {kinds['traceback']} tracebacks, "
          f"{len(stats.findings)} findings in all; GPU_ID median {med:.2f} ms "
          f"(p99 {p99:.2f}, max {pmax:.2f} ms), "
          f"server RSS max {stats.rss_max >> 20} MiB, {stats.log_lines} log lines")
    if args.json:
        print(json.dumps(summary, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=1))
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())

"""Messages for the vfio-user fuzzer: random and structure-aware, reproducible from a seed.

Written from the vfio-user specification, not from the server: a :class:`Case` is the bytes
of one message as sent, the kinds of file descriptor to pass with it (made by
:class:`FdFactory` at send time) and how many replies the protocol promises (0 or 1).
Framing is always honest (the header's size is what is sent), so every message that asks
for a reply must get one; raw garbage is only ever sent right before hanging up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import socket
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

HDR = struct.Struct("<HHIII")
VERSION, DMA_MAP, DMA_UNMAP, DEVICE_GET_INFO, GET_REGION_INFO = 1, 2, 3, 4, 5
GET_REGION_IO_FDS, GET_IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE = 6, 7, 8, 9, 10
DMA_READ, DMA_WRITE, DEVICE_RESET, REGION_WRITE_MULTI = 11, 12, 13, 15
DEVICE_FEATURE, MIG_DATA_READ, MIG_DATA_WRITE = 16, 17, 18
REPLY, NO_REPLY, ERROR = 0x1, 0x10, 0x20
CONFIG = 7
MAX_DATA_XFER = 1 << 20  # what the server advertises (and the spec's default)
MAX_MSG = 16 + 16 + MAX_DATA_XFER
GPU_ID = 0x0
BAR0_SIZE = 0x200000
RAM_BASES = (0x0, 0x4000_0000, 0x8000_0000, 0x1_0000_0000)
SEAL_QEMU = fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL
# Mali registers the sequences drive (public hardware layout).
GPU_INT_RAWSTAT, GPU_INT_CLEAR, GPU_INT_MASK, GPU_CMD, MCU_CONTROL = 0x20, 0x24, 0x28, 0x30, 0x700
AS0 = 0x2400
AS_TRANSTAB, AS_MEMATTR, AS_COMMAND, AS_TRANSCFG = 0x00, 0x08, 0x18, 0x30
TRANSCFG_48 = 0x420001C6  # AArch64 4K, 48-bit VA, as panthor programs an AS
MEMATTR = 0x4C4C4C4C_8C4C8F4C

# Register offsets in BAR0 (Mali GPU_CONTROL, JOB, MMU AS slots, doorbells, USER page).
BAR0_REGS = (
    [o for o in range(0, 0x300, 4)] + [0x700, 0x704]
    + [0x1000 + o for o in range(0, 0x20, 4)]
    + [0x2000 + o for o in range(0, 0x20, 4)]
    + [0x2400 + n * 0x40 + o for n in range(8) for o in range(0, 0x40, 4)]
    + [0x80000 + n * 0x10000 for n in range(8)] + [0x10000]
)


@dataclass
class Case:
    """One message: its bytes, the fd kinds passed with it, the replies it is owed."""

    data: bytes
    fds: tuple[str, ...]
    replies: int
    mid: int
    cmd: int
    what: str

    def to_json(self) -> dict[str, object]:
        return {"data": self.data.hex(), "fds": list(self.fds), "replies": self.replies,
                "mid": self.mid, "cmd": self.cmd, "what": self.what}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Case:
        fds = d["fds"]
        assert isinstance(fds, list)
        return cls(bytes.fromhex(str(d["data"])), tuple(str(f) for f in fds),
                   int(str(d["replies"])), int(str(d["mid"])), int(str(d["cmd"])),
                   str(d["what"]))


@dataclass
class MadeFd:
    """An fd to pass, what to close once it is sent, what to keep open while the connection
    lives (the other end of a pipe nobody reads), and whether to shrink it once sent."""

    fd: int
    close: list[int]
    hold: list[int]
    shrink: bool = False


class FdFactory:
    """Makes the fds a case asks for: good ones (eventfds, sealed memfds) and junk."""

    KINDS = ("eventfd", "eventfd_full", "memfd_sealed", "memfd_unsealed", "memfd_short",
             "memfd_short_unsealed", "memfd_shrinks", "memfd_grow_only", "pipe_r", "pipe_w",
             "pipe_w_held", "socket", "socket_held", "file", "devnull", "opath")

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir = tmpdir

    def make(self, kind: str) -> MadeFd:
        if kind == "eventfd":
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            return MadeFd(fd, [fd], [])
        if kind == "eventfd_full":  # a client that never reads its eventfd
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            os.eventfd_write(fd, 0xFFFF_FFFF_FFFF_FFFE)
            return MadeFd(fd, [fd], [])
        if kind.startswith("memfd"):
            fd = os.memfd_create("fuzz-ram", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, 0x1000 if kind.startswith("memfd_short") else 0x10000)
            if kind in ("memfd_sealed", "memfd_short"):
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEAL_QEMU)
            elif kind == "memfd_grow_only":
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)
            return MadeFd(fd, [fd], [], shrink=kind == "memfd_shrinks")
        if kind.startswith("pipe"):
            r, w = os.pipe2(os.O_CLOEXEC)
            if kind == "pipe_w_held":  # a blocking pipe that fills up
                return MadeFd(w, [w], [r])
            return MadeFd(r if kind == "pipe_r" else w, [r, w], [])
        if kind.startswith("socket"):
            a, b = socket.socketpair()
            fa, fb = a.detach(), b.detach()
            return MadeFd(fa, [fa], [fb]) if kind == "socket_held" else MadeFd(fa, [fa, fb], [])
        if kind == "file":
            fd, path = tempfile.mkstemp(dir=self.tmpdir)
            os.unlink(path)
            os.write(fd, b"x" * 100)
            return MadeFd(fd, [fd], [])
        if kind == "devnull":
            fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            return MadeFd(fd, [fd], [])
        fd = os.open(self.tmpdir, os.O_PATH | os.O_CLOEXEC)
        return MadeFd(fd, [fd], [])


class CaseGen:
    """Weighted, structure-aware message generators over one ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.gens: list[tuple[Callable[[int], Case], int]] = [
            (self.bar0_read, 24), (self.bar0_write, 14), (self.region_access, 14),
            (self.config_access, 4), (self.dma_map, 6), (self.dma_unmap, 3),
            (self.set_irqs, 7), (self.info, 6), (self.write_multi, 3), (self.reset, 1),
            (self.version_again, 1), (self.unsupported, 2), (self.random_payload, 10),
            (self.odd_type, 2), (self.short_header, 1), (self.dma_reply_junk, 1),
        ]
        self._table = [g for g, w in self.gens for _ in range(w)]

    # -- helpers ---------------------------------------------------------------------------
    def _msg(self, mid: int, cmd: int, payload: bytes, what: str, *, fds: tuple[str, ...] = (),
             flags: int | None = None) -> Case:
        rng = self.rng
        if flags is None:
            flags = NO_REPLY if rng.random() < 0.05 else 0
        replies = 0 if flags & NO_REPLY else 1
        return Case(HDR.pack(mid, cmd, 16 + len(payload), flags, 0) + payload, fds, replies,
                    mid, cmd, what)

    def _u32(self) -> int:
        rng = self.rng
        return rng.choice((0, 1, 2, 0xFF, 0x1000, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32),
                           rng.getrandbits(8)))

    def _u64(self) -> int:
        rng = self.rng
        return rng.choice((0, 0x1000, 1 << 63, (1 << 64) - 1, (1 << 64) - 0x1000,
                           rng.getrandbits(64), rng.choice(RAM_BASES) + rng.getrandbits(16)))

    def _fd_kinds(self, p: float, n: int = 1) -> tuple[str, ...]:
        if self.rng.random() >= p:
            return ()
        return tuple(self.rng.choice(FdFactory.KINDS) for _ in range(n))

    # -- session -------------------------------------------------------------------------
    def version(self, mid: int, *, valid: bool = True) -> Case:
        rng = self.rng
        if valid:
            caps = {"max_msg_fds": rng.choice((1, 8, 16)),
                    "max_data_xfer_size": rng.choice((4096, 65536, MAX_DATA_XFER)),
                    "pgsizes": 4096, "max_dma_maps": 65535, "write_multiple": True}
            doc = json.dumps({"capabilities": caps}).encode() + b"\0"
            return self._msg(mid, VERSION, struct.pack("<HH", 0, 0) + doc, "version", flags=0)
        docs = [b"{" * rng.randrange(1, 5000), b"[" * 3000 + b"]" * 3000 + b"\0",
                b'{"capabilities":' + b'{"a":' * 2000 + b"1" + b"}" * 2001 + b"\0",
                rng.randbytes(rng.randrange(0, 300)), b'{"capabilities":{"max_msg_fds":-1}}\0',
                b'{"capabilities":{"max_data_xfer_size":' + b"9" * 5000 + b"}}\0"]
        major = 0 if rng.random() < 0.8 else rng.getrandbits(16)
        payload = struct.pack("<HH", major, rng.getrandbits(16)) + rng.choice(docs)
        return self._msg(mid, VERSION, payload[: rng.choice((2, len(payload)))],
                         "version-bad", flags=0)

    def probe(self, mid: int) -> Case:
        """REGION_READ of GPU_ID: the MMIO whose latency is measured while fuzzing."""
        return self._msg(mid, REGION_READ, struct.pack("<QII", GPU_ID, 0, 4), "probe", flags=0)

    def next(self, mid: int) -> Case:
        return self.rng.choice(self._table)(mid)

    # -- sequences: several messages that drive the device somewhere ----------------------
    def sequence(self, mid: Callable[[], int]) -> list[list[Case]]:
        """Stages: each goes in its own batch, after the previous one is answered (so the
        client can act in between, e.g. shrink the memory it just mapped)."""
        return self.rng.choice((self.map_and_boot, self.map_and_boot, self.irq_storm))(mid)

    def _w32(self, mid: int, off: int, value: int, what: str) -> Case:
        payload = struct.pack("<QII", off, 0, 4) + struct.pack("<I", value & 0xFFFFFFFF)
        return self._msg(mid, REGION_WRITE, payload, what, flags=NO_REPLY
                         if self.rng.random() < 0.5 else 0)

    def map_and_boot(self, mid: Callable[[], int]) -> list[list[Case]]:
        """Map guest memory (maybe one that is too short, or that the client shrinks once the
        map is answered), point AS0's page tables into it and boot the MCU: the firmware
        model walks them (device DMA)."""
        rng = self.rng
        base = rng.choice(RAM_BASES)
        kind = rng.choice(("memfd_shrinks", "memfd_short_unsealed", "memfd_short",
                           "memfd_sealed", "memfd_unsealed"))
        out = []
        if rng.random() < 0.7:  # make room: earlier maps may cover the address
            out.append(self._msg(mid(), DMA_UNMAP, struct.pack("<IIQQ", 24, 2, 0, 0),
                                 "seq-unmap-all", flags=0))
        out.append(self._msg(mid(), DMA_MAP, struct.pack("<IIQQQ", 32, 3, 0, base, 0x10000),
                             "seq-map", fds=(kind,), flags=0))
        stage = out
        out = []
        table = base + rng.choice((0x0, 0x2000, 0x8000, 0xF000))
        for off, value in ((AS_TRANSTAB, table), (AS_TRANSTAB + 4, table >> 32),
                           (AS_TRANSCFG, TRANSCFG_48), (AS_TRANSCFG + 4, 0),
                           (AS_MEMATTR, MEMATTR), (AS_MEMATTR + 4, MEMATTR >> 32),
                           (AS_COMMAND, 1)):
            out.append(self._w32(mid(), AS0 + off, value, "seq-as0"))
        if rng.random() < 0.5:
            out.append(self._w32(mid(), GPU_CMD, 0x101, "seq-reset"))  # soft reset first
        out.append(self._w32(mid(), MCU_CONTROL, rng.choice((1, 2)), "seq-boot"))
        out.append(self._msg(mid(), REGION_READ, struct.pack("<QII", 0x704, 0, 4), "seq-status",
                             flags=0))
        return [stage, out]

    def irq_storm(self, mid: Callable[[], int]) -> list[list[Case]]:
        """Give the GPU interrupt a trigger (good or junk), then many edges on it."""
        rng = self.rng
        kind = rng.choice(("eventfd", "eventfd_full", "pipe_w_held", "socket_held",
                           "pipe_w", "eventfd"))
        if rng.random() < 0.7:  # MSI-X vector 2 is the GPU interrupt
            setup = struct.pack("<IIIII", 20, 4 | 32, 2, 2, 1)
        else:  # INTx: automasked, so unmask between edges
            setup = struct.pack("<IIIII", 20, 4 | 32, 0, 0, 1)
        out = [self._msg(mid(), SET_IRQS, setup, "seq-irq-set", fds=(kind,), flags=0),
               self._w32(mid(), GPU_INT_MASK, 1, "seq-irq-mask")]
        for _ in range(rng.randrange(1, 300)):
            out.append(self._w32(mid(), GPU_INT_RAWSTAT, 1, "seq-irq-raise"))
            out.append(self._w32(mid(), GPU_INT_CLEAR, 1, "seq-irq-clear"))
            if setup[8] == 0:
                out.append(self._msg(mid(), SET_IRQS, struct.pack("<IIIII", 20, 1 | 16, 0, 0, 1),
                                     "seq-irq-unmask", flags=NO_REPLY))
        return [out]

    # -- generators ------------------------------------------------------------------------
    def bar0_read(self, mid: int) -> Case:
        rng = self.rng
        off = rng.choice(BAR0_REGS) if rng.random() < 0.8 else rng.randrange(BAR0_SIZE)
        count = rng.choice((4, 4, 4, 8, 1, 2))
        return self._msg(mid, REGION_READ, struct.pack("<QII", off, 0, count), "bar0-read")

    def bar0_write(self, mid: int) -> Case:
        rng = self.rng
        off = rng.choice(BAR0_REGS) if rng.random() < 0.9 else rng.randrange(BAR0_SIZE)
        count = rng.choice((4, 4, 4, 8, 1, 2))
        value = self._u64() & ((1 << (8 * count)) - 1)
        payload = struct.pack("<QII", off, 0, count) + value.to_bytes(count, "little")
        return self._msg(mid, REGION_WRITE, payload, "bar0-write")

    def region_access(self, mid: int) -> Case:
        rng = self.rng
        region = rng.choice((0, 0, 1, 2, 2, 3, 5, 6, 7, 8, 9, rng.getrandbits(32)))
        off = rng.choice((0, 1, 3, 0xFFC, 0xFFF, 0x1000, 0x10000, 0x10001, 0xF00, 0x1FFFFC,
                          rng.randrange(BAR0_SIZE), self._u64()))
        count = rng.choice((0, 1, 3, 5, 7, 12, 16, 100, 4096, 4097, 65536, MAX_DATA_XFER,
                            MAX_DATA_XFER + 1, self._u32()))
        if rng.random() < 0.5:
            return self._msg(mid, REGION_READ, struct.pack("<QII", off, region, count),
                             "region-read")
        n = count if count <= MAX_DATA_XFER else rng.choice((0, 8, 4096))
        if rng.random() < 0.2:
            n = rng.randrange(0, 64)  # count and data disagree
        data = (rng.randbytes(min(n, 4096)) * (n // 4096 + 1))[:n]
        payload = struct.pack("<QII", off, region, count) + data
        return self._msg(mid, REGION_WRITE, payload, "region-write")

    def config_access(self, mid: int) -> Case:
        rng = self.rng
        off, count = rng.randrange(0, 0x110), rng.choice((1, 2, 4, 8, 256))
        if rng.random() < 0.5:
            return self._msg(mid, REGION_READ, struct.pack("<QII", off, CONFIG, count),
                             "config-read")
        payload = struct.pack("<QII", off, CONFIG, count) + rng.randbytes(count)
        return self._msg(mid, REGION_WRITE, payload, "config-write")

    def dma_map(self, mid: int) -> Case:
        rng = self.rng
        size = rng.choice((0x1000, 0x2000, 0x10000, 0x800, 0, 0x20000, self._u64()))
        offset = rng.choice((0, 0, 0x1000, 0x8000, 0x10, 0xF000, self._u64()))
        addr = rng.choice(RAM_BASES) + rng.choice((0, 0x1000, 0x10000, 0x800, 0x200000))
        if rng.random() < 0.1:
            addr = self._u64()
        flags = rng.choice((1, 3, 3, 3, 2, 0, 4 | 3, 8 | 3, 0x10, self._u32()))
        argsz = 32 if rng.random() < 0.85 else self._u32()
        payload = struct.pack("<IIQQQ", argsz, flags, offset, addr, size)
        if rng.random() < 0.1:
            payload = payload[: rng.randrange(len(payload))] or payload + bytes(8)
        kinds: tuple[str, ...] = ()
        if rng.random() < 0.6:
            kinds = (rng.choice(("memfd_sealed", "memfd_sealed", "memfd_unsealed",
                                 "memfd_short", "memfd_grow_only", *FdFactory.KINDS)),)
            if rng.random() < 0.05:
                kinds = kinds * 2
        return self._msg(mid, DMA_MAP, payload, "dma-map", fds=kinds)

    def dma_unmap(self, mid: int) -> Case:
        rng = self.rng
        flags = rng.choice((0, 0, 0, 2, 1, 4, self._u32()))
        addr = rng.choice(RAM_BASES) + rng.choice((0, 0x1000, 0x10000))
        size = rng.choice((0x1000, 0x2000, 0x10000, 0))
        if flags == 2 and rng.random() < 0.7:
            addr = size = 0
        argsz = 24 if rng.random() < 0.9 else self._u32()
        return self._msg(mid, DMA_UNMAP, struct.pack("<IIQQ", argsz, flags, addr, size),
                         "dma-unmap", fds=self._fd_kinds(0.03))

    def set_irqs(self, mid: int) -> Case:
        rng = self.rng
        index = rng.choice((0, 2, 2, 3, 1, 4, 5, self._u32()))
        data = rng.choice((1, 2, 4, 4))
        action = rng.choice((8, 16, 32, 32))
        flags = data | action if rng.random() < 0.9 else self._u32()
        start = rng.choice((0, 0, 1, 2, 3, self._u32()))
        count = rng.choice((0, 1, 1, 2, 3, 4, self._u32()))
        bools = rng.randbytes(rng.choice((0, count if count < 16 else 1, 3)))
        argsz = 20 + len(bools) if rng.random() < 0.9 else self._u32()
        payload = struct.pack("<IIIII", argsz, flags, index, start, count) + bools
        kinds: tuple[str, ...] = ()
        if data == 4 and rng.random() < 0.7 and 0 < count <= 4:
            good = rng.random() < 0.7
            kinds = tuple("eventfd" if good else rng.choice(FdFactory.KINDS)
                          for _ in range(count if rng.random() < 0.9 else count + 1))
        return self._msg(mid, SET_IRQS, payload, "set-irqs", fds=kinds)

    def info(self, mid: int) -> Case:
        rng = self.rng
        cmd = rng.choice((DEVICE_GET_INFO, GET_REGION_INFO, GET_IRQ_INFO))
        argsz = rng.choice((16, 32, 56, 64, 8, 0, self._u32()))
        index = rng.choice((0, 1, 2, 3, 6, 7, 8, 9, self._u32()))
        if cmd == GET_REGION_INFO:
            payload = struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0)
        else:
            payload = struct.pack("<IIII", argsz, 0, index, 0)
        if rng.random() < 0.15:
            payload = payload[: rng.randrange(len(payload) + 1)]
        return self._msg(mid, cmd, payload, "info", fds=self._fd_kinds(0.03))

    def write_multi(self, mid: int) -> Case:
        rng = self.rng
        n = rng.choice((1, 2, 5, 200, 1024, 1025, 3000))
        wrs = b"".join(
            struct.pack("<QII", rng.choice(BAR0_REGS) if rng.random() < 0.8 else self._u64(),
                        rng.choice((0, 0, 2, 7, 9)), rng.choice((4, 4, 1, 2, 8, 0, 9)))
            + rng.randbytes(8)
            for _ in range(min(n, 64))
        )
        wrs = (wrs * (n // 64 + 1))[: 24 * n]
        wr_cnt = n if rng.random() < 0.9 else self._u64()
        return self._msg(mid, REGION_WRITE_MULTI, struct.pack("<Q", wr_cnt) + wrs,
                         "write-multi")

    def reset(self, mid: int) -> Case:
        return self._msg(mid, DEVICE_RESET, b"", "reset")

    def version_again(self, mid: int) -> Case:
        return self._msg(mid, VERSION, struct.pack("<HH", 0, 0) + b"{}\0", "version-again")

    def unsupported(self, mid: int) -> Case:
        rng = self.rng
        cmd = rng.choice((0, GET_REGION_IO_FDS, DMA_READ, DMA_WRITE, 14, DEVICE_FEATURE,
                          MIG_DATA_READ, MIG_DATA_WRITE, 19, rng.getrandbits(16)))
        return self._msg(mid, cmd, rng.randbytes(rng.choice((0, 8, 16, 32))), "unsupported",
                         fds=self._fd_kinds(0.03))

    def random_payload(self, mid: int) -> Case:
        rng = self.rng
        cmd = rng.choice((DMA_MAP, DMA_UNMAP, DEVICE_GET_INFO, GET_REGION_INFO, GET_IRQ_INFO,
                          SET_IRQS, REGION_READ, REGION_WRITE, REGION_WRITE_MULTI, VERSION))
        n = rng.choice((0, 1, 4, 12, 16, 20, 24, 31, 32, 33, 48, 100, 1000))
        return self._msg(mid, cmd, rng.randbytes(n), "random-payload", fds=self._fd_kinds(0.05))

    def odd_type(self, mid: int) -> Case:
        rng = self.rng
        mtype = rng.choice((2, 3, 0xF, 0x8))
        c = self._msg(mid, rng.choice((DEVICE_GET_INFO, REGION_READ)), struct.pack(
            "<QII", 0, 0, 4), "odd-type", flags=mtype | rng.choice((0, ERROR)))
        return c

    def short_header(self, mid: int) -> Case:
        """A header whose size is below 16: the server takes the 16 bytes and replies."""
        rng = self.rng
        flags = NO_REPLY if rng.random() < 0.1 else 0
        cmd = rng.choice((1, 4, 9, 99))
        return Case(HDR.pack(mid, cmd, rng.randrange(16), flags, 0), (), 0 if flags else 1,
                    mid, cmd, "short-header")

    def dma_reply_junk(self, mid: int) -> Case:
        """A reply nobody asked for (type REPLY): the server logs it, answers nothing."""
        rng = self.rng
        payload = rng.randbytes(rng.choice((0, 16, 20)))
        return Case(HDR.pack(mid, rng.choice((DMA_READ, DMA_WRITE, 1)), 16 + len(payload),
                             REPLY | rng.choice((0, ERROR)), rng.getrandbits(8)) + payload, (),
                    0, mid, 0, "stray-reply")

    def oversized(self, mid: int) -> Case:
        """Bigger than the server's maximum: E2BIG, and the bytes are drained."""
        rng = self.rng
        size = MAX_MSG + rng.choice((1, 16, 4096))
        cmd = rng.choice((REGION_WRITE, DMA_MAP))
        return Case(HDR.pack(mid, cmd, size, 0, 0) + bytes(size - 16), (), 1, mid, cmd,
                    "oversized")

    def garbage(self) -> bytes:
        """Bytes with no framing at all: only sent right before hanging up."""
        return self.rng.randbytes(self.rng.randrange(1, 2048))


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)

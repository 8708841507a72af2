"""The architectural state of one command stream, and what a run of it reports.

:class:`CsExecState` is what a CS slot holds (32-bit registers, ring pointers, call stack,
error state, scoreboard/heap/progress bookkeeping) and what a suspend buffer preserves;
:class:`RunResult` says why the interpreter stopped; :class:`SyncWait` is the condition a
stream blocked in SYNC_WAIT waits for, as CS_STATUS_WAIT reports it (docs/command-streams.md).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Literal

from ..mmu import MmuFault
from .iface import (
    CS_BLOCKED_SYNC_WAIT,
    CS_STATUS_WAIT_SYNC,
    CS_STATUS_WAIT_SYNC_64B,
    CS_STATUS_WAIT_SYNC_COND_GT,
    CS_STATUS_WAIT_SYNC_COND_LE,
    CS_STATUS_WAIT_SYNC_COND_SHIFT,
)

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF

#: Maximum number of nested linear buffers (CALL depth) before CS_CALL_STACK_OVERFLOW.
CALL_STACK_DEPTH = 8

#: Work items counted in ``CsExecState.work`` (index = position).
WORK_KINDS = (
    "compute",
    "compute_indirect",
    "tiling",
    "idvs",
    "fragment",
    "fullscreen",
    "finish_tiling",
    "finish_fragment",
)

RESULT_KINDS = ("idle", "budget", "blocked_sync", "blocked_sb", "mmu_fault", "lock_stall",
                "fatal", "fault", "tiler_oom", "heap_wait")
#: A call-stack frame that returns to the ring without completing a ring instruction: an
#: exception handler entered while the stream stood on a ring instruction (re-executed).
RING_FRAME = (M64, M64)
#: SET_EXCEPTION_HANDLER type of the tiler out-of-memory handler (genxml "CS Exception type")
EXC_TILER_OOM = 2
#: Endpoints a stream's work items occupy (compute, tiler, fragment; csf/workload.py).
ENDPOINT_COUNT = 3


@dataclass(slots=True)
class SyncWait:
    """A CS blocked in SYNC_WAIT: unblocked when ``*ptr`` (``cond``) ``value``."""

    ptr: int
    value: int
    cond: Literal["le", "gt"]  # unblocks when *ptr <= value / *ptr > value
    is_64: bool

    def satisfied(self, current: int) -> bool:
        return current > self.value if self.cond == "gt" else current <= self.value

    @property
    def blocked_reason(self) -> int:
        """CS output ``status_blocked_reason`` while blocked on this wait."""
        return CS_BLOCKED_SYNC_WAIT

    def status_wait(self) -> int:
        """The CS output ``status_wait`` word: SYNC wait, 64-bit flag, condition."""
        cond = CS_STATUS_WAIT_SYNC_COND_GT if self.cond == "gt" else CS_STATUS_WAIT_SYNC_COND_LE
        return (CS_STATUS_WAIT_SYNC | (cond << CS_STATUS_WAIT_SYNC_COND_SHIFT)
                | (CS_STATUS_WAIT_SYNC_64B if self.is_64 else 0))


@dataclass(slots=True)
class RunResult:
    """Why :meth:`CsInterpreter.run` returned (``kind`` is one of :data:`RESULT_KINDS`)."""

    kind: str
    instructions: int = 0
    sync_update: bool = False  # a system-scope SYNC_ADD/SET ran (-> CSG SYNC_UPDATE)
    csg_sync_update: bool = False  # a CSG-scope SYNC_ADD/SET ran (wakes CSes of this CSG only)
    jobs: int = 0  # system-scope SYNC_ADDs run from the ring itself (kernel job completions)
    cmd_ptr: int = 0  # VA of the current instruction (status_cmd_ptr)
    fault: MmuFault | None = None  # mmu_fault: the fault
    exception_type: int = 0  # fatal/fault: CS_FATAL/CS_FAULT.EXCEPTION_TYPE
    exception_data: int = 0  # fatal/fault: EXCEPTION_DATA (24 bits)
    info: int = 0  # fatal/fault: CS_FATAL_INFO/CS_FAULT_INFO; heap_wait: 1 = fragments pending
    wait: SyncWait | None = None  # blocked_sync: the wait condition
    until: float = 0.0  # blocked_sb: when the awaited work completes (monotonic s; inf: never)
    sb_mask: int = 0  # blocked_sb: the scoreboard entries awaited (0: the progress counter)
    #: tiler_oom/heap_wait: the heap context's (VT started, VT completed, fragment completed)
    counters: tuple[int, int, int] = (0, 0, 0)
    heap_returned: bool = False  # FINISH_FRAGMENT gave chunks back to a heap
    handler_set: bool = False  # SET_EXCEPTION_HANDLER ran


class CsExecState:
    """Architectural state of one command stream (what a suspend buffer preserves)."""

    __slots__ = (
        "as_nr",
        "end",
        "ep_until",
        "error",
        "exc_handlers",
        "extract",
        "flushes",
        "heap_ctx",
        "heap_ops",
        "heap_reply",
        "in_buf",
        "insert",
        "oom_null",
        "pc",
        "progress",
        "progress_due",
        "reg_count",
        "regs",
        "req_resource",
        "ring_base",
        "ring_size",
        "sb_endpoint",
        "sb_other",
        "sb_until",
        "scoreboards",
        "stack",
        "wait_mask",
        "work",
    )

    def __init__(self, reg_count: int = 96, scoreboards: int = 8) -> None:
        if not 1 <= reg_count <= 256:
            raise ValueError(f"reg_count {reg_count} outside 1..256")
        if not 1 <= scoreboards <= 16:
            raise ValueError(f"scoreboards {scoreboards} outside 1..16")
        self.reg_count = reg_count
        self.scoreboards = scoreboards
        self.regs: list[int] = [0] * reg_count
        self.ring_base = 0
        self.ring_size = 0
        self.extract = 0  # monotonic byte offset of the next ring instruction
        self.insert = 0
        self.as_nr = 0
        self.in_buf = False  # executing a CALL/JUMP'ed linear buffer [pc, end)
        self.pc = 0
        self.end = 0
        self.stack: list[tuple[int, int]] = []  # return points (pc, end) of outer linear buffers
        self.error = 0  # CS error state: 1 after a rejected sync wait / reported fault
        self.sb_endpoint = 0  # SET_SB_ENTRY
        self.sb_other = 0
        self.wait_mask = 0  # last WAIT mask
        self.heap_ctx = 0  # HEAP_SET
        self.heap_ops = [0, 0, 0, 0]  # HEAP_OPERATION count per operation
        # tiler OOM (csf/tiler_heap.py): the chunk range the host granted, not yet linked
        # into the heap; oom_null: the host answered the last TILER_OOM with no chunk
        self.heap_reply = (0, 0)
        self.oom_null = False
        self.progress = 0  # progress counter (u64)
        self.req_resource = 0  # REQ_RESOURCE mask (status_req_resource)
        self.exc_handlers: dict[int, tuple[int, int]] = {}  # type -> (address, length)
        self.work = [0] * len(WORK_KINDS)  # RUN_*/FINISH_* executed
        self.flushes = 0  # FLUSH_CACHE2 that flushed
        # work items in flight (csf/workload.py), as monotonic completion times (0: none)
        self.sb_until = [0.0] * scoreboards  # per scoreboard entry: its last item's end
        self.ep_until = [0.0] * ENDPOINT_COUNT  # per endpoint: when it is free again
        self.progress_due: list[float] = []  # progress increments still to come

    # -- convenience -------------------------------------------------------------------
    def reg64(self, r: int) -> int:
        return self.regs[r] | (self.regs[r + 1] << 32)

    def set_reg64(self, r: int, value: int) -> None:
        self.regs[r] = value & M32
        self.regs[r + 1] = (value >> 32) & M32

    def work_items(self) -> dict[str, int]:
        return dict(zip(WORK_KINDS, self.work, strict=True))

    @property
    def call_depth(self) -> int:
        return len(self.stack) + (1 if self.in_buf else 0)

    def handler(self, exc_type: int) -> tuple[int, int] | None:
        """The registered exception handler of ``exc_type`` (address 0 or length 0: none)."""
        h = self.exc_handlers.get(exc_type)
        return h if h is not None and h[0] and h[1] else None

    def enter_handler(self, addr: int, length: int) -> bool:
        """Run the exception handler [addr, addr+length) like a CALL made where the stream
        stands: the instruction it stood on runs again when the handler returns (*inferred*).
        False if the call stack has no room (the exception stays pending)."""
        if addr & 7 or length & 7 or self.call_depth + 1 >= CALL_STACK_DEPTH:
            return False
        self.stack.append((self.pc, self.end) if self.in_buf else RING_FRAME)
        self.in_buf = True
        self.pc, self.end = addr, addr + length
        return True

    @property
    def cmd_ptr(self) -> int:
        """VA of the next instruction to execute (status_cmd_ptr)."""
        if self.in_buf:
            return self.pc & M64
        size = self.ring_size
        return (self.ring_base + (self.extract & (size - 1) if size > 0 else 0)) & M64

    # -- suspend buffer image ----------------------------------------------------------
    _MAGIC = b"CSIS"
    _VERSION = 3
    _HDR = struct.Struct("<4sHHBBBHQIQQIQQBBHQQII8Q4IQQ")
    _FRAME = struct.Struct("<QQ")
    _EXC = struct.Struct("<BQI")

    def serialise(self, now: float | None = None) -> bytes:
        """The state as a self-describing byte image (for the CS suspend buffer). Work in
        flight is saved as the microseconds it still needs at ``now``: it resumes with the
        stream (the suspend preserves outstanding work, as the hardware's does)."""
        now = time.monotonic() if now is None else now
        h = self._HDR.pack(
            self._MAGIC,
            self._VERSION,
            self.reg_count,
            self.scoreboards,
            (1 if self.in_buf else 0) | ((self.error & 1) << 1) | (4 if self.oom_null else 0),
            len(self.stack),
            len(self.exc_handlers),
            self.ring_base & M64,
            self.ring_size & M32,
            self.extract & M64,
            self.insert & M64,
            self.as_nr & M32,
            self.pc & M64,
            self.end & M64,
            self.sb_endpoint & 0xF,
            self.sb_other & 0xF,
            self.wait_mask & 0xFFFF,
            self.heap_ctx & M64,
            self.progress & M64,
            self.req_resource & M32,
            self.flushes & M32,
            *(v & M64 for v in self.work),
            *(v & M32 for v in self.heap_ops),
            self.heap_reply[0] & M64,
            self.heap_reply[1] & M64,
        )
        parts = [h]
        parts += [self._FRAME.pack(p & M64, e & M64) for p, e in self.stack]
        parts += [
            self._EXC.pack(t & 0xFF, a & M64, n & M32) for t, (a, n) in self.exc_handlers.items()
        ]
        parts.append(struct.pack(f"<{self.reg_count}I", *(r & M32 for r in self.regs)))

        def left(t: float) -> int:  # M32: never (a hung item)
            if not t:
                return 0
            return M32 if t == float("inf") else min(M32 - 1, max(1, round((t - now) * 1e6)))

        due = [left(t) for t in self.progress_due]
        parts.append(struct.pack(f"<{self.scoreboards + ENDPOINT_COUNT}IH{len(due)}I",
                                 *(left(t) for t in self.sb_until),
                                 *(left(t) for t in self.ep_until), len(due), *due))
        return b"".join(parts)

    @classmethod
    def deserialise(cls, data: bytes, now: float | None = None) -> CsExecState:
        """Inverse of :meth:`serialise` (work in flight resumes at ``now``); anything
        malformed raises ValueError."""
        try:
            return cls._deserialise(bytes(data), time.monotonic() if now is None else now)
        except ValueError:
            raise
        except (struct.error, TypeError, OverflowError, IndexError) as e:
            raise ValueError(f"malformed CS state image: {e}") from e

    @classmethod
    def _deserialise(cls, data: bytes, now: float) -> CsExecState:
        if len(data) < cls._HDR.size:
            raise ValueError("CS state image too short")
        f = cls._HDR.unpack_from(data, 0)
        magic, version, reg_count, sbs, flags, nstack, nexc = f[:7]
        if magic != cls._MAGIC or version != cls._VERSION:
            raise ValueError("not a CS state image (bad magic/version)")
        if flags & ~7 or nstack >= CALL_STACK_DEPTH:
            raise ValueError("CS state image has invalid flags or call depth")
        expect = (cls._HDR.size + nstack * cls._FRAME.size + nexc * cls._EXC.size
                  + 4 * reg_count + 4 * (sbs + ENDPOINT_COUNT) + 2)
        if len(data) < expect:
            raise ValueError(f"CS state image is {len(data)} bytes, expected {expect}+")
        (ndue,) = struct.unpack_from("<H", data, expect - 2)
        if len(data) != expect + 4 * ndue:
            raise ValueError(f"CS state image is {len(data)} bytes, expected "
                             f"{expect + 4 * ndue}")
        st = cls(reg_count, sbs)
        (
            st.ring_base,
            st.ring_size,
            st.extract,
            st.insert,
            st.as_nr,
            st.pc,
            st.end,
            st.sb_endpoint,
            st.sb_other,
            st.wait_mask,
            st.heap_ctx,
            st.progress,
            st.req_resource,
            st.flushes,
        ) = f[7:21]
        st.work = list(f[21 : 21 + len(WORK_KINDS)])
        st.heap_ops = list(f[21 + len(WORK_KINDS) : 25 + len(WORK_KINDS)])
        st.heap_reply = (f[25 + len(WORK_KINDS)], f[26 + len(WORK_KINDS)])
        st.in_buf = bool(flags & 1)
        st.error = (flags >> 1) & 1
        st.oom_null = bool(flags & 4)
        if nstack and not st.in_buf:
            raise ValueError("CS state image has a call stack but no active buffer")
        off = cls._HDR.size
        for _ in range(nstack):
            st.stack.append(cls._FRAME.unpack_from(data, off))
            off += cls._FRAME.size
        for _ in range(nexc):
            t, a, n = cls._EXC.unpack_from(data, off)
            if t in st.exc_handlers:
                raise ValueError("CS state image repeats an exception handler")
            st.exc_handlers[t] = (a, n)
            off += cls._EXC.size
        st.regs = list(struct.unpack_from(f"<{reg_count}I", data, off))
        off += 4 * reg_count
        times = struct.unpack_from(f"<{sbs + ENDPOINT_COUNT}I", data, off)
        off += 4 * (sbs + ENDPOINT_COUNT) + 2
        due = struct.unpack_from(f"<{ndue}I", data, off)

        def at(us: int) -> float:
            if us == M32:
                return float("inf")
            return now + us * 1e-6 if us else 0.0

        st.sb_until = [at(us) for us in times[:sbs]]
        st.ep_until = [at(us) for us in times[sbs:]]
        st.progress_due = [at(us) for us in due]
        return st

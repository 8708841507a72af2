"""The tiler heap: RUN_IDVS/RUN_TILING take heap chunks, FINISH_FRAGMENT gives them back.

A tiler heap is a list of chunks the driver allocated (panthor_heap.c: each chunk starts with
a 64-byte header whose first u64 links the next chunk as ``(va & ~0xFFF) | size >> 12``) and
a 32-byte heap context the driver zeroes and never reads again: its layout is the
firmware's. Ours (docs/firmware.md, "Tiler heap"):

* the heap context (HEAP_SET address) holds the free-chunk list head and the three counters
  HEAP_OPERATION and FINISH_FRAGMENT advance (VT started, VT completed, fragment completed),
  which the TILER_OOM event reports;
* the Tiler Context of the draw (Mesa's descriptor, staging registers r40:r41) records the run
  of chunks this render pass filled (``Completed top``/``Completed bottom``, top = newest,
  linked top to bottom through the chunk headers) and, in its private state, the bytes used
  in the top chunk; the first draw of a heap takes its first chunk from the Tiler Heap
  descriptor the Tiler Context points to;
* a draw consumes :data:`BYTES_PER_VERTEX` per vertex and instance (r33 x r34, capped at
  :data:`MAX_DRAW_BYTES`): a deterministic stand-in for the polygon lists a tiler writes;
* when the free list cannot cover a draw, nothing is taken and the instruction stops with
  ``tiler_oom`` (the firmware asks the host for memory) or, after the host answered with no
  chunk, ``heap_wait`` (the firmware waits for fragment work to return chunks or runs the
  TILER_OOM exception handler);
* FINISH_FRAGMENT splices the run [first, last] onto the free list.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from ..exceptions import ExceptionType
from ..mmu import Access
from .cs_state import M32, M64, CsExecState, RunResult

if TYPE_CHECKING:
    from .interp import CsInterpreter

# -- heap context (ours; 32 bytes, zeroed by the driver at creation) -----------------------
HEAP_CTX_FREE = 0x00  # u64 chunk pointer: head of the free-chunk list (0: empty)
HEAP_CTX_VT_STARTED = 0x08  # u32, HEAP_OPERATION 0
HEAP_CTX_VT_COMPLETED = 0x0C  # u32, HEAP_OPERATION 1
HEAP_CTX_FRAG_COMPLETED = 0x10  # u32, HEAP_OPERATION 3 / FINISH_FRAGMENT bit 0
HEAP_CTX_FLAGS = 0x14  # u32: HEAP_SEEDED once the free list was taken from a descriptor
HEAP_CTX_SIZE = 0x20
HEAP_SEEDED = 1
#: HEAP_OPERATION operation -> the heap-context counter it advances
HEAP_OP_COUNTER = {0: HEAP_CTX_VT_STARTED, 1: HEAP_CTX_VT_COMPLETED, 3: HEAP_CTX_FRAG_COMPLETED}

# -- Mesa's Tiler Context (genxml v10 "Tiler Context", 128 bytes) --------------------------
TILER_CTX_HEAP = 0x18  # address of the Tiler Heap descriptor
TILER_CTX_COMPLETED_TOP = 0x28  # chunk pointer: newest chunk of this pass (0: none yet)
TILER_CTX_COMPLETED_BOTTOM = 0x30  # chunk pointer: first chunk of this pass
TILER_CTX_USED = 0x60  # private state word 0 (ours): bytes used in the top chunk
TILER_CTX_READ = 0x64  # bytes of the Tiler Context the tiler reads
# -- Mesa's Tiler Heap descriptor (genxml v10 "Tiler Heap") --------------------------------
HEAP_DESC_SIZE = 0x04  # u32 chunk size
HEAP_DESC_BASE = 0x08  # u64 first chunk

#: Staging registers of RUN_IDVS (Mesa's CSF draw): tiler context, vertex and instance count
#: (*inferred*: RUN_TILING uses the same ones).
SR_TILER_CTX = 40
SR_VERTEX_COUNT = 33
SR_INSTANCE_COUNT = 34

CHUNK_HEADER = 64
PAGE = 0x1000
BYTES_PER_VERTEX = 16
MAX_DRAW_BYTES = 16 << 20
#: Most chunks one draw may take (32 MiB of panthor's smallest chunks, twice the largest
#: draw): a longer walk means a broken list (bounds the work of one instruction)
MAX_DRAW_CHUNKS = 256

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def chunk_va(ptr: int) -> int:
    return ptr & ~(PAGE - 1) & M64


def chunk_size(ptr: int) -> int:
    return (ptr & (PAGE - 1)) * PAGE


def chunk_ptr(va: int, size: int) -> int:
    """The chunk-header ``next`` encoding panthor writes (panthor_alloc_heap_chunk)."""
    return (va & ~(PAGE - 1) & M64) | ((size // PAGE) & (PAGE - 1))


def draw_bytes(st: CsExecState) -> int:
    """Heap bytes one draw consumes (deterministic stand-in for its polygon lists)."""
    regs = st.regs
    if st.reg_count <= SR_INSTANCE_COUNT:
        return 0
    return min(MAX_DRAW_BYTES, BYTES_PER_VERTEX * regs[SR_VERTEX_COUNT]
               * max(1, regs[SR_INSTANCE_COUNT]))


def _r64(it: CsInterpreter, st: CsExecState, va: int) -> int | RunResult:
    data = it.read(st, va, 8, Access.READ)
    return data if isinstance(data, RunResult) else _U64.unpack(data)[0]


def _w64(it: CsInterpreter, st: CsExecState, va: int, v: int) -> RunResult | None:
    return it.write(st, va & M64, _U64.pack(v & M64))


def _w32(it: CsInterpreter, st: CsExecState, va: int, v: int) -> RunResult | None:
    return it.write(st, va & M64, _U32.pack(v & M32))


def counters(it: CsInterpreter, st: CsExecState) -> tuple[int, int, int] | RunResult:
    """(VT started, VT completed, fragment completed) of the stream's heap context."""
    data = it.read(st, st.heap_ctx + HEAP_CTX_VT_STARTED, 12, Access.READ)
    if isinstance(data, RunResult):
        return data
    vs, ve, fe = struct.unpack("<3I", data)
    return vs, ve, fe


def heap_operation(it: CsInterpreter, st: CsExecState, op: int) -> RunResult | None:
    """HEAP_OPERATION: advance the heap context's counter (no heap context: nothing)."""
    if not st.heap_ctx:
        return None
    va = (st.heap_ctx + HEAP_OP_COUNTER[op]) & M64
    data = it.read(st, va, 4, Access.ATOMIC)
    if isinstance(data, RunResult):
        return data
    return _w32(it, st, va, _U32.unpack(data)[0] + 1)


def _push_free(it: CsInterpreter, st: CsExecState, first: int, last: int) -> RunResult | None:
    """Link the chunk run [first, last] (chunk pointers, linked first to last) at the head of
    the heap's free list."""
    free = _r64(it, st, st.heap_ctx + HEAP_CTX_FREE)
    if isinstance(free, RunResult):
        return free
    return _w64(it, st, chunk_va(last), free) or _w64(it, st, st.heap_ctx + HEAP_CTX_FREE, first)


def give_back(it: CsInterpreter, st: CsExecState, first: int, last: int,
              count_fragment: bool) -> RunResult | None:
    """FINISH_FRAGMENT: the chunk run [first, last] joins the heap's free list; bit 0 counts
    a completed fragment pass."""
    if not st.heap_ctx:
        return None
    if first and last:
        r = _push_free(it, st, first, last)
        if r is not None:
            return r
        it.heap_returned = True
    if count_fragment:
        return heap_operation(it, st, 3)
    return None


def _take_reply(it: CsInterpreter, st: CsExecState) -> RunResult | None:
    """Link the chunk range the host granted after TILER_OOM at the head of the free list."""
    r = _push_free(it, st, *st.heap_reply)
    if r is None:
        st.heap_reply = (0, 0)
        st.oom_null = False
    return r


def allocate(it: CsInterpreter, st: CsExecState, w: int) -> RunResult | None:
    """Take the heap memory one RUN_IDVS/RUN_TILING needs (None: done or not applicable;
    ``yield``: done, chunks taken, end the slice after the instruction)."""
    tctx = st.reg64(SR_TILER_CTX) if st.reg_count > SR_TILER_CTX + 1 else 0
    if not st.heap_ctx or not tctx:
        return None  # no heap context or no tiler context: the tiler allocates nothing
    heap = st.heap_ctx
    if st.heap_reply[0]:
        r = _take_reply(it, st)
        if r is not None:
            return r
    need = draw_bytes(st)
    if not need:
        return None
    tc = it.read(st, tctx, TILER_CTX_READ, Access.READ)
    if isinstance(tc, RunResult):
        return tc
    top = _U64.unpack_from(tc, TILER_CTX_COMPLETED_TOP)[0]
    bottom = _U64.unpack_from(tc, TILER_CTX_COMPLETED_BOTTOM)[0]
    used = _U32.unpack_from(tc, TILER_CTX_USED)[0]
    room = chunk_size(top) - used if top and used <= chunk_size(top) else 0
    if need <= room:
        return _w32(it, st, tctx + TILER_CTX_USED, used + need)
    hc = it.read(st, heap, HEAP_CTX_SIZE, Access.READ)
    if isinstance(hc, RunResult):
        return hc
    free = _U64.unpack_from(hc, HEAP_CTX_FREE)[0]
    if not _U32.unpack_from(hc, HEAP_CTX_FLAGS)[0] & HEAP_SEEDED:
        desc = _U64.unpack_from(tc, TILER_CTX_HEAP)[0]
        d = it.read(st, desc, 16, Access.READ)
        if isinstance(d, RunResult):
            return d
        size, base = _U32.unpack_from(d, HEAP_DESC_SIZE)[0], _U64.unpack_from(d, HEAP_DESC_BASE)[0]
        free = chunk_ptr(base, size) if base and size >= PAGE else 0
        r = (_w64(it, st, heap + HEAP_CTX_FREE, free)
             or _w32(it, st, heap + HEAP_CTX_FLAGS, HEAP_SEEDED))
        if r is not None:
            return r
    # walk the free list (reads only) until it covers the draw
    left = need - room
    taken: list[int] = []
    seen: set[int] = set()
    nxt = free
    while left > 0:
        if not nxt:
            return _out_of_memory(it, st)
        size = chunk_size(nxt)
        if (size <= CHUNK_HEADER or len(taken) >= MAX_DRAW_CHUNKS
                or chunk_va(nxt) in seen or chunk_va(nxt) == chunk_va(top)):
            # a chunk met twice is a cyclic list; too small or too many, a broken one: the
            # tiler endpoint fails (CS_FATAL CS_ENDPOINT_FAULT, *inferred*: a CS_FATAL code;
            # DATA_INVALID_FAULT is a CS_FAULT code)
            return RunResult("fatal", exception_type=int(ExceptionType.CS_ENDPOINT_FAULT),
                             info=nxt)
        seen.add(chunk_va(nxt))
        link = _r64(it, st, chunk_va(nxt))
        if isinstance(link, RunResult):
            return link
        taken.append(nxt)
        left -= size - CHUNK_HEADER
        nxt = link
    # commit: link the taken chunks onto this pass's run, newest on top
    prev = top
    for c in taken:
        r = _w64(it, st, chunk_va(c), prev)
        if r is not None:
            return r
        prev = c
    last_used = CHUNK_HEADER + (chunk_size(taken[-1]) - CHUNK_HEADER) + left  # left <= 0
    r = (_w64(it, st, heap + HEAP_CTX_FREE, nxt)
         or _w64(it, st, tctx + TILER_CTX_COMPLETED_TOP, taken[-1])
         or (None if bottom else _w64(it, st, tctx + TILER_CTX_COMPLETED_BOTTOM, taken[0]))
         or _w32(it, st, tctx + TILER_CTX_USED, last_used))
    if r is not None:
        return r
    st.oom_null = False
    # taking chunks walked guest memory: the firmware yields after this draw (its slice
    # ends), so a run of such draws cannot hold the MCU (the CS interpreter's budget counts
    # instructions, not memory accesses)
    return RunResult("yield")


def _out_of_memory(it: CsInterpreter, st: CsExecState) -> RunResult:
    """The free list cannot cover the draw: ask the host (``tiler_oom``) or, after it had
    no chunk to give, wait for chunks (``heap_wait``; ``info`` = 1 if fragment work that
    will return chunks is pending, i.e. VT completed > fragment completed)."""
    c = counters(it, st)
    if isinstance(c, RunResult):
        return c
    if not st.oom_null:
        return RunResult("tiler_oom", counters=c)
    _vs, ve, fe = c
    return RunResult("heap_wait", info=1 if ve != fe else 0, counters=c)


__all__ = [
    "BYTES_PER_VERTEX",
    "CHUNK_HEADER",
    "HEAP_CTX_FRAG_COMPLETED",
    "HEAP_CTX_FREE",
    "HEAP_CTX_VT_COMPLETED",
    "HEAP_CTX_VT_STARTED",
    "MAX_DRAW_BYTES",
    "TILER_CTX_COMPLETED_BOTTOM",
    "TILER_CTX_COMPLETED_TOP",
    "TILER_CTX_HEAP",
    "TILER_CTX_USED",
    "allocate",
    "chunk_ptr",
    "chunk_size",
    "chunk_va",
    "counters",
    "draw_bytes",
    "give_back",
    "heap_operation",
]

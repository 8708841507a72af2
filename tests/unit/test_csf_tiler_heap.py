"""The tiler heap and TILER_OOM (docs/firmware.md, "Tiler heap"), driven as panthor drives it.

What the driver relies on (panthor_sched.c group_process_tiler_oom, panthor_heap.c): the
firmware reports heap_address = the HEAP_SET address and counters with frag_end <= vt_end <
vt_start; the driver answers in CS input heap_start/heap_end (a new chunk, encoded
``va | size >> 12`` as panthor links chunks, or 0), acknowledges TILER_OOM and rings the CSG
doorbell. On a 0 answer the firmware waits for fragment work to return chunks, else runs the
TILER_OOM exception handler (kbase handle_oom_event; panvk registers it around its wait for
tiling), else the group makes no progress. Layouts of Mesa's Tiler Context / Tiler Heap come
from genxml v10; the heap context's layout is the firmware's (docs/firmware.md).
"""

from __future__ import annotations

import pytest
from support import cs_asm as A
from support import panthor_fw as pf
from support.csf_host import Host, Ring, doorbell_off
from support.panthor_fw import CsgInput, CsgOutput, CsInput

HEAP = 0x0300_0000  # heap context (32 bytes, zeroed as panthor_heap_create leaves it)
T1, T2 = HEAP + 0x100, HEAP + 0x200  # Tiler Contexts (Mesa, 128 bytes)
DESC = HEAP + 0x300  # Tiler Heap descriptor
DONE = HEAP + 0x400
HANDLER = HEAP + 0x800
CHUNKS = 0x0400_0000
CHUNK = 0x2000  # 8 KiB chunks: pointer low bits = 2 (pages)
C0, C1, C2 = (CHUNKS | 2), (CHUNKS + CHUNK) | 2, (CHUNKS + 2 * CHUNK) | 2
DRAW = 384  # vertices: 384 x 16 bytes = 6 KiB of an 8 KiB chunk (64-byte header)


def _host() -> tuple[Host, int, int]:
    h = Host.booted()
    heap_pa = h.alloc.page()
    h.user_vm.map(HEAP, heap_pa, 0x1000, xn=False)
    chunks_pa = h.alloc.page(16)
    h.user_vm.map(CHUNKS, chunks_pa, 0x10000)
    # Tiler Heap descriptor: Size (+4) = chunk size, Base (+8) = the first chunk
    h.ram.write_u32(heap_pa + 0x304, CHUNK)
    h.ram.write_u64(heap_pa + 0x308, CHUNKS)
    for t in (T1, T2):
        h.ram.write_u64(heap_pa + (t - HEAP) + 0x18, DESC)  # Tiler Context.Heap
    return h, heap_pa, chunks_pa


def _draw(tctx: int) -> list[int]:
    return [A.move48(40, tctx), A.move32(33, DRAW), A.move32(34, 1), A.run_idvs()]


def _prologue() -> list[int]:
    return [A.move48(0x50, HEAP), A.heap_set(0x50)]


def _done() -> list[int]:
    return [A.move48(0x52, DONE), A.move32(0x54, 1), A.sync_set32(0x52, 0x54)]


def _cs_in(h: Host, j: int = 0) -> int:
    return h.cs[0][j]["input_va"]


def _cs_out_va(h: Host, j: int = 0) -> int:
    return h.cs[0][j]["output_va"]


def _event(h: Host, bit: int, j: int = 0) -> bool:
    return bool((h.r32(_cs_in(h, j)) ^ h.r32(_cs_out_va(h, j))) & bit)


def _answer(h: Host, chunk: int, j: int = 0) -> None:
    """group_process_tiler_oom: heap_start = heap_end = chunk, ack TILER_OOM, ring the
    CSG doorbell for this stream."""
    si = _cs_in(h, j)
    h.put(si, CsInput, "heap_start", chunk)
    h.put(si, CsInput, "heap_end", chunk)
    h.update(si, h.r32(_cs_out_va(h, j)), pf.CS_TILER_OOM)
    c = h.csg[0]
    h.toggle(c["input_va"] + CsgInput.off("doorbell_req"),
             c["output_va"] + CsgOutput.off("doorbell_ack"), 1 << j)
    h.ring_csg(0)


def _u64(h: Host, pa_base: int, va: int) -> int:
    return h.ram.read_u64(pa_base + va - HEAP)


def test_draws_fill_the_first_chunk_without_asking_the_host() -> None:
    h, heap_pa, _chunks_pa = _host()
    h.start_group(0)
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), *_done()])
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 1
    assert not _event(h, pf.CS_TILER_OOM)
    assert _u64(h, heap_pa, T1 + 0x28) == C0 and _u64(h, heap_pa, T1 + 0x30) == C0
    assert h.ram.read_u32(heap_pa + 0x100 + 0x60) == 64 + DRAW * 16
    assert h.ram.read_u32(heap_pa + 0x08) == 1  # VT started


def test_heap_exhausted_raises_tiler_oom_and_the_granted_chunk_lets_the_draw_finish() -> None:
    h, heap_pa, chunks_pa = _host()
    h.start_group(0)
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), *_draw(T1), A.heap_operation(1),
            *_done()])
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 0, "the second draw cannot fit"
    assert _event(h, pf.CS_TILER_OOM)
    assert h.cs_out("heap_address") == HEAP
    vs, ve, fe = (h.cs_out("heap_vt_start"), h.cs_out("heap_vt_end"),
                  h.cs_out("heap_frag_end"))
    assert fe <= ve < vs, "panthor rejects anything else (-EINVAL, group killed)"
    # HEAP_OPERATION 0 (VT started) ran, HEAP_OPERATION 1 (VT completed) comes after the
    # stuck draw and no fragment work ran (docs/firmware.md "Tiler heap", heap context table)
    assert (vs, ve, fe) == (1, 0, 0)
    irq_req = h.r32(h.csg[0]["output_va"] + CsgOutput.off("cs_irq_req"))
    irq_ack = h.r32(h.csg[0]["input_va"] + CsgInput.off("cs_irq_ack"))
    assert (irq_req ^ irq_ack) & 1
    assert h.job_irq() & 1
    h.fw.sched.pump()  # nothing happens until the host answers
    assert h.ram.read_u32(heap_pa + 0x400) == 0
    _answer(h, C1)
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 1
    assert not _event(h, pf.CS_TILER_OOM)
    # the pass's run: C1 (newest) -> C0, used bytes in C1 = what the draw still needed
    assert _u64(h, heap_pa, T1 + 0x28) == C1 and _u64(h, heap_pa, T1 + 0x30) == C0
    assert h.ram.read_u64(chunks_pa + CHUNK) == C0
    room = CHUNK - (64 + DRAW * 16)
    assert h.ram.read_u32(heap_pa + 0x160) == 64 + DRAW * 16 - room
    assert h.ram.read_u64(heap_pa + 0x00) == 0  # free list empty


def test_finish_fragment_returns_the_run_to_the_free_list() -> None:
    h, heap_pa, _chunks_pa = _host()
    h.start_group(0)
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), A.heap_operation(1),
            A.move48(0x56, T1), A.load_multiple(0x58, 0x56, 0xF, 0x28),
            A.finish_fragment(last=0x5A, first=0x58) | 1, *_done()])
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 1
    assert h.ram.read_u64(heap_pa + 0x00) == C0  # free list head
    assert h.ram.read_u32(heap_pa + 0x10) == 1  # fragment completed (bit 0)


def test_no_chunk_and_no_handler_leaves_the_group_without_progress() -> None:
    h, heap_pa, _ = _host()
    h.start_group(0)
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), *_draw(T1), *_done()])
    h.fw.sched.pump()
    _answer(h, 0)  # panthor: heap at max_chunks -> -ENOMEM -> null chunk
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 0
    assert not _event(h, pf.CS_TILER_OOM), "not raised again without a handler"
    co = h.csg[0]["output_va"]
    assert not h.r32(co + CsgOutput.off("status_state")) & 1, "a stuck draw is not idle"
    h.now += h.fw.events.progress_timeout + 0.01
    h.fw.events.check_progress()
    assert (h.r32(co) ^ h.r32(h.csg[0]["input_va"])) & pf.CSG_PROGRESS_TIMER_EVENT


def _handler_program(h: Host, heap_pa: int) -> list[int]:
    """An incremental render (what panvk's handler does, reduced): FINISH_FRAGMENT of T1's
    run, the Tiler Context reset, a counter at DONE+8 bumped."""
    handler = [A.move48(60, T1), A.load_multiple(62, 60, 0xF, 0x28),
               A.finish_fragment(last=64, first=62) | 1,
               A.move48(66, 0), A.store_multiple(66, 60, 0x3, 0x28),
               A.store_multiple(66, 60, 0x3, 0x30), A.store_multiple(66, 60, 0x1, 0x60),
               A.move48(68, DONE + 8), A.move32(70, 1), A.sync_add32(68, 70)]
    for k, wd in enumerate(handler):
        h.ram.write_u64(heap_pa + 0x800 + 8 * k, wd)
    return handler


def test_no_chunk_runs_the_tiler_oom_exception_handler_then_retries_the_draw() -> None:
    """gallium's single-queue incremental render: the handler renders what was tiled
    (FINISH_FRAGMENT of the pass's run) and resets the Tiler Context; the draw is retried
    and takes the chunk back."""
    h, heap_pa, _ = _host()
    handler = _handler_program(h, heap_pa)
    h.start_group(0)
    h.push([*_prologue(), A.move48(76, HANDLER), A.move32(78, 8 * len(handler)),
            A.set_exception_handler(2, 76, 78), A.heap_operation(0), *_draw(T1), *_draw(T1),
            *_done()])
    h.fw.sched.pump()
    assert _event(h, pf.CS_TILER_OOM)
    _answer(h, 0)
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x408) == 1, "the handler ran once"
    assert h.ram.read_u32(heap_pa + 0x400) == 1, "the retried draw finished"
    assert h.ram.read_u32(heap_pa + 0x10) == 1  # the incremental fragment pass counted
    assert _u64(h, heap_pa, T1 + 0x28) == C0 and _u64(h, heap_pa, T1 + 0x30) == C0


def _second_stream(h: Host, ring: Ring, j: int = 1) -> None:
    """Program stream j of CSG 0 on ``ring`` (before start_group starts the group)."""
    si = _cs_in(h, j)
    h.ram.write_u64(ring.io_pa + 8, h.ram.read_u64(ring.io_pa + 0x1000))
    h.put(si, CsInput, "ringbuf_base", ring.va)
    h.put(si, CsInput, "ringbuf_size", 0x1000)
    h.put(si, CsInput, "ringbuf_input", ring.io_va)
    h.put(si, CsInput, "ringbuf_output", ring.io_va + 0x1000)
    h.put(si, CsInput, "config", pf.cs_config_doorbell(5))
    h.update(si, pf.CS_STATE_START | pf.CS_IDLE_SYNC_WAIT | pf.CS_IDLE_EMPTY,
             pf.CS_STATE_MASK | pf.CS_IDLE_SYNC_WAIT | pf.CS_IDLE_EMPTY)


def test_no_chunk_with_fragments_pending_waits_for_finish_fragment_on_another_stream() -> None:
    h, heap_pa, _ = _host()
    frag = h.add_ring()
    _second_stream(h, frag)
    h.start_group(0)
    # pass 1 tiled (VT completed) but not rendered; pass 2 needs more than the chunk left
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), A.heap_operation(1),
            A.heap_operation(0), *_draw(T2), *_done()])
    h.fw.sched.pump()
    assert _event(h, pf.CS_TILER_OOM)
    assert (h.cs_out("heap_vt_start"), h.cs_out("heap_vt_end"), h.cs_out("heap_frag_end")) \
        == (2, 1, 0)
    _answer(h, 0)  # panthor: renderpasses in flight > target -> -ENOMEM -> null chunk
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 0, "waits for fragment work"
    # the fragment stream renders pass 1 and returns its chunks
    h.push([*_prologue(), A.move48(0x56, T1), A.load_multiple(0x58, 0x56, 0xF, 0x28),
            A.finish_fragment(last=0x5A, first=0x58) | 1], doorbell=5, ring=frag)
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 1
    assert _u64(h, heap_pa, T2 + 0x28) == C0


def test_an_unanswered_oom_is_raised_again_after_suspend_and_resume() -> None:
    h, heap_pa, _ = _host()
    h.start_group(0)
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), *_draw(T1), *_done()])
    h.fw.sched.pump()
    assert _event(h, pf.CS_TILER_OOM)
    h.csg_req(0, pf.CSG_STATE_SUSPEND)
    assert h.csg_acked(0, pf.CSG_STATE_MASK)
    h.csg_req(0, pf.CSG_STATE_RESUME)
    assert h.csg_acked(0, pf.CSG_STATE_MASK)
    assert not _event(h, pf.CS_TILER_OOM), "acknowledged implicitly by the resume (kbase)"
    h.fw.sched.pump()
    assert _event(h, pf.CS_TILER_OOM), "the retried draw raises it again"
    _answer(h, C1)
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 1


def test_a_hostile_cyclic_free_list_is_a_fault_not_a_hang() -> None:
    h, heap_pa, chunks_pa = _host()
    h.ram.write_u64(heap_pa + 0x00, C0)
    h.ram.write_u32(heap_pa + 0x14, 1)  # seeded
    h.ram.write_u64(chunks_pa, C0)  # C0 -> C0 -> ...
    h.start_group(0)
    h.push([*_prologue(), A.move48(40, T1), A.move32(33, 0xFFFFFFFF), A.move32(34, 0xFFFF),
            A.run_idvs(), *_done()])
    h.fw.sched.pump()
    assert _event(h, pf.CS_FATAL)
    assert h.cs_out("fatal") & 0xFF == 0x44  # CS_ENDPOINT_FAULT (a CS_FATAL code; inferred)


@pytest.mark.parametrize("spd_type", [0, 1, 9])
def test_a_compute_job_with_a_bad_shader_descriptor_is_a_recoverable_fault(spd_type: int) -> None:
    """CS_FAULT DATA_INVALID_FAULT, CS_FAULT_INFO = the descriptor; the job's work is
    dropped, the error state set (error-propagating SYNC writes status 1), and after the
    host's acknowledgement the stream goes on; ERROR_BARRIER clears the error."""
    h, heap_pa, _ = _host()
    spd = HEAP + 0x600
    h.ram.write_u32(heap_pa + 0x600, spd_type)
    h.start_group(0)
    h.push([A.move48(16, spd), A.run_compute(), A.move48(0x52, DONE), A.move48(0x54, 1),
            A.sync_add64(0x52, 0x54, propagate=True), A.error_barrier(),
            A.sync_add64(0x52, 0x54, propagate=True)])
    h.fw.sched.pump()
    assert _event(h, pf.CS_FAULT) and not _event(h, pf.CS_FATAL)
    assert h.cs_out("fault") & 0xFF == 0x58 and h.cs_out("fault_info") == spd
    assert h.ram.read_u64(heap_pa + 0x400) == 0, "stopped until acknowledged"
    assert h.extract() == 16, "extract is past the faulting work item"
    si = _cs_in(h)
    h.update(si, h.r32(_cs_out_va(h)), pf.CS_FAULT)  # panthor: update_reqs(FATAL | FAULT)
    c = h.csg[0]
    h.toggle(c["input_va"] + CsgInput.off("doorbell_req"),
             c["output_va"] + CsgOutput.off("doorbell_ack"), 1)
    h.ring_csg(0)
    h.fw.sched.pump()
    assert h.ram.read_u64(heap_pa + 0x400) == 2
    assert h.ram.read_u32(heap_pa + 0x408) == 0, "the barrier cleared the error"


def test_a_shader_descriptor_of_type_shader_runs() -> None:
    h, heap_pa, _ = _host()
    h.ram.write_u32(heap_pa + 0x600, 8)
    h.start_group(0)
    h.push([A.move48(16, HEAP + 0x600), A.run_compute(), A.move48(0x52, DONE),
            A.move48(0x54, 1), A.sync_add64(0x52, 0x54, propagate=True)])
    h.fw.sched.pump()
    assert not _event(h, pf.CS_FAULT)
    assert h.ram.read_u64(heap_pa + 0x400) == 1 and h.ram.read_u32(heap_pa + 0x408) == 0



def _fragment_queue(handler_len: int) -> list[int]:
    """panvk's fragment subqueue: the heap context pre-set (as on its vertex-tiler queue),
    the TILER_OOM handler registered around the render pass, a SYNC_WAIT for the tiler
    queue's flag (DONE > 0), then DONE+12 := 1."""
    return [*_prologue(), A.move48(76, HANDLER), A.move32(78, handler_len),
            A.set_exception_handler(2, 76, 78), A.move48(72, DONE), A.move32(74, 0),
            A.sync_wait32(72, 74, A.GREATER),
            A.move48(72, DONE + 12), A.move32(74, 1), A.sync_set32(72, 74)]


def test_the_handler_of_another_stream_runs_where_it_waits_and_the_wait_resumes() -> None:
    h, heap_pa, _ = _host()
    frag = h.add_ring()
    _second_stream(h, frag)
    handler = _handler_program(h, heap_pa)
    h.start_group(0)
    h.push(_fragment_queue(8 * len(handler)), doorbell=5, ring=frag)
    h.fw.sched.pump()  # the fragment queue blocks in its SYNC_WAIT
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), *_draw(T1), *_done()])
    h.fw.sched.pump()
    assert _event(h, pf.CS_TILER_OOM)
    _answer(h, 0)
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x408) == 1, "the fragment queue's handler ran once"
    assert h.ram.read_u32(heap_pa + 0x400) == 1, "the tiler queue's draw finished"
    assert h.ram.read_u32(heap_pa + 0x40C) == 1, "the interrupted SYNC_WAIT ran again and passed"
    assert h.extract(frag) == frag.insert


def test_a_handler_registered_after_the_null_answer_runs_then() -> None:
    """panvk: "any exception will be left pending until a new handler is registered"."""
    h, heap_pa, _ = _host()
    frag = h.add_ring()
    _second_stream(h, frag)
    handler = _handler_program(h, heap_pa)
    h.start_group(0)
    h.push([*_prologue(), A.heap_operation(0), *_draw(T1), *_draw(T1), *_done()])
    h.fw.sched.pump()
    _answer(h, 0)
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 0 and h.ram.read_u32(heap_pa + 0x408) == 0
    h.push(_fragment_queue(8 * len(handler)), doorbell=5, ring=frag)
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x408) == 1
    assert h.ram.read_u32(heap_pa + 0x400) == 1
    assert h.ram.read_u32(heap_pa + 0x40C) == 1


def test_the_suspend_image_keeps_the_heap_answer_and_a_handler_frame() -> None:
    from qemu_panthor.csf.cs_state import RING_FRAME, CsExecState

    st = CsExecState()
    st.heap_reply = (C1, C1)
    st.oom_null = True
    st.extract = 0x40
    assert st.enter_handler(HANDLER, 0x80)
    st2 = CsExecState.deserialise(st.serialise(1.0), 2.0)
    assert st2.heap_reply == (C1, C1) and st2.oom_null
    assert st2.stack == [RING_FRAME] and st2.in_buf and (st2.pc, st2.end) == (HANDLER,
                                                                            HANDLER + 0x80)
    assert not CsExecState().enter_handler(HANDLER + 4, 0x80), "misaligned handler"


def test_a_draw_that_takes_chunks_ends_the_slice_after_it() -> None:
    """Taking chunks walks guest memory: the firmware yields after such a draw, so a stream
    of them cannot hold the MCU for a whole instruction budget."""
    h, heap_pa, _ = _host()
    h.start_group(0)
    prog = [*_prologue(), *_draw(T1), *_done()]
    h.push(prog, doorbell=None)
    h.w(doorbell_off(1), 1)
    assert h.fw.sched.run_slice()
    st = h.fw.rt.csgs[0].streams[0].st
    assert st is not None
    assert st.extract == 8 * (len(_prologue()) + len(_draw(T1))), "stopped right after the draw"
    assert h.ram.read_u32(heap_pa + 0x400) == 0
    h.fw.sched.pump()
    assert h.ram.read_u32(heap_pa + 0x400) == 1

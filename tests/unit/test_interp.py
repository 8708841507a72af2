"""CS interpreter behaviour against docs/reference/cs-instructions.md (kernel ring sequence,
IGT/Mesa idioms).

Streams are built with the independent tests/support/cs_asm.py; expected values come from the
reference (worked encodings, syncobj layout, status_wait encoding), not from the interpreter.
"""

from __future__ import annotations

import pytest
from support import cs_asm
from support.interp_doubles import RING, FakeHooks, Rig

from qemu_panthor.csf.interp import CALL_STACK_DEPTH, CsExecState, RunResult
from qemu_panthor.csf.opcodes import decode

A = cs_asm
SYNCOBJ = 0x8000_0000_2000  # §8.2 worked example
STREAM = 0x10000
COUNTER = 0x10800
M32 = 0xFFFFFFFF

# §8.2 worked encodings (N = 96, 8 scoreboards, latest_flush 5, stream @0x10000 len 0x40)
KERNEL_JOB = [
    0x025E000000000005,
    0x24005E0000000233,
    0x015C000000010000,
    0x025E000000000040,
    0x0300000000010000,
    0x20005C5E00000000,
    0x015C800000002000,
    0x015E000000000001,
    0x0300000000FF0000,
    0x33005C5E00000001,
    0x2F00000000000000,
] + [0] * 5


def kernel_job(stream: int = STREAM, size: int = 0x40, syncobj: int = SYNCOBJ) -> list[int]:
    """prepare_job_instrs (§8.2) for N = 96, 8 scoreboards, latest_flush 5, no profiling."""
    return [
        A.move32(94, 5),
        A.flush_cache2(3, 3, 2, 94),
        A.move48(92, stream),
        A.move32(94, size),
        A.wait(0x01),
        A.call(92, 94),
        A.move48(92, syncobj),
        A.move48(94, 1),
        A.wait(0xFF),
        A.sync_add64(92, 94, propagate=True),
        A.error_barrier(),
    ] + [A.nop()] * 5


def user_stream(value: int = 0x2A) -> list[int]:
    """§9.4: MOVE48 r0:r1 <- counter; MOVE48 r2:r3 <- value; SYNC_ADD64 [r0] += r2 (+5 NOPs)."""
    return [A.move48(0, COUNTER), A.move48(2, value), A.sync_add64(0, 2)] + [A.nop()] * 5


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    r.mmu.map(STREAM, 0x1000)
    r.mmu.map(SYNCOBJ, 0x1000)
    return r


# -- §8.2 kernel ring sequence ------------------------------------------------------------


def test_worked_encodings_match_the_assembler_and_decoder():
    assert kernel_job() == KERNEL_JOB
    assert A.store_state(92, A.CYCLE_COUNT) == 0x28005C0100000000
    assert A.store_state(94, A.TIMESTAMP) == 0x28005E0000000000
    assert A.sync_add64(0, 2) == 0x3300000200000000  # §9.4
    expect = [
        ("MOVE32", {"dst": 94, "immediate": 5}),
        (
            "FLUSH_CACHE2",
            {
                "l2_flush_mode": 3,
                "lsc_flush_mode": 3,
                "other_flush_mode": 2,
                "latest_flush_id": 94,
                "signal_slot": 0,
                "wait_mask": 0,
            },
        ),
        ("MOVE48", {"dst": 92, "immediate": 0x10000}),
        ("MOVE32", {"dst": 94, "immediate": 0x40}),
        ("WAIT", {"wait_mask": 0x01}),
        ("CALL", {"address": 92, "length": 94}),
        ("MOVE48", {"dst": 92, "immediate": 0x800000002000}),
        ("MOVE48", {"dst": 94, "immediate": 1}),
        ("WAIT", {"wait_mask": 0xFF}),
        (
            "SYNC_ADD64",
            {
                "address": 92,
                "data": 94,
                "error_propagate": 1,
                "scope": 0,
                "wait_mask": 0,
                "signal_slot": 0,
            },
        ),
        ("ERROR_BARRIER", {}),
    ]
    for word, (name, fields) in zip(KERNEL_JOB, expect, strict=False):
        got_name, got = decode(word)
        assert got_name == name
        assert {k: got[k] for k in fields} == fields
    assert all(decode(w)[0] == "NOP" for w in KERNEL_JOB[11:])


def test_kernel_job_runs_user_stream_and_signals_syncobj(rig: Rig):
    rig.mmu.put(STREAM, user_stream())
    rig.mmu.w32(SYNCOBJ + 8, 0xAAAA)  # status is rewritten by error propagation
    rig.push(KERNEL_JOB)
    res = rig.run()
    assert res.kind == "idle"
    assert res.sync_update is True
    assert res.instructions == 16 + 8  # ring + the 8 instructions of the 0x40-byte stream
    assert rig.st.extract == 128 == rig.st.insert
    assert res.cmd_ptr == RING + 128
    assert rig.mmu.r64(SYNCOBJ) == 1  # seqno of job 1
    assert rig.mmu.r32(SYNCOBJ + 8) == 0  # status = error state (none)
    assert rig.mmu.r64(COUNTER) == 0x2A
    assert rig.hooks.flushes == 1
    assert rig.st.call_depth == 0
    # the kernel's registers as the sequence leaves them
    assert rig.st.reg64(92) == SYNCOBJ and rig.st.reg64(94) == 1
    assert rig.st.wait_mask == 0xFF and rig.st.error == 0

    rig.push(KERNEL_JOB)  # job 2: same stream
    res = rig.run()
    assert (res.kind, rig.st.extract) == ("idle", 256)
    assert rig.mmu.r64(SYNCOBJ) == 2
    assert rig.mmu.r64(COUNTER) == 0x54


def test_kernel_job_with_profiling_stores_cycles_and_timestamps(rig: Rig):
    slot = 0x10F00
    rig.mmu.put(STREAM, user_stream())
    job = [
        *KERNEL_JOB[:2],
        A.move48(92, slot + 0x00),
        A.store_state(92, A.CYCLE_COUNT),
        A.move48(94, slot + 0x10),
        A.store_state(94, A.TIMESTAMP),
        *KERNEL_JOB[2:6],
        A.move48(92, slot + 0x08),
        A.store_state(92, A.CYCLE_COUNT),
        A.move48(94, slot + 0x18),
        A.store_state(94, A.TIMESTAMP),
        *KERNEL_JOB[6:11],
    ]
    job += [0] * (24 - len(job))  # 19 instructions padded to 24 (§8.2)
    rig.push(job)
    res = rig.run()
    assert res.kind == "idle" and rig.st.extract == 24 * 8
    cb, ca, tb, ta = (rig.mmu.r64(slot + i) for i in (0, 8, 0x10, 0x18))
    base_c, base_t = 0x55_0000_0000, 0x1_0000_0000  # FakeHooks start values (+7 / +100 per read)
    assert (cb, ca) == (base_c + 7, base_c + 14)
    assert (tb, ta) == (base_t + 100, base_t + 200)
    assert rig.mmu.r64(SYNCOBJ) == 1


def test_zero_size_call_is_a_no_op(rig: Rig):
    rig.push(kernel_job(size=0))
    res = rig.run()
    assert res.kind == "idle" and res.instructions == 16
    assert rig.mmu.r64(SYNCOBJ) == 1 and rig.mmu.r64(COUNTER) == 0


def test_igt_deadbeef_store(rig: Rig):
    """IGT panthor_group: MOV48 addr, MOV32 0xdeadbeef, STORE_MULTIPLE, WAIT, FLUSH_CACHE2."""
    target = STREAM + 0x800
    rig.push(
        [
            A.move48(68, target),
            A.move32(70, 0xDEADBEEF),
            A.store_multiple(70, 68, 0x1),
            A.wait(0xFF),
            A.flush_cache2(3, 3, 2, 71),  # r71 = 0: "always flush"
        ]
    )
    res = rig.run()
    assert res.kind == "idle" and res.instructions == 5
    assert rig.mmu.r32(target) == 0xDEADBEEF
    assert rig.mmu.r32(target + 4) == 0
    assert rig.hooks.flushes == 1


# -- registers, arithmetic, loads/stores ----------------------------------------------------


def test_move48_zero_extends_and_move32_writes_one_register(rig: Rig):
    rig.st.regs[4:6] = [M32, M32]
    rig.st.regs[7] = 0x1234
    rig.push([A.move48(4, 0xFFFF_8765_4321), A.move32(6, 0xCAFEF00D)])
    assert rig.run().kind == "idle"
    assert rig.st.regs[4:8] == [0x87654321, 0xFFFF, 0xCAFEF00D, 0x1234]


def test_add_immediate_wraps_and_sign_extends(rig: Rig):
    rig.push(
        [
            A.move32(0, 0xFFFFFFFF),
            A.add_imm32(1, 0, 2),  # wraps to 1
            A.move32(2, 5),
            A.add_imm32(3, 2, -7),  # 5 - 7 = -2
            A.move48(4, 0x1_0000_0000),
            A.add_imm64(6, 4, -1),  # borrow across words
            A.move48(8, 0xFFFF_FFFF_FFFF),
            A.add_imm64(8, 8, 0x7FFFFFFF),
        ]
    )
    assert rig.run().kind == "idle"
    r = rig.st
    assert r.regs[1] == 1 and r.regs[3] == 0xFFFFFFFE
    assert r.reg64(6) == 0xFFFFFFFF
    assert r.reg64(8) == 0xFFFF_FFFF_FFFF + 0x7FFFFFFF


def test_umin32_is_unsigned(rig: Rig):
    rig.push([A.move32(0, 0x80000000), A.move32(1, 3), A.umin32(2, 0, 1), A.umin32(3, 1, 0)])
    assert rig.run().kind == "idle"
    assert rig.st.regs[2] == 3 and rig.st.regs[3] == 3


def test_load_multiple_maps_bit_i_to_address_plus_4i(rig: Rig):
    buf = STREAM + 0x100
    for i in range(8):
        rig.mmu.w32(buf + 4 * i, 0x100 + i)
    rig.st.regs[40:48] = [0xEE] * 8
    rig.push([A.move48(0, buf + 0x10), A.load_multiple(40, 0, 0b1010_0101, offset=-0x10)])
    assert rig.run().kind == "idle"
    assert rig.st.regs[40:48] == [0x100, 0xEE, 0x102, 0xEE, 0xEE, 0x105, 0xEE, 0x107]


def test_store_multiple_leaves_holes_untouched(rig: Rig):
    buf = STREAM + 0x200
    for i in range(4):
        rig.mmu.w32(buf + 4 * i, 0x77)
    rig.st.regs[20:24] = [1, 2, 3, 4]
    rig.push([A.move48(0, buf - 8), A.store_multiple(20, 0, 0b1101, offset=8)])
    assert rig.run().kind == "idle"
    assert [rig.mmu.r32(buf + 4 * i) for i in range(4)] == [1, 0x77, 3, 4]


def test_store_over_a_later_instruction_in_the_same_page_executes_the_new_one(rig: Rig):
    rig.mmu.map(RING, 0x1000, writable=True)
    new = A.move32(9, 0x99)
    rig.st.regs[10:12] = [new & M32, new >> 32]
    rig.push([A.move48(0, RING + 16), A.store_multiple(10, 0, 0b11), A.move32(9, 0x11)])
    assert rig.run().kind == "idle"
    assert rig.st.regs[9] == 0x99


# -- BRANCH -----------------------------------------------------------------------------------

CONDS = {
    A.LEQUAL: lambda v: v <= 0,
    A.GREATER: lambda v: v > 0,
    A.EQUAL: lambda v: v == 0,
    A.NEQUAL: lambda v: v != 0,
    A.LESS: lambda v: v < 0,
    A.GEQUAL: lambda v: v >= 0,
    A.ALWAYS: lambda v: True,
}


@pytest.mark.parametrize("cond", sorted(CONDS))
@pytest.mark.parametrize("value", [0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
def test_branch_conditions_compare_the_signed_register_with_zero(rig: Rig, cond, value):
    rig.push(
        [
            A.move32(5, value),
            A.branch(1, cond, 5),  # skip the next instruction when taken
            A.move32(6, 1),
            A.move32(7, 1),
        ]
    )
    assert rig.run().kind == "idle"
    signed = value - (1 << 32) if value & 0x80000000 else value
    assert rig.st.regs[6] == (0 if CONDS[cond](signed) else 1)
    assert rig.st.regs[7] == 1


def test_countdown_loop_with_backward_branch(rig: Rig):
    rig.push(
        [
            A.move32(0, 100),
            A.move32(1, 0),
            A.add_imm32(1, 1, 3),  # loop body
            A.add_imm32(0, 0, -1),
            A.branch(-3, A.GREATER, 0),
            A.move32(2, 0xD0),
        ]
    )
    res = rig.run()
    assert res.kind == "idle"
    assert rig.st.regs[0:3] == [0, 300, 0xD0]
    assert res.instructions == 2 + 3 * 100 + 1


def test_branch_past_the_end_of_a_called_buffer_returns(rig: Rig):
    rig.mmu.put(STREAM, [A.branch(5), A.move32(3, 1), A.move32(3, 2)])
    rig.push([A.move48(0, STREAM), A.move32(2, 24), A.call(0, 2), A.move32(4, 4)])
    assert rig.run().kind == "idle"
    assert rig.st.regs[3] == 0 and rig.st.regs[4] == 4


def test_branch_out_of_the_ring_window_is_cs_instr_invalid(rig: Rig):
    rig.push([A.nop(), A.branch(10)])
    res = rig.run()
    assert (res.kind, res.exception_type) == ("fatal", 0x49)  # CS_FATAL CS_INSTR_INVALID


# -- CALL / JUMP --------------------------------------------------------------------------------


def _chain(rig: Rig, depth: int) -> None:
    """Buffers b0..b(depth-1): each records its level in r(10+i) then CALLs the next."""
    for i in range(depth):
        va = STREAM + 0x40 * i
        words = [A.move32(10 + i, i + 1)]
        if i + 1 < depth:
            words += [A.move48(0, va + 0x40), A.move32(2, 0x40), A.call(0, 2)]
        words += [A.add_imm32(30, 30, 1)]  # runs after the callee returned
        words += [A.nop()] * (8 - len(words))
        rig.mmu.put(va, words)
    rig.push([A.move48(0, STREAM), A.move32(2, 0x40), A.call(0, 2), A.move32(40, 0xE)])


def test_nested_calls_return_in_order(rig: Rig):
    _chain(rig, CALL_STACK_DEPTH)
    res = rig.run()
    assert res.kind == "idle"
    assert rig.st.regs[10 : 10 + CALL_STACK_DEPTH] == list(range(1, CALL_STACK_DEPTH + 1))
    assert rig.st.regs[30] == CALL_STACK_DEPTH and rig.st.regs[40] == 0xE
    assert rig.st.call_depth == 0


def test_call_stack_overflow(rig: Rig):
    _chain(rig, CALL_STACK_DEPTH + 1)
    res = rig.run()
    assert (res.kind, res.exception_type) == ("fatal", 0x4A)
    deepest = STREAM + 0x40 * (CALL_STACK_DEPTH - 1)
    assert res.cmd_ptr == deepest + 3 * 8  # the CALL in the 8th buffer
    assert res.info == A.call(0, 2)
    assert rig.st.call_depth == CALL_STACK_DEPTH


def test_jump_replaces_the_buffer_and_returns_to_the_caller(rig: Rig):
    rig.mmu.put(
        STREAM, [A.move48(0, STREAM + 0x100), A.move32(2, 16), A.jump(0, 2), A.move32(5, 0xBAD)]
    )
    rig.mmu.put(STREAM + 0x100, [A.move32(6, 6), A.move32(7, 7)])
    rig.push([A.move48(0, STREAM), A.move32(2, 32), A.call(0, 2), A.move32(8, 8)])
    res = rig.run()
    assert res.kind == "idle"
    assert rig.st.regs[5:9] == [0, 6, 7, 8]


def test_extract_stays_on_a_ring_call_until_the_callee_returns(rig: Rig):
    rig.mmu.put(STREAM, [A.nop()] * 4)
    rig.push([A.move48(0, STREAM), A.move32(2, 32), A.call(0, 2)])
    res = rig.run(budget=4)  # 3 ring instructions + 1 callee instruction
    assert res.kind == "budget" and res.instructions == 4
    assert rig.st.extract == 16 and rig.st.in_buf
    assert res.cmd_ptr == STREAM + 8
    res = rig.run()
    assert (res.kind, res.instructions, rig.st.extract) == ("idle", 3, 24)


@pytest.mark.parametrize(
    ("addr", "length", "code"),
    [(STREAM + 4, 16, 0x49), (STREAM, 12, 0x49), ((1 << 64) - 8, 16, 0x49)],  # CS_INSTR_INVALID
)
def test_bad_call_targets(rig: Rig, addr, length, code):
    rig.st.set_reg64(0, addr)
    rig.push([A.move32(2, length), A.call(0, 2)])
    res = rig.run()
    assert (res.kind, res.exception_type) == ("fatal", code)
    assert res.cmd_ptr == RING + 8 and rig.st.extract == 8


# -- sync objects -------------------------------------------------------------------------------


@pytest.mark.parametrize("is64", [False, True])
@pytest.mark.parametrize("cond", [A.GREATER, A.LEQUAL])
def test_sync_wait_blocks_then_unblocks(rig: Rig, is64, cond):
    obj = SYNCOBJ + 0x40
    wait = A.sync_wait64 if is64 else A.sync_wait32
    start, ref = (5, 5) if cond == A.GREATER else (9, 5)  # neither 5 > 5 nor 9 <= 5 holds
    (rig.mmu.w64 if is64 else rig.mmu.w32)(obj, start)
    rig.push([A.move48(0, obj), A.move48(2, ref), wait(0, 2, cond), A.move32(4, 0x44)])
    res = rig.run()
    assert res.kind == "blocked_sync"
    assert (res.wait.ptr, res.wait.value, res.wait.is_64) == (obj, ref, is64)
    assert res.wait.cond == ("gt" if cond == A.GREATER else "le")
    # §7.4 status_wait: bit31 SYNC wait, bit30 SYNC_64B, [27:24] cond (0 LE, 1 GT)
    assert res.wait.status_wait() == (1 << 31) | (int(is64) << 30) | (
        (1 if cond == A.GREATER else 0) << 24
    )
    assert res.wait.blocked_reason == 3
    assert res.cmd_ptr == RING + 16 and rig.st.extract == 16 and res.instructions == 2
    assert rig.run().kind == "blocked_sync"  # re-checked, still blocked
    (rig.mmu.w64 if is64 else rig.mmu.w32)(obj, 6 if cond == A.GREATER else 5)
    res = rig.run()
    assert res.kind == "idle" and rig.st.regs[4] == 0x44 and res.instructions == 2


def test_sync_wait64_compares_all_64_bits(rig: Rig):
    obj = SYNCOBJ + 0x40
    rig.mmu.w64(obj, 0x1_0000_0000)
    rig.push([A.move48(0, obj), A.move48(2, 0xFFFF_FFFF), A.sync_wait64(0, 2, A.GREATER)])
    assert rig.run().kind == "idle"


def test_sync_add32_and_set_write_status_at_plus_4(rig: Rig):
    obj = SYNCOBJ + 0x80
    rig.mmu.w32(obj, 0xFFFFFFFF)
    rig.mmu.w32(obj + 4, 0x5A5A)
    rig.mmu.w64(obj + 0x10, 0x1234)
    rig.push(
        [
            A.move48(0, obj),
            A.move32(2, 2),
            A.sync_add32(0, 2, propagate=True),
            A.move48(4, obj + 0x10),
            A.move48(6, 0x9_0000_0007),
            A.sync_set64(4, 6),
            A.move48(8, obj + 0x20),
            A.sync_set32(8, 2, propagate=True),
        ]
    )
    res = rig.run()
    assert res.kind == "idle" and res.sync_update
    assert rig.mmu.r32(obj) == 1 and rig.mmu.r32(obj + 4) == 0  # wrapped; status 0
    assert rig.mmu.r64(obj + 0x10) == 0x9_0000_0007
    assert rig.mmu.r32(obj + 0x20) == 2 and rig.mmu.r32(obj + 0x24) == 0


def test_csg_scope_sync_does_not_notify_the_host(rig: Rig):
    rig.push([A.move48(0, SYNCOBJ), A.move48(2, 1), A.sync_add64(0, 2, scope=A.CSG)])
    res = rig.run()
    assert res.kind == "idle" and not res.sync_update and res.csg_sync_update
    assert rig.mmu.r64(SYNCOBJ) == 1


def test_error_reject_propagates_until_error_barrier(rig: Rig):
    failed = SYNCOBJ + 0x100
    rig.mmu.w64(failed, 0)
    rig.mmu.w32(failed + 8, 1)  # a failed sync object (status != 0)
    rig.push(
        [
            A.move48(0, failed),
            A.move48(2, 0),
            A.sync_wait64(0, 2, A.GREATER, reject=True),  # value test would block: 0 > 0
            A.move48(4, SYNCOBJ),
            A.move48(6, 1),
            A.sync_add64(4, 6, propagate=True),  # status <- 1
            A.move48(8, SYNCOBJ + 0x20),
            A.store_state(8, A.ERROR_STATUS),
            A.error_barrier(),
            A.sync_add64(4, 6, propagate=True),  # status <- 0 again
            A.store_state(8, A.ERROR_STATUS, offset=8),
        ]
    )
    # the failed sync object ends the wait with a recoverable CS_INHERIT_FAULT (0x4B) naming
    # it; the wait completed, the stream stands on the next instruction with its error set
    res = rig.run()
    assert res.kind == "fault" and res.exception_type == 0x4B and res.info == failed
    assert res.instructions == 3 and rig.st.error == 1
    assert res.cmd_ptr == RING + 3 * 8
    res = rig.run(budget=3)
    assert res.kind == "budget" and rig.st.error == 1
    assert rig.mmu.r64(SYNCOBJ) == 1 and rig.mmu.r32(SYNCOBJ + 8) == 1
    res = rig.run()
    assert res.kind == "idle" and rig.st.error == 0
    assert rig.mmu.r64(SYNCOBJ + 0x20) == 1 and rig.mmu.r64(SYNCOBJ + 0x28) == 0
    assert rig.mmu.r64(SYNCOBJ) == 2 and rig.mmu.r32(SYNCOBJ + 8) == 0


def test_error_inherit_waits_then_takes_the_error_state(rig: Rig):
    """Reject 0 ("inherit", Mesa's decoder): a wait on a failed sync object is a plain wait
    (it blocks until the value test passes, no fault); when it completes the stream takes the
    object's error state, and its error-propagating SYNC_ADD fails the object it signals:
    how a fault in one panvk subqueue reaches the fence another one signals (*inferred*)."""
    failed = SYNCOBJ + 0x100
    rig.mmu.w64(failed, 0)
    rig.mmu.w32(failed + 8, 1)  # a failed sync object (status != 0)
    rig.push([A.move48(0, failed), A.move48(2, 0), A.sync_wait64(0, 2, A.GREATER),
              A.move48(4, SYNCOBJ), A.move48(6, 1), A.sync_add64(4, 6, propagate=True)])
    res = rig.run()
    assert res.kind == "blocked_sync" and rig.st.error == 0  # 0 > 0 is false: still waiting
    rig.mmu.w64(failed, 1)  # the producer signals (with its error)
    res = rig.run()
    assert res.kind == "idle" and rig.st.error == 1
    assert rig.mmu.r64(SYNCOBJ) == 1 and rig.mmu.r32(SYNCOBJ + 8) == 1  # the error went on


def test_error_inherit_of_a_healthy_object_sets_nothing(rig: Rig):
    obj = SYNCOBJ + 0x100
    rig.mmu.w64(obj, 5)
    rig.push([A.move48(0, obj), A.move48(2, 4), A.sync_wait64(0, 2, A.GREATER)])
    assert rig.run().kind == "idle" and rig.st.error == 0


def test_error_reject_ignores_status_when_clear(rig: Rig):
    obj = SYNCOBJ + 0x100
    rig.mmu.w32(obj, 3)
    rig.push([A.move48(0, obj), A.move32(2, 3), A.sync_wait32(0, 2, A.GREATER, reject=True)])
    assert rig.run().kind == "blocked_sync" and rig.st.error == 0


# -- STORE_STATE, FLUSH_CACHE2, bookkeeping instructions ----------------------------------------


def test_store_state_timestamp_at_negative_offset(rig: Rig):
    rig.push(
        [
            A.move48(10, SYNCOBJ + 0x108),
            A.store_state(10, A.TIMESTAMP, offset=-8),
            A.store_state(10, A.DISJOINT_COUNT),
        ]
    )
    rig.mmu.w64(SYNCOBJ + 0x108, 0x77)
    assert rig.run().kind == "idle"
    assert rig.mmu.r64(SYNCOBJ + 0x100) == 0x1_0000_0000 + 100
    assert rig.mmu.r64(SYNCOBJ + 0x108) == 0


def test_flush_cache2_skips_when_a_flush_happened_since_the_id():
    rig = Rig(hooks=FakeHooks(latest_flush_id=5))
    rig.push(
        [
            A.move32(1, 5),
            A.flush_cache2(3, 3, 2, 1),  # ID current: flush (ID -> 6)
            A.flush_cache2(3, 3, 2, 1),  # ID 5 is stale: a flush already happened, skip
            A.move32(2, 0),
            A.flush_cache2(1, 0, 0, 2),  # 0: always flush
            A.flush_cache2(0, 0, 0, 2),  # no flush requested
        ]
    )
    assert rig.run().kind == "idle"
    assert rig.hooks.flushes == 2 and rig.st.flushes == 2


def test_work_items_progress_and_records(rig: Rig):
    rig.mmu.map(0xAB000, 0x1000)  # the heap context HEAP_OPERATION counts in
    rig.push(
        [
            A.run_compute(progress=True),
            A.run_compute_indirect(),
            A.run_tiling(progress=True),
            A.run_idvs(draw_id_enable=True, draw_id=3),
            A.run_fragment(),
            A.run_fullscreen(dcd=4),
            A.finish_tiling(),
            A.finish_fragment(last=6, first=8),
            A.wait(0, progress=True),
            A.move48(10, 0x1_2345_6789),
            A.progress_store(10),
            A.progress_load(12),
            A.move48(14, 0xAB000),
            A.heap_set(14),
            A.heap_operation(0),
            A.heap_operation(3),
            A.move32(16, 0x80),
            A.set_exception_handler(2, 14, 16),
            A.req_resource(0b1011),
            A.set_sb_entry(3, 5),
            A.progress_wait(1, 10),
            A.trace_point(0, 4),
            A.prot_region(4),
        ]
    )
    res = rig.run()
    assert res.kind == "idle" and res.instructions == 23
    st = rig.st
    assert st.work_items() == {
        "compute": 1,
        "compute_indirect": 1,
        "tiling": 1,
        "idvs": 1,
        "fragment": 1,
        "fullscreen": 1,
        "finish_tiling": 1,
        "finish_fragment": 1,
    }
    assert st.reg64(12) == 0x1_2345_6789 + 0  # loaded after the store
    assert st.progress == 0x1_2345_6789
    assert st.heap_ctx == 0xAB000 and st.heap_ops == [1, 0, 0, 1]
    # docs/firmware.md "Tiler heap": VT started at +0x08, fragment completed at +0x10
    assert rig.mmu.r32(0xAB000 + 0x08) == 1 and rig.mmu.r32(0xAB000 + 0x10) == 1
    assert rig.mmu.r32(0xAB000 + 0x0C) == 0
    assert st.exc_handlers == {2: (0xAB000, 0x80)}
    assert st.req_resource == 0b1011 and (st.sb_endpoint, st.sb_other) == (3, 5)


def test_progress_increments_count(rig: Rig):
    rig.push(
        [
            A.run_compute(progress=True),
            A.run_fragment(progress=True),
            A.wait(0, True),
            A.progress_load(0),
        ]
    )
    assert rig.run().kind == "idle"
    assert rig.st.reg64(0) == 3


# -- budget and ring wrap -----------------------------------------------------------------------


def test_budget_stops_and_resumes(rig: Rig):
    rig.push([A.add_imm32(0, 0, 1)] * 10)
    res = rig.run(budget=4)
    assert (res.kind, res.instructions, rig.st.extract, res.cmd_ptr) == ("budget", 4, 32, RING + 32)
    assert rig.run(budget=0).kind == "budget"
    res = rig.run(budget=6)
    assert (res.kind, res.instructions, rig.st.regs[0]) == ("idle", 6, 10)


def test_ring_wraps_around():
    rig = Rig(ring_size=0x1000)
    base = 7 * 0x1000 + 0x1000 - 16  # extract is monotonic: 7 laps + 2 slots before the end
    rig.st.extract = rig.st.insert = base
    rig.push([A.move32(0, 1), A.move32(1, 2), A.move32(2, 3), A.move32(3, 4)])
    assert rig.mmu.r64(RING) == A.move32(2, 3)  # the wrapped half sits at the ring start
    res = rig.run()
    assert res.kind == "idle" and res.instructions == 4
    assert rig.st.regs[0:4] == [1, 2, 3, 4] and rig.st.extract == base + 32
    assert res.cmd_ptr == RING + 16


def test_idle_when_empty_even_without_a_ring():
    from qemu_panthor.csf.interp import CsInterpreter, new_state

    res = CsInterpreter(None, None).run(new_state(), 100)  # type: ignore[arg-type]
    assert res == RunResult("idle")


# -- suspend/resume image -----------------------------------------------------------------------


def test_serialise_round_trip_mid_call_and_blocked(rig: Rig):
    obj = SYNCOBJ + 0x40
    rig.mmu.put(STREAM, [A.move32(20, 1), A.sync_wait32(0, 2, A.GREATER), A.move32(21, 2)])
    rig.mmu.put(
        STREAM + 0x100,
        [
            A.move48(0, obj),
            A.move32(2, 0),
            A.move48(4, STREAM),
            A.move32(6, 24),
            A.call(4, 6),
            A.move32(22, 3),
        ],
    )
    rig.push(
        [A.move48(0, STREAM + 0x100), A.move32(2, 48), A.heap_set(0), A.call(0, 2), A.move32(23, 4)]
    )
    rig.push([A.move48(10, 0xAB), A.set_exception_handler(7, 10, 2)])
    rig.st.error = 1
    res = rig.run()
    assert res.kind == "blocked_sync" and rig.st.call_depth == 2
    blob = rig.st.serialise()
    st2 = CsExecState.deserialise(blob)
    assert st2.serialise() == blob
    for name in CsExecState.__slots__:
        assert getattr(st2, name) == getattr(rig.st, name), name
    rig.st = st2  # resume from the image
    rig.mmu.w32(obj, 1)
    res = rig.run()
    assert res.kind == "idle" and rig.st.regs[20:24] == [1, 2, 3, 4]
    assert rig.st.exc_handlers == {7: (0xAB, 0)}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:10],
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:4] + b"\x09\x00" + b[6:],  # version
        lambda b: b[:6] + b"\x00\x00" + b[8:],  # reg_count 0
        lambda b: b[:6] + b"\x00\x02" + b[8:],  # reg_count 512
        lambda b: b[:8] + b"\x00" + b[9:],  # 0 scoreboards
        lambda b: b[:9] + b"\x08" + b[10:],  # unknown flag
        lambda b: b[:10] + b"\x09" + b[11:],  # call stack deeper than the limit
        lambda b: b"",
    ],
)
def test_deserialise_rejects_garbage(mutate):
    blob = Rig().st.serialise()
    with pytest.raises(ValueError):
        CsExecState.deserialise(mutate(blob))

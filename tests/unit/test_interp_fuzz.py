"""Garbage command streams and suspend images: the interpreter only ever answers with a RunResult
(never an exception, never its internal-error fatal), and deserialise only raises ValueError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.interp_doubles import Rig

from qemu_panthor.csf.interp import RESULT_KINDS, CsExecState
from qemu_panthor.csf.opcodes import FIELDS

MAPPED = 0x40000
KNOWN = sorted(int(op) for op in FIELDS)

opcode = st.one_of(st.sampled_from(KNOWN), st.integers(0, 255))
# operands: registers mostly small, so pairs often point at the mapped data or the ring
word = st.builds(
    lambda op, lo, regs: (op << 56) | (regs << 32) | lo,
    opcode,
    st.integers(0, (1 << 32) - 1),
    st.integers(0, (1 << 24) - 1) | st.sampled_from([0x000002, 0x000402, 0x5E5C00, 0x020000]),
)
addresses = st.sampled_from([MAPPED, MAPPED + 0xFF8, 0x100000, 0x100100, 0, 0xDEAD0000])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(word | st.integers(0, (1 << 64) - 1), min_size=1, max_size=40),
    regs=st.lists(addresses | st.integers(0, (1 << 32) - 1), min_size=8, max_size=8),
    budget=st.integers(0, 300),
    wrap=st.booleans(),
)
def test_random_streams_only_produce_run_results(words, regs, budget, wrap):
    rig = Rig()
    rig.mmu.map(MAPPED, 0x1000)
    if wrap:
        rig.st.extract = rig.st.insert = 0x1000 - 8 * (len(words) // 2)
    for i in range(0, 8, 2):
        rig.st.set_reg64(i, regs[i])
    rig.st.regs[8:16] = [r & 0xFFFFFFFF for r in regs]
    rig.push(words)
    for _ in range(3):  # re-running (retry after stall/block/budget) is also safe
        before = rig.st.serialise()
        res = rig.run(budget)
        assert res.kind in RESULT_KINDS
        assert 0 <= res.instructions <= budget
        if res.kind == "fatal":
            assert res.exception_type in (0x40, 0x44, 0x48, 0x49, 0x4A), res  # CS_FATAL codes
        if res.kind == "mmu_fault":
            assert res.fault is not None
        if res.kind in ("fatal", "mmu_fault", "blocked_sync") and res.instructions == 0:
            # nothing completed: the architectural position did not move
            assert rig.st.cmd_ptr == CsExecState.deserialise(before).cmd_ptr
        image = rig.st.serialise()
        assert CsExecState.deserialise(image).serialise() == image
        if res.kind != "budget":
            break


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_deserialise_garbage_raises_value_error_only(blob):
    try:
        state = CsExecState.deserialise(blob)
    except ValueError:
        return
    assert state.serialise() == blob


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_deserialise_single_byte_corruption(data):
    rig = Rig()
    rig.push([0] * 3)
    rig.run(2)
    blob = bytearray(rig.st.serialise())
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] = data.draw(st.integers(0, 255))
    try:
        CsExecState.deserialise(bytes(blob))
    except ValueError:
        pass

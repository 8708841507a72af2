"""CS interpreter fault paths: CS_FATAL exception codes (§4.4) and GPU page-fault stalls.

A fatal leaves the stream on the offending instruction; an MMU fault stalls it without side
effects, and re-running after the page is mapped completes it exactly once.
"""

from __future__ import annotations

import pytest
from support import cs_asm
from support.interp_doubles import RING, Access, Rig

A = cs_asm
DATA = 0x40000


@pytest.fixture
def rig() -> Rig:
    r = Rig()
    r.mmu.map(DATA, 0x2000)
    return r


def _fatal(rig: Rig, words: list[int], prefix: list[int] | None = None):
    prefix = prefix or []
    rig.push(prefix + words)
    res = rig.run()
    assert res.kind == "fatal", res
    assert res.instructions == len(prefix)
    assert rig.st.extract == 8 * len(prefix)
    assert res.cmd_ptr == RING + 8 * len(prefix)
    return res


@pytest.mark.parametrize(
    "opcode", [0x0A, 0x0C, 0x0F, 0x13, 0x1A, 0x1F, 0x23, 0x2D, 0x2E, 0x36, 0x80, 0xFF]
)
def test_unknown_opcode_is_cs_instr_invalid(rig: Rig, opcode):
    word = (opcode << 56) | 0x1234
    res = _fatal(rig, [word], [A.nop()])
    assert (res.exception_type, res.info) == (0x49, word)


BAD_ENCODINGS = {
    "move48 odd pair": A.move48(3, 1),
    "move48 pair past the end": A.move48(96, 1),
    "move32 reg >= 96": A.move32(96, 1),
    "add32 src >= 96": A.add_imm32(0, 200, 1),
    "add64 odd dst": A.add_imm64(1, 0, 1),
    "umin src1 >= 96": A.umin32(0, 1, 99),
    "load odd address pair": A.load_multiple(0, 5, 1),
    "load past last register": A.load_multiple(90, 0, 0x80),
    "store past last register": A.store_multiple(95, 0, 0x3),
    "branch condition 7": A.ins(0x16, (7, 28, 3)),
    "branch reg >= 96": A.branch(1, A.EQUAL, 96),
    "call odd address pair": A.call(1, 2),
    "call length reg >= 96": A.call(0, 96),
    "jump odd address pair": A.jump(7, 2),
    "sync_add64 odd data pair": A.sync_add64(0, 3),
    "sync_add32 odd address pair": A.sync_add32(1, 2),
    "sync_add32 signal slot 8": A.sync_add32(0, 2, signal=8),
    "sync_wait32 condition EQUAL": A.sync_wait32(0, 2, A.EQUAL),
    "sync_wait64 condition ALWAYS": A.sync_wait64(0, 2, A.ALWAYS),
    "sync_wait64 odd data": A.sync_wait64(0, 3, A.GREATER),
    "store_state odd address": A.store_state(9, A.TIMESTAMP),
    "flush flush-id reg >= 96": A.flush_cache2(3, 3, 2, 100),
    "set_sb_entry endpoint 8": A.set_sb_entry(8, 0),
    "set_sb_entry other 15": A.set_sb_entry(0, 15),
    "heap_operation 2": A.heap_operation(2),
    "heap_set odd": A.heap_set(1),
    "progress_load odd": A.progress_load(95),
    "progress_store odd": A.progress_store(3),
    "finish_fragment odd chunk pair": A.finish_fragment(last=1, first=2),
    "run_fullscreen odd dcd": A.run_fullscreen(dcd=5),
    "run_idvs draw id reg >= 96": A.run_idvs(draw_id_enable=True, draw_id=96),
    "set_exception_handler odd": A.set_exception_handler(2, 3, 0),
}


@pytest.mark.parametrize("word", BAD_ENCODINGS.values(), ids=BAD_ENCODINGS.keys())
def test_invalid_operands_are_cs_instr_invalid(rig: Rig, word):
    res = _fatal(rig, [word], [A.move48(0, DATA), A.move32(2, 0)])
    assert (res.exception_type, res.info) == (0x49, word)  # CS_FATAL CS_INSTR_INVALID


def test_smaller_register_file_is_enforced():
    rig = Rig(reg_count=32, scoreboards=4)
    rig.push([A.move32(31, 1), A.move32(32, 1)])
    res = rig.run()
    assert (res.kind, res.exception_type, rig.st.regs[31]) == ("fatal", 0x49, 1)
    rig2 = Rig(reg_count=32, scoreboards=4)
    rig2.push([A.set_sb_entry(3, 4)])
    assert rig2.run().exception_type == 0x49


def test_bad_ring_configuration_is_cs_config_fault():
    for size, base in ((0x1800, RING), (0, RING), (0x1000, RING + 4)):
        rig = Rig()
        rig.push([A.nop()])
        rig.st.ring_size, rig.st.ring_base = size, base
        res = rig.run()
        assert (res.kind, res.exception_type) == ("fatal", 0x40), (size, base)
    rig = Rig()
    rig.st.insert = 0x2000  # more than a ring's worth of work
    assert rig.run().exception_type == 0x40
    rig = Rig()
    rig.st.insert = 12  # not a whole instruction
    assert rig.run().exception_type == 0x40


def test_bus_error_on_data_access_is_cs_bus_fault(rig: Rig):
    hole = 0x7_0000_0000
    rig.mmu.map(hole, 0x1000, ram=False)  # translates, but nothing answers on the bus
    res = _fatal(rig, [A.sync_add64(0, 2)], [A.move48(0, hole + 0x10), A.move48(2, 1)])
    assert (res.exception_type, res.info) == (0x48, hole + 0x10)


def test_bus_error_on_instruction_fetch_is_cs_bus_fault(rig: Rig):
    hole = 0x7_0000_0000
    rig.mmu.map(hole, 0x1000, ram=False)
    rig.push([A.move48(0, hole), A.move32(2, 8), A.call(0, 2)])
    res = rig.run()
    assert (res.kind, res.exception_type, res.info, res.cmd_ptr) == ("fatal", 0x48, hole, hole)


# -- MMU faults stall and retry -----------------------------------------------------------------


def test_sync_add_on_unmapped_page_stalls_then_completes_once(rig: Rig):
    obj = 0x5_0000_0000
    rig.push([A.move48(0, obj), A.move48(2, 7), A.sync_add64(0, 2, propagate=True), A.move32(4, 4)])
    res = rig.run()
    assert res.kind == "mmu_fault" and res.instructions == 2 and not res.sync_update
    assert (res.fault.va, res.fault.as_nr, res.fault.access) == (obj, 3, Access.ATOMIC)
    assert res.cmd_ptr == RING + 16 and rig.st.extract == 16
    assert rig.run().kind == "mmu_fault"  # still unmapped: same stall, no progress
    rig.mmu.map(obj, 0x1000)
    rig.mmu.w64(obj, 100)
    res = rig.run()
    assert res.kind == "idle" and res.sync_update and res.instructions == 2
    assert rig.mmu.r64(obj) == 107 and rig.st.regs[4] == 4


def test_status_on_the_next_unmapped_page_faults_before_the_value_is_added(rig: Rig):
    obj = 0x6_0000_0000 + 0x1000 - 8  # value on a mapped page, status (+8) on the next one
    rig.mmu.map(obj, 8)
    rig.mmu.w64(obj, 40)
    rig.push([A.move48(0, obj), A.move48(2, 2), A.sync_add64(0, 2, propagate=True)])
    res = rig.run()
    assert res.kind == "mmu_fault" and res.fault.va == obj + 8
    assert rig.mmu.r64(obj) == 40  # the add did not happen
    rig.mmu.map(obj + 8, 0x1000)
    assert rig.run().kind == "idle"
    assert rig.mmu.r64(obj) == 42 and rig.mmu.r32(obj + 8) == 0


def test_write_to_read_only_page_faults_without_side_effects(rig: Rig):
    ro = 0x4_0000_0000
    rig.mmu.map(ro, 0x1000, writable=False)
    rig.mmu.w32(ro, 9)
    rig.push([A.move48(0, ro), A.move32(2, 1), A.sync_add32(0, 2)])
    res = rig.run()
    assert res.kind == "mmu_fault" and res.fault.exception_type == 0xCB
    assert rig.mmu.r32(ro) == 9
    rig.mmu.map(ro, 0x1000, writable=True)
    assert rig.run().kind == "idle" and rig.mmu.r32(ro) == 10


def test_load_multiple_fault_leaves_registers(rig: Rig):
    va = 0x3_0000_0000
    rig.st.regs[40:42] = [0xA, 0xB]
    rig.push([A.move48(0, va), A.load_multiple(40, 0, 0b11)])
    res = rig.run()
    assert res.kind == "mmu_fault" and res.fault.access == Access.READ
    assert rig.st.regs[40:42] == [0xA, 0xB]
    rig.mmu.map(va, 0x1000)
    rig.mmu.w64(va, 0x2222_2222_1111_1111)
    assert rig.run().kind == "idle"
    assert rig.st.regs[40:42] == [0x1111_1111, 0x2222_2222]


def test_instruction_fetch_fault_in_callee_then_retry(rig: Rig):
    code = 0x2_0000_0000
    rig.push([A.move48(0, code), A.move32(2, 16), A.call(0, 2), A.move32(9, 9)])
    res = rig.run()
    assert res.kind == "mmu_fault" and res.fault.va == code
    assert res.cmd_ptr == code and rig.st.in_buf and rig.st.extract == 16
    assert res.instructions == 3  # the CALL itself completed
    rig.mmu.map(code, 0x1000, writable=False)
    rig.mmu.put(code, [A.move32(7, 7), A.move32(8, 8)])
    res = rig.run()
    assert res.kind == "idle" and rig.st.regs[7:10] == [7, 8, 9]


def test_ring_fetch_fault_reports_the_instruction_address():
    rig = Rig()
    rig.push([A.nop()] * 3)
    rig.mmu.unmap(RING, 0x1000)
    res = rig.run()
    assert res.kind == "mmu_fault" and res.fault.va == RING and res.cmd_ptr == RING
    # fetches are plain reads: ring buffers are mapped NOEXEC (§5.2)
    assert rig.mmu.reads[-1][2] == Access.READ


def test_fetch_crossing_a_page_continues_on_the_next_page():
    rig = Rig(ring_size=0x2000)
    rig.st.extract = rig.st.insert = 0x1000 - 8
    rig.push([A.move32(0, 1), A.move32(1, 2)])
    rig.mmu.unmap(RING + 0x1000, 0x1000)
    res = rig.run()
    assert res.kind == "mmu_fault" and res.instructions == 1 and res.fault.va == RING + 0x1000
    rig.mmu.map(RING + 0x1000, 0x1000)
    res = rig.run()
    assert res.kind == "idle" and rig.st.regs[0:2] == [1, 2]


class ExplodingHooks:
    def flush_caches(self) -> None:
        raise RuntimeError("boom")

    def timestamp(self) -> int:
        return 0

    def cycle_count(self) -> int:
        return 0


def test_internal_error_becomes_a_fatal_not_an_exception():
    rig = Rig(hooks=ExplodingHooks())  # type: ignore[arg-type]
    rig.push([A.nop(), A.flush_cache2(3, 3, 2, 0)])
    res = rig.run()
    assert (res.kind, res.exception_type, res.instructions) == ("fatal", 0x68, 1)
    assert res.cmd_ptr == RING + 8

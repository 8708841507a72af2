"""Resident groups run side by side (docs/firmware.md, "Resident groups run side by side").

On hardware every CS front-end executes its own instructions; panthor gives each resident
group a distinct priority on every tick (tick_ctx_apply), which orders access to shared
endpoint resources, not whether a resident stream runs at all. A high-priority stream spinning
on a memory flag that a low-priority group sets must therefore finish.
"""

from __future__ import annotations

from support import cs_asm as A
from support.csf_host import USER_VA, Host
from support.panthor_fw import CSG_STATE_START

FLAG, DONE = USER_VA + 0xA00, USER_VA + 0xA08


def _spin_until_flag() -> list[int]:
    """r10 := *FLAG until non-zero (a busy loop, no SYNC_WAIT), then *DONE := 1."""
    return [A.move48(0, FLAG), A.load_multiple(10, 0, 1), A.branch(-2, A.EQUAL, 10),
            A.move48(2, DONE), A.move32(4, 1), A.sync_set32(2, 4), 0, 0]


def _set_flag() -> list[int]:
    return [A.move48(0, FLAG), A.move32(4, 1), A.sync_set32(0, 4), 0]


def _two_groups() -> tuple[Host, list[int]]:
    h = Host.booted()
    low_ring = h.add_ring()
    h.start_group(0, prio=15)
    h.start_group(1, prio=1, ring=low_ring, state=CSG_STATE_START)
    order: list[int] = []
    run = h.fw.sched.run_cs_slice

    def recording(cs, budget):  # type: ignore[no-untyped-def]
        order.append(cs.csg)
        run(cs, budget)

    h.fw.sched.run_cs_slice = recording
    h.push(_spin_until_flag(), doorbell=1)
    h.push(_set_flag(), doorbell=2, ring=low_ring)
    return h, order


def test_high_priority_spinner_finishes_once_a_low_priority_group_sets_its_flag() -> None:
    h, order = _two_groups()
    h.fw.sched.pump(max_slices=50)
    assert h.ram.read_u32(h.user_pa + 0xA00) == 1, "the low-priority group never ran"
    assert h.ram.read_u32(h.user_pa + 0xA08) == 1, "the spinning group never finished"
    assert h.extract() == h.insert
    assert h.extract(h.rings[0]) == h.rings[0].insert
    assert set(order) == {0, 1}


def test_higher_priority_runs_first_in_each_round() -> None:
    h, order = _two_groups()
    h.fw.sched.pump(max_slices=2)
    assert order == [0, 1]


def test_a_lone_spinner_gets_every_slice() -> None:
    h = Host.booted()
    h.start_group(0, prio=15)
    h.push(_spin_until_flag(), doorbell=1)
    assert h.fw.sched.pump(max_slices=20) == 20  # never idle, never starved of slices
    h.ram.write_u32(h.user_pa + 0xA00, 7)
    h.fw.sched.pump(max_slices=20)
    assert h.ram.read_u32(h.user_pa + 0xA08) == 1 and h.extract() == h.insert

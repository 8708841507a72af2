"""Work items take time (csf/workload.py, docs/command-streams.md "Work items take time"):
RUN_* items occupy their endpoint for the cost model's duration, tracked by the scoreboard
entry SET_SB_ENTRY selected; WAIT blocks on the entries of its mask and nothing else;
deferred operations take effect only after their wait mask drains; PROGRESS_WAIT blocks on
the progress counter, which counts completed items; a stream with work in flight is not
idle; the suspend image carries the work in flight. The clock is the test's."""

from __future__ import annotations

import pytest
from support import cs_asm as A
from support import panthor_fw as pf
from support.csf_host import USER_VA, Host
from support.early_loop import EarlyLoop
from support.interp_doubles import RING, Rig

from qemu_panthor.csf.cs_state import WORK_KINDS, CsExecState
from qemu_panthor.csf.workload import COST_US, ENDPOINT

US = 1e-6
DATA = 0x200000


@pytest.fixture
def rig() -> Rig:
    r = Rig(work_scale=1.0)
    r.mmu.map(DATA, 0x1000)
    return r


def test_wait_blocks_until_the_scoreboard_entry_drains(rig: Rig) -> None:
    rig.push([A.set_sb_entry(2, 0), A.run_compute(), A.wait(1 << 2), A.move32(0, 7)])
    res = rig.run()
    assert res.kind == "blocked_sb" and res.sb_mask == 1 << 2
    assert res.until == pytest.approx(rig.now + COST_US["compute"] * US)
    assert res.cmd_ptr == RING + 16 and rig.st.regs[0] == 0  # still on the WAIT
    rig.now += 10 * US  # half-way: still waiting
    assert rig.run().kind == "blocked_sb"
    rig.now += 10 * US
    res = rig.run()
    assert res.kind == "idle" and rig.st.regs[0] == 7


def test_wait_on_other_entries_does_not_block(rig: Rig) -> None:
    rig.push([A.set_sb_entry(2, 0), A.run_fragment(), A.wait(1 << 0 | 1 << 5),
              A.move32(0, 1)])
    res = rig.run()
    # the WAIT passed; the ring is empty but the fragment item still runs: busy, not idle
    assert rig.st.regs[0] == 1
    assert res.kind == "blocked_sb" and res.until == pytest.approx(
        rig.now + COST_US["fragment"] * US)
    rig.now = res.until
    assert rig.run().kind == "idle"


def test_items_on_one_endpoint_run_one_after_another(rig: Rig) -> None:
    rig.push([A.set_sb_entry(1, 0), A.run_compute(), A.run_compute(), A.run_tiling(),
              A.wait(1 << 1)])
    res = rig.run()
    # two compute items back to back; the tiler item runs beside them on its own endpoint
    assert res.until == pytest.approx(rig.now + 2 * COST_US["compute"] * US)


def test_progress_wait_counts_completed_items(rig: Rig) -> None:
    rig.push([A.move48(10, 2), A.run_compute(progress=True), A.run_fragment(progress=True),
              A.progress_wait(0, 10), A.progress_load(12)])
    t0 = rig.now
    res = rig.run()
    assert res.kind == "blocked_sb" and res.sb_mask == 0
    assert res.until == pytest.approx(t0 + COST_US["fragment"] * US)  # the later of the two
    assert rig.st.progress == 0  # nothing completed yet
    rig.now = t0 + COST_US["compute"] * US
    assert rig.run().kind == "blocked_sb" and rig.st.progress == 1
    rig.now = res.until
    assert rig.run().kind == "idle"
    assert rig.st.progress == 2 and rig.st.reg64(12) == 2


def test_progress_wait_beyond_the_work_in_flight_never_wakes(rig: Rig) -> None:
    rig.push([A.move48(10, 5), A.run_compute(progress=True), A.progress_wait(0, 10)])
    res = rig.run()
    assert res.kind == "blocked_sb" and res.until == float("inf")


def test_deferred_sync_set_waits_for_its_mask(rig: Rig) -> None:
    rig.push([A.move48(20, DATA), A.move32(22, 0x55), A.set_sb_entry(3, 0), A.run_compute(),
              A.sync_set32(20, 22, wait_mask=1 << 3), A.move32(0, 1)])
    res = rig.run()
    assert res.kind == "blocked_sb" and res.sb_mask == 1 << 3
    assert rig.mmu.ram.read_u32(DATA) == 0 and rig.st.regs[0] == 0  # not yet
    rig.now = res.until
    rig.run()
    assert rig.mmu.ram.read_u32(DATA) == 0x55 and rig.st.regs[0] == 1


def test_store_state_samples_after_its_wait_mask(rig: Rig) -> None:
    """STORE_STATE is deferred (genxml v10 Wait mask[16:16]): a timestamp query that waits on
    the draw it follows (panvk: cs_store_state(..., cs_defer(all_iters, SB_ID(LS)))) is
    taken when that work is done, not when the instruction is met."""
    rig.push([A.move48(20, DATA), A.set_sb_entry(3, 0), A.run_compute(),
              A.store_state(20, 0, wait_mask=1 << 3), A.move32(0, 1)])
    res = rig.run()
    assert res.kind == "blocked_sb" and res.sb_mask == 1 << 3
    assert res.until == pytest.approx(rig.now + COST_US["compute"] * US)
    assert rig.mmu.ram.read_u64(DATA) == 0 and rig.st.regs[0] == 0  # not sampled yet
    rig.now = res.until
    assert rig.run().kind == "idle"
    assert rig.mmu.ram.read_u64(DATA) != 0 and rig.st.regs[0] == 1


def test_finish_fragment_waits_for_its_mask_and_signals_its_own_slot(rig: Rig) -> None:
    """FINISH_FRAGMENT is deferred too (Wait mask[16:16], Signal slot[48:4]): it starts once
    the fragment work it waits on is done (the chunks it returns are no longer read), and its
    signal slot, not the SET_SB_ENTRY endpoint entry, tracks it."""
    rig.push([A.set_sb_entry(2, 0), A.run_fragment(),
              A.finish_fragment(signal=5, wait_mask=1 << 2), A.move32(0, 1)])
    t0 = rig.now
    res = rig.run()
    assert res.kind == "blocked_sb" and res.sb_mask == 1 << 2
    assert rig.st.regs[0] == 0
    assert rig.st.work[WORK_KINDS.index("finish_fragment")] == 0  # not issued yet
    rig.now = t0 + COST_US["fragment"] * US
    rig.run()
    assert rig.st.regs[0] == 1
    done = rig.now + COST_US["finish_fragment"] * US
    assert rig.st.sb_until[5] == pytest.approx(done)
    assert rig.st.sb_until[2] == 0.0  # the endpoint entry drained with the fragment item
    assert rig.st.ep_until[ENDPOINT["finish_fragment"]] == pytest.approx(done)


def test_scale_zero_completes_at_once() -> None:
    rig = Rig(work_scale=0.0)
    rig.push([A.set_sb_entry(2, 0), A.run_compute(progress=True), A.wait(1 << 2),
              A.progress_load(4)])
    assert rig.run().kind == "idle" and rig.st.reg64(4) == 1


def test_suspend_image_carries_the_work_in_flight(rig: Rig) -> None:
    rig.push([A.set_sb_entry(4, 0), A.run_fragment(progress=True), A.wait(1 << 4)])
    res = rig.run()
    left = res.until - rig.now
    image = rig.st.serialise(rig.now + 10 * US)  # suspended 10 us into the item
    later = 5000.0
    st = CsExecState.deserialise(image, later)  # resumed elsewhere, later
    assert st.sb_until[4] == pytest.approx(later + left - 10 * US)
    assert st.progress_due == [pytest.approx(later + left - 10 * US)]
    assert st.ep_until[2] == pytest.approx(later + left - 10 * US)
    assert CsExecState.deserialise(CsExecState().serialise(1.0), 2.0).sb_until == [0.0] * 8


def _store_after_compute(host: Host) -> None:
    """A user stream: a compute item on scoreboard 5, WAIT for it, then store 0x99 at
    USER_VA + 0x800; called from the kernel ring."""
    prog = [A.set_sb_entry(5, 0), A.run_compute(), A.wait(1 << 5), A.move48(0, USER_VA + 0x800),
            A.move32(2, 0x99), A.store_multiple(2, 0, 0x1, 0)]
    for k, wd in enumerate(prog):
        host.ram.write_u64(host.user_pa + 8 * k, wd)
    host.push([A.move48(0x40, USER_VA), A.move32(0x42, 8 * len(prog)), A.call(0x40, 0x42)])


def test_firmware_reports_the_scoreboard_wait_and_stays_busy() -> None:
    """CS_STATUS_WAIT holds the awaited scoreboard mask, CS_STATUS_BLOCKED_REASON is
    SB_WAIT, CS_STATUS_SCOREBOARDS the entries in flight; the CSG is not idle until the
    work completes; the stream wakes by itself when it does."""
    host = Host.booted(work_scale=1e5)  # 20 us x 1e5: a 2 s compute item
    host.start_group(0)
    _store_after_compute(host)
    host.fw.sched.pump()
    ci, co = host.csg[0]["input_va"], host.csg[0]["output_va"]
    host.toggle(ci, co, pf.CSG_STATUS_UPDATE)
    host.ring_csg(0)
    assert host.csg_acked(0, pf.CSG_STATUS_UPDATE)
    assert host.cs_out("status_blocked_reason") == 1  # SB_WAIT
    assert host.cs_out("status_wait") == 1 << 5
    assert host.cs_out("status_scoreboards") == 1 << 5
    assert not host.r32(co + 0x18) & 1  # work in flight: not idle
    assert host.ram.read_u32(host.user_pa + 0x800) == 0
    host.now += 2.0
    assert host.fw.sched.wake_due() == 1
    host.fw.sched.pump()
    assert host.ram.read_u32(host.user_pa + 0x800) == 0x99
    host.toggle(ci, co, pf.CSG_STATUS_UPDATE)
    host.ring_csg(0)
    assert host.cs_out("status_scoreboards") == 0 and host.cs_out("status_blocked_reason") == 0


def _hang_program(host: Host) -> None:
    prog = [A.set_sb_entry(1, 0), A.run_compute(), A.wait(1 << 1)]
    for k, wd in enumerate(prog):
        host.ram.write_u64(host.user_pa + 8 * k, wd)
    host.push([A.move48(0x40, USER_VA), A.move32(0x42, 8 * len(prog)), A.call(0x40, 0x42)])


def test_a_hung_work_item_raises_the_progress_timer_event() -> None:
    """WORK_HANG (test port): the item never completes. After GLB progress_timer x 1024 GPU
    cycles (panthor: 2560000 -> 3.28 s at 800 MHz) with no work completing, the firmware
    raises CSG PROGRESS_TIMER_EVENT (CSG ack bit 31) and JOB_INT bit i, once."""
    from qemu_panthor.testport import FaultInjector, InjectOp, encode

    host = Host.booted()
    port = FaultInjector(host.gpu, host.fw)
    assert port.inject(encode(InjectOp.WORK_HANG)) == 0
    host.start_group(0)
    _hang_program(host)
    host.fw.sched.pump()
    co = host.csg[0]["output_va"]
    timeout = 2560000 * 1024 / host.gpu.model.core_clock_hz
    assert host.fw.events.progress_timeout == pytest.approx(timeout)
    assert port.fired == 1 and port.work_armed == 0
    host.now += timeout - 0.01
    host.fw.events.check_progress()
    assert not host.r32(co) & pf.CSG_PROGRESS_TIMER_EVENT  # not yet
    host.now += 0.02
    host.fw.events.check_progress()
    ack = host.r32(co)
    req = host.r32(host.csg[0]["input_va"])
    assert (ack ^ req) & pf.CSG_PROGRESS_TIMER_EVENT  # raised (toggle protocol)
    host.now += 10
    host.fw.sched.wake_due()
    host.fw.sched.pump()
    host.fw.events.check_progress()
    assert host.r32(co) == ack  # once per residency


def test_slow_work_that_completes_in_time_is_progress() -> None:
    host = Host.booted(work_scale=1e5)  # a 2 s item: within the 3.28 s timeout
    host.start_group(0)
    _hang_program(host)
    host.fw.sched.pump()
    co = host.csg[0]["output_va"]
    host.now += 5
    host.fw.events.check_progress()
    assert not (host.r32(co) ^ host.r32(host.csg[0]["input_va"])) & pf.CSG_PROGRESS_TIMER_EVENT


def test_a_wake_up_timer_that_fires_early_still_wakes_the_stream() -> None:
    """An event loop may run the scoreboard-wait timer before the work's completion time
    (uvloop: up to ~1.3 ms early). The stream must neither run early nor be forgotten: it
    used to stay blocked for good, and a panvk frame hit panthor's 5 s job timeout."""
    host = Host.booted(work_scale=1e3)  # a 20 ms compute item
    loop = EarlyLoop()
    host.fw.sched._loop = loop  # type: ignore[assignment]  # its timers, fired by hand
    host.start_group(0)
    _store_after_compute(host)
    host.fw.sched.pump()
    assert len(loop.pending) == 1  # the wake-up timer
    host.now += 0.0195  # 0.5 ms before the item completes, the loop runs the timer
    loop.fire()
    host.fw.sched.pump()
    assert host.ram.read_u32(host.user_pa + 0x800) == 0  # not woken early...
    assert len(loop.pending) == 1  # ...and not forgotten
    host.now += 0.001
    loop.fire()
    host.fw.sched.pump()
    assert host.ram.read_u32(host.user_pa + 0x800) == 0x99

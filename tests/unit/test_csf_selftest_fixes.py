"""Regression tests for firmware-model bugs found by the in-guest selftests ([selftests])."""

from __future__ import annotations

from support import panthor_fw as pf
from support.csf_host import USER_VA, Host, kernel_job


def _booted_host() -> Host:
    h = Host()
    h.boot()
    h.glb_init()
    h.job_irq()
    return h


def test_second_sync_update_before_the_host_acks_keeps_the_event_pending() -> None:
    """CSG events are toggles (pending while ack != req). Two jobs finishing before the host
    acknowledges the first SYNC_UPDATE must leave the event pending; toggling twice cancelled
    it, and the host never signalled the second job's fence (seen with 13 groups in flight)."""
    h = _booted_host()
    h.start_group(0)
    for k, wd in enumerate([0x0100000000010800, 0x010200000000002A, 0x3300000200000000]):
        h.ram.write_u64(h.user_pa + 8 * k, wd)
    ci, co = h.csg[0]["input_va"], h.csg[0]["output_va"]
    for n in (1, 2):  # the host does not ack in between
        h.push(kernel_job(USER_VA, 24, 0x0200_0000))
        h.fw.sched.pump()
        assert h.ram.read_u64(h.sync_pa) == n
        assert (h.r32(ci) ^ h.r32(co)) & pf.CSG_SYNC_UPDATE, f"SYNC_UPDATE lost after job {n}"
    # once acknowledged (req := ack), the next completion raises it again
    h.update(ci, h.r32(co) & pf.CSG_SYNC_UPDATE, pf.CSG_SYNC_UPDATE)
    assert not (h.r32(ci) ^ h.r32(co)) & pf.CSG_SYNC_UPDATE
    h.push(kernel_job(USER_VA, 24, 0x0200_0000))
    h.fw.sched.pump()
    assert (h.r32(ci) ^ h.r32(co)) & pf.CSG_SYNC_UPDATE


def test_cs_fatal_event_and_cs_irq_req_are_raised_not_toggled() -> None:
    """CS events follow the same rule: output bit := NOT input bit, whatever it was before."""
    h = _booted_host()
    h.start_group(0)
    fw = h.fw
    cs = fw.csgs[0].streams[0]
    fw.events.cs_event(cs, pf.CS_FATAL)
    fw.events.cs_event(cs, pf.CS_FATAL)  # a second report before the host acked: still pending
    so, si = h.cs[0][0]["output_va"], h.cs[0][0]["input_va"]
    assert (h.r32(so) ^ h.r32(si)) & pf.CS_FATAL
    irq_req = h.r32(h.csg[0]["output_va"] + pf.CsgOutput.off("cs_irq_req"))
    irq_ack = h.r32(h.csg[0]["input_va"] + pf.CsgInput.off("cs_irq_ack"))
    assert (irq_req ^ irq_ack) & 1


def _stall_on_unmapped_store(h: Host) -> int:
    """Run a user stream whose store hits an unmapped VA: the CS stalls on the MMU fault."""
    hole = 0x0765_4320
    words = [0x0100000000000000 | 0x10800, 0x02020000_11111111, 0x1502000000010000,  # st [0x10800]
             0x0100000000000000 | hole, 0x02020000_22222222, 0x1502000000010000]  # st [hole]
    for k, wd in enumerate(words):
        h.ram.write_u64(h.user_pa + 8 * k, wd)
    h.push(kernel_job(USER_VA, 8 * len(words), 0x0200_0000))
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert cs.stalled_as == 1 and h.r(0x2000) & 2  # MMU_INT bit 1
    assert h.ram.read_u32(h.user_pa + 0x800) == 0x11111111
    h.w(0x2004, 2)  # MMU_INT_CLEAR, as the driver's handler does: no retry, no new fault
    h.fw.sched.pump()
    assert cs.stalled_as == 1 and not cs.fatal and not h.r(0x2000) & 2
    return hole


def _cs_fatal_pending(h: Host) -> bool:
    so, si = h.cs[0][0]["output_va"], h.cs[0][0]["input_va"]
    return bool((h.r32(so) ^ h.r32(si)) & pf.CS_FATAL)


def test_stalled_cs_fails_when_the_driver_disables_the_as() -> None:
    """panthor answers an unhandled fault by setting the AS UNMAPPED: the stalled access is
    terminated and the CS reports CS_FATAL with the fault, instead of stalling forever."""
    h = _booted_host()
    h.start_group(0)
    hole = _stall_on_unmapped_store(h)
    base = 0x2400 + 1 * 0x40
    h.w(base + 0x30, 1, 8)  # TRANSCFG ADRMODE UNMAPPED
    h.w(base + 0x18, 1)  # UPDATE
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert cs.fatal and cs.stalled_as is None
    assert _cs_fatal_pending(h)
    assert h.cs_out("fatal") & 0xFF == 0xC2  # TRANSLATION_FAULT_2 (level 2)
    assert h.cs_out("fatal_info") == hole
    assert not h.r(0x2000) & 2  # no new MMU fault raised


def test_stalled_cs_is_not_replayed_into_another_vms_tables() -> None:
    """AS1 re-assigned to another VM (new TRANSTAB) while a CS is stalled on its old fault:
    the old access must not run through the new owner's page tables."""
    h = _booted_host()
    h.start_group(0)
    _stall_on_unmapped_store(h)
    other = type(h.user_vm)(h.ram, h.alloc)  # another VM: maps the same user VA elsewhere
    other_pa = h.alloc.page()
    other.map(USER_VA, other_pa, 0x1000, xn=False)
    h.as_enable(1, other.root)
    cs = h.fw.csgs[0].streams[0]
    h.fw.sched.pump()  # the retry (restarted by UPDATE) meets the new tables
    assert cs.fatal and _cs_fatal_pending(h)
    assert h.ram.read_u32(other_pa + 0x800) == 0  # nothing replayed into the other VM
    assert not h.r(0x2000) & 2  # and no fault raised in the new owner's name


def test_stalled_cs_retries_when_the_same_tables_are_fixed() -> None:
    """The driver maps the missing page and UNLOCKs/UPDATEs the same tables: retry succeeds."""
    h = _booted_host()
    h.start_group(0)
    hole = _stall_on_unmapped_store(h)
    pa = h.alloc.page()
    h.user_vm.map(hole & ~0xFFF, pa, 0x1000)
    h.as_enable(1, h.user_vm.root)  # same root: UPDATE
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert not cs.fatal and not _cs_fatal_pending(h)
    assert h.ram.read_u32(pa + (hole & 0xFFF)) == 0x22222222

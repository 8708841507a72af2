"""Firmware events are raised, not toggled: an event bit of an output block is set to NOT the
host's input bit, so it stays pending however many times it is raised before the host acks it
(reference csf-interface.md "Request / acknowledge protocol"). Both cases were found by the
in-guest selftests (docs/selftests.md)."""

from __future__ import annotations

from support import panthor_fw as pf
from support.csf_host import USER_VA, Host, kernel_job


def test_second_sync_update_before_the_host_acks_keeps_the_event_pending() -> None:
    """CSG events are toggles (pending while ack != req). Two jobs finishing before the host
    acknowledges the first SYNC_UPDATE must leave the event pending; toggling twice cancelled
    it, and the host never signalled the second job's fence (seen with 13 groups in flight)."""
    h = Host.booted()
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
    h = Host.booted()
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

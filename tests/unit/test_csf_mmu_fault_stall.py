"""A CS stalled on an MMU fault, as panthor 7.2 handles it, with AS slots shared by many VMs.

Reproduces deterministically the sequences behind the in-guest ``job_fault_among_many_vms``
failures (reference §4.3-4.5, §7.3, §7.6): the driver's MMU handler (MMU_INT_CLEAR, mask the
AS, TRANSCFG = UNMAPPED + UPDATE), a runtime suspend/resume that forgets which slots were
faulty, slot recycling for another VM, and groups suspended while stalled then resumed on
another AS. A stalled transaction is restarted by an AS command, never by the interrupt
clear; on RESUME it is re-issued in the AS that CSG_INPUT.config gives *now*.
"""

from __future__ import annotations

from support import panthor_fw as pf
from support.csf_host import SYNCOBJ_VA, USER_VA, Host, Tables, kernel_job

from qemu_panthor.mmu import introspect

MMU_INT_RAWSTAT, MMU_INT_CLEAR, MMU_INT_MASK, MMU_INT_STAT = 0x2000, 0x2004, 0x2008, 0x200C
HOLE = 0x0765_4320  # never mapped in the faulting VM
DATA = USER_VA + 0x800  # a counter in the faulting VM

# user stream: counter += 1 (LOAD/ADD/STORE through r0), then store 0x22222222 at HOLE
FAULTING_STREAM = [
    0x0100000000000000 | DATA,  # MOVE48 r0, DATA
    0x1403000000010000,  # LOAD_MULTIPLE r3 <- [r0]
    0x1003030000000001,  # ADD_IMMEDIATE32 r3 = r3 + 1
    0x1503000000010000,  # STORE_MULTIPLE r3 -> [r0]
    0x0100000000000000 | HOLE,  # MOVE48 r0, HOLE
    0x02020000_22222222,  # MOVE32 r2, 0x22222222
    0x1502000000010000,  # STORE_MULTIPLE r2 -> [r0]   <- faults
]


def _as_base(n: int) -> int:
    return 0x2400 + n * 0x40


def _booted() -> Host:
    h = Host()
    h.boot()
    h.glb_init()
    h.job_irq()
    h.w(MMU_INT_MASK, 0xFF)  # panthor's MMU IRQ: every page-fault bit unmasked
    return h


def _stall(h: Host, *, as_nr: int = 1) -> None:
    """Run FAULTING_STREAM in group 0 on ``as_nr``: it stalls on the store to HOLE."""
    h.start_group(0, as_nr=as_nr)
    for k, wd in enumerate(FAULTING_STREAM):
        h.ram.write_u64(h.user_pa + 8 * k, wd)
    h.push(kernel_job(USER_VA, 8 * len(FAULTING_STREAM), SYNCOBJ_VA))
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert cs.stalled_as == as_nr and not cs.fatal
    assert h.r(MMU_INT_RAWSTAT) == 1 << as_nr
    assert h.r(_as_base(as_nr) + 0x20) == HOLE  # AS_FAULTADDRESS
    assert h.r(_as_base(as_nr) + 0x1C) & 0xFF == 0xC2  # FAULTSTATUS: TRANSLATION_FAULT_2
    assert h.ram.read_u32(h.user_pa + 0x800) == 1


def _faults(h: Host, as_nr: int) -> int:
    return introspect.as_state(h.gpu.mmu, as_nr)["faults"]


def _driver_handles_fault(h: Host, as_nr: int) -> None:
    """panthor_mmu_irq_handler (§4.4): read the fault, clear it, mask the AS, disable it.
    The firmware runs between the driver's register writes (each is its own vfio-user
    message; the scheduler task runs in between), so pump after each step."""
    assert h.r(MMU_INT_STAT) & (1 << as_nr)
    h.r(_as_base(as_nr) + 0x1C)
    h.w(MMU_INT_CLEAR, 1 << as_nr)
    h.fw.sched.pump()
    h.w(MMU_INT_MASK, h.r(MMU_INT_MASK) & ~(1 << as_nr))
    h.w(0x30, 0x23304)  # GPU_CMD FLUSH_CACHES (as_disable step 2)
    h.fw.sched.pump()
    _as_disable(h, as_nr)


def _as_disable(h: Host, as_nr: int) -> None:
    base = _as_base(as_nr)
    h.w(base + 0x00, 0, 8)
    h.w(base + 0x08, 0, 8)
    h.w(base + 0x30, 1, 8)  # TRANSCFG ADRMODE UNMAPPED
    h.w(base + 0x18, 1)  # UPDATE


def _cs_fatal_pending(h: Host) -> bool:
    so, si = h.cs[0][0]["output_va"], h.cs[0][0]["input_va"]
    return bool((h.r32(so) ^ h.r32(si)) & pf.CS_FATAL)


def _other_vm(h: Host) -> tuple[Tables, int]:
    """Another VM: maps the ring, syncobj and user stream pages too, and HOLE to a page."""
    vm = Tables(h.ram, h.alloc)
    vm.map(0x0100_0000, h.ring_pa, 0x1000, xn=False)
    vm.map(SYNCOBJ_VA, h.sync_pa, 0x1000)
    vm.map(USER_VA, h.user_pa, 0x1000, xn=False)
    hole_pa = h.alloc.page()
    vm.map(HOLE & ~0xFFF, hole_pa, 0x1000)
    return vm, hole_pa


def test_interrupt_clear_alone_does_not_restart_the_stalled_access() -> None:
    """Clearing MMU_INT re-arms the report; it does not replay the transaction (kbase clears
    before the flush that restarts it). Replaying here latched the same fault again."""
    h = _booted()
    _stall(h)
    before = _faults(h, 1)
    h.w(MMU_INT_CLEAR, 2)
    h.fw.sched.pump()
    assert _faults(h, 1) == before  # not re-issued
    assert h.r(MMU_INT_RAWSTAT) == 0
    cs = h.fw.csgs[0].streams[0]
    assert cs.stalled_as == 1 and not cs.fatal


def test_unhandled_fault_leaves_no_stale_interrupt_for_the_next_owner_of_the_slot() -> None:
    """The in-guest failure, step by step: panthor handles the fault (clear, mask, UNMAPPED),
    kills the group, runtime-suspends and resumes (faulty slots forgotten, the masked bit is
    not cleared: MMU_INT_CLEAR = the software mask), then gives AS1 to another VM and
    unmasks its bit without clearing. A fault re-latched after the clear fired right then,
    in the new VM's name, and killed its group."""
    h = _booted()
    _stall(h)
    _driver_handles_fault(h, 1)
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert cs.fatal and _cs_fatal_pending(h)
    # CS_FATAL CS_BUS_FAULT: kbase cs_error_worker, "For an invalid GPU page fault,
    # CS_BUS_FAULT fatal error is expected after the page fault handler disables the AS"
    assert h.cs_out("fatal") & 0xFF == 0x48 and h.cs_out("fatal_info") == HOLE
    assert h.r(MMU_INT_RAWSTAT) == 0  # the terminated access raised nothing new
    assert _faults(h, 1) == 1
    h.csg_req(0, pf.CSG_STATE_TERMINATE)
    assert h.csg_acked(0, pf.CSG_STATE_MASK)
    # runtime suspend + resume: panthor_mmu_resume writes CLEAR/MASK = sw mask (AS1 excluded)
    h.w(MMU_INT_MASK, 0)
    h.w(MMU_INT_CLEAR, 0xFD)
    h.w(MMU_INT_MASK, 0xFD)
    # another VM gets AS1: the slot is not flagged faulty any more, so no clear before unmask
    vm, hole_pa = _other_vm(h)
    h.w(MMU_INT_MASK, 0xFF)
    h.as_enable(1, vm.root)
    assert h.r(MMU_INT_STAT) == 0, "a fault of the previous owner fired in the new VM's name"
    # and the new VM's own job runs: the same stream, whose HOLE this VM maps
    h.ram.write_u32(h.user_pa + 0x800, 0)
    h.start_group(1, as_nr=1)
    h.push(kernel_job(USER_VA, 8 * len(FAULTING_STREAM), SYNCOBJ_VA), doorbell=2)
    h.fw.sched.pump()
    assert h.extract() == h.insert and not h.fw.csgs[1].streams[0].fatal
    assert h.ram.read_u32(hole_pa + (HOLE & 0xFFF)) == 0x22222222
    assert h.r(MMU_INT_RAWSTAT) == 0


def test_group_suspended_while_stalled_reissues_the_access_in_its_new_as() -> None:
    """SUSPEND while the CS is stalled (panthor's tick can evict a non-idle group before its
    MMU IRQ thread ran); the driver then disables AS1, gives it to another VM, and resumes
    the group on AS2. The faulting store is re-issued once, in AS2 (the AS CSG config gives
    at RESUME): the fault is reported in AS2, never in AS1, nothing lands in the VM that
    owns AS1 now, and the instructions before it are not replayed."""
    h = _booted()
    _stall(h, as_nr=1)
    cs = h.fw.csgs[0].streams[0]
    extract = h.extract()
    h.csg_req(0, pf.CSG_STATE_SUSPEND)
    assert h.csg_acked(0, pf.CSG_STATE_MASK)
    assert h.extract() == extract and extract != h.insert  # not idle: the job is in flight
    _driver_handles_fault(h, 1)  # the IRQ thread runs now; nothing is resident on AS1
    assert h.r(MMU_INT_RAWSTAT) == 0
    vm_x, hole_x = _other_vm(h)  # AS1 recycled for VM X (as_disable(recycle) + enable)
    h.w(MMU_INT_MASK, h.r(MMU_INT_MASK) | 2)
    h.as_enable(1, vm_x.root)
    h.as_enable(2, h.user_vm.root)  # the faulting VM re-activated on AS2
    h.start_group(0, state=pf.CSG_STATE_RESUME, as_nr=2)
    assert h.csg_acked(0, pf.CSG_STATE_MASK)
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert cs.stalled_as == 2 and not cs.fatal
    assert h.r(MMU_INT_RAWSTAT) == 1 << 2  # reported in the group's current AS ...
    assert h.r(_as_base(2) + 0x20) == HOLE
    assert h.ram.read_u32(hole_x + (HOLE & 0xFFF)) == 0  # ... not replayed into VM X
    assert h.ram.read_u32(h.user_pa + 0x800) == 1  # the increment before it ran once
    _driver_handles_fault(h, 2)
    h.fw.sched.pump()
    assert cs.fatal and h.cs_out("fatal_info") == HOLE
    assert h.r(MMU_INT_RAWSTAT) == 0


def test_group_suspended_while_stalled_completes_once_its_vm_maps_the_page() -> None:
    """The re-issued access uses the tables of the group's VM at RESUME time: with the page
    now mapped (the VM was re-activated, UPDATE), the store lands and the job completes."""
    h = _booted()
    _stall(h, as_nr=1)
    h.csg_req(0, pf.CSG_STATE_SUSPEND)
    assert h.csg_acked(0, pf.CSG_STATE_MASK)
    h.w(MMU_INT_CLEAR, 2)
    pa = h.alloc.page()
    h.user_vm.map(HOLE & ~0xFFF, pa, 0x1000)
    h.as_enable(3, h.user_vm.root)  # re-activated on another slot
    h.start_group(0, state=pf.CSG_STATE_RESUME, as_nr=3)
    h.fw.sched.pump()
    assert h.ram.read_u32(pa + (HOLE & 0xFFF)) == 0x22222222
    assert h.ram.read_u32(h.user_pa + 0x800) == 1
    assert h.ram.read_u64(h.sync_pa) == 1  # the job's SYNC_ADD ran: the job completed
    assert h.extract() == h.insert
    assert h.r(MMU_INT_RAWSTAT) == 0


def test_fatal_stream_stays_halted_across_suspend_and_resume() -> None:
    """A CS that raised CS_FATAL is halted until the group is terminated; a SUSPEND/RESUME
    before the host handled the event must not restart it from its ring extract (with lost
    registers) nor raise a second event."""
    h = _booted()
    h.start_group(0)
    stream = [*FAULTING_STREAM[:4], 0xFF00000000000000]  # counter += 1, then a bad opcode
    for k, wd in enumerate(stream):
        h.ram.write_u64(h.user_pa + 8 * k, wd)
    h.push(kernel_job(USER_VA, 8 * len(stream), SYNCOBJ_VA))
    h.fw.sched.pump()
    assert _cs_fatal_pending(h) and h.cs_out("fatal") & 0xFF == 0x49
    h.csg_req(0, pf.CSG_STATE_SUSPEND)
    h.start_group(0, state=pf.CSG_STATE_RESUME)
    assert h.fw.sched.pump() == 0
    cs = h.fw.csgs[0].streams[0]
    assert cs.fatal and not cs.runnable
    assert h.ram.read_u32(h.user_pa + 0x800) == 1
    assert h.ram.read_u64(h.sync_pa) == 0


def test_stalled_access_restarts_on_unlock_of_the_same_tables() -> None:
    """An AS command other than UPDATE restarts it too (a VM_BIND's LOCK/UNLOCK while the
    CS is stalled): the access is retried and, still unmapped, stalls again without a second
    interrupt while the first is pending (first fault wins)."""
    h = _booted()
    _stall(h)
    base = _as_base(1)
    h.w(base + 0x10, (HOLE & ~0x7FFF) | 14, 8)  # LOCKADDR: 32 KiB around HOLE
    h.w(base + 0x18, 2)  # LOCK: restarts nothing
    h.fw.sched.pump()
    assert _faults(h, 1) == 1
    h.w(base + 0x18, 3)  # UNLOCK: restarts the stalled access
    h.fw.sched.pump()
    assert _faults(h, 1) == 2
    assert introspect.as_state(h.gpu.mmu, 1)["faults_dropped"] == 1
    cs = h.fw.csgs[0].streams[0]
    assert cs.stalled_as == 1 and not cs.fatal
    assert h.r(MMU_INT_RAWSTAT) == 2


# -- what the driver does to the AS of a stalled CS: disable it, give it to another VM, or fix
# the tables (found by the in-guest selftests, docs/selftests.md) ------------------------------
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


def test_stalled_cs_fails_when_the_driver_disables_the_as() -> None:
    """panthor answers an unhandled fault by setting the AS UNMAPPED: the stalled access is
    terminated and the CS reports CS_FATAL CS_BUS_FAULT (kbase cs_error_worker), instead of
    stalling forever."""
    h = Host.booted()
    h.start_group(0)
    hole = _stall_on_unmapped_store(h)
    base = 0x2400 + 1 * 0x40
    h.w(base + 0x30, 1, 8)  # TRANSCFG ADRMODE UNMAPPED
    h.w(base + 0x18, 1)  # UPDATE
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert cs.fatal and cs.stalled_as is None
    assert _cs_fatal_pending(h)
    assert h.cs_out("fatal") & 0xFF == 0x48  # CS_BUS_FAULT; the MMU fault went on MMU_INT
    assert h.cs_out("fatal_info") == hole
    assert not h.r(0x2000) & 2  # no new MMU fault raised


def test_stalled_cs_is_not_replayed_into_another_vms_tables() -> None:
    """AS1 re-assigned to another VM (new TRANSTAB) while a CS is stalled on its old fault:
    the old access must not run through the new owner's page tables."""
    h = Host.booted()
    h.start_group(0)
    _stall_on_unmapped_store(h)
    other = type(h.user_vm)(h.ram, h.alloc)  # another VM: maps the same user VA elsewhere
    other_pa = h.alloc.page()
    other.map(USER_VA, other_pa, 0x1000, xn=False)
    h.as_enable(1, other.root)
    cs = h.fw.csgs[0].streams[0]
    h.fw.sched.pump()  # the retry (restarted by UPDATE) meets the new tables
    assert cs.fatal and _cs_fatal_pending(h) and h.cs_out("fatal") & 0xFF == 0x48
    assert h.ram.read_u32(other_pa + 0x800) == 0  # nothing replayed into the other VM
    assert not h.r(0x2000) & 2  # and no fault raised in the new owner's name


def test_stalled_cs_retries_when_the_same_tables_are_fixed() -> None:
    """The driver maps the missing page and UNLOCKs/UPDATEs the same tables: retry succeeds."""
    h = Host.booted()
    h.start_group(0)
    hole = _stall_on_unmapped_store(h)
    pa = h.alloc.page()
    h.user_vm.map(hole & ~0xFFF, pa, 0x1000)
    h.as_enable(1, h.user_vm.root)  # same root: UPDATE
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert not cs.fatal and not _cs_fatal_pending(h)
    assert h.ram.read_u32(pa + (hole & 0xFFF)) == 0x22222222

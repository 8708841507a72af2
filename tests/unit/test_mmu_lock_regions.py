"""Lock regions (docs/mmu.md, "Lock regions"): while AS_COMMAND LOCK holds a region, GPU
accesses into it stall until UNLOCK (or FLUSH_PT/FLUSH_MEM) ends the lock, so the driver can
rewrite those page tables atomically; accesses outside the region proceed."""

from __future__ import annotations

from support import cs_asm as A
from support.csf_host import USER_VA, Host, as_base
from support.interp_doubles import RING, Rig

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.memory import RamRegion, SparseRam
from qemu_panthor.mmu import Mmu

LOCKADDR, COMMAND = 0x10, 0x18
LOCK, UNLOCK, FLUSH_PT, FLUSH_MEM, UPDATE = 2, 3, 4, 5, 1


def _lockaddr(va: int, width: int) -> int:
    """AS_LOCKADDR: base | width, region size 2^(width+1) (docs/reference/mmu.md)."""
    return (va & ~((1 << (width + 1)) - 1)) | width


def _mmu() -> Mmu:
    ram = SparseRam()
    ram.add(RamRegion(0x8000_0000, bytearray(1 << 20)))
    return Mmu(ram, IrqBlock("mmu"), as_present=0xFF, va_bits=48, pa_bits=40)


def _cmd(mmu: Mmu, n: int, cmd: int, lockaddr: int | None = None) -> None:
    off = 0x400 + n * 0x40
    if lockaddr is not None:
        mmu.write32(off + LOCKADDR, lockaddr & 0xFFFFFFFF)
        mmu.write32(off + LOCKADDR + 4, lockaddr >> 32)
    mmu.write32(off + COMMAND, cmd)


def test_lock_covers_its_region_in_its_address_space_only() -> None:
    mmu = _mmu()
    _cmd(mmu, 1, LOCK, _lockaddr(0x40_0000, 15))  # 64 KiB at 4 MiB
    assert mmu.lock_stalls(1, 0x40_0000, 4)
    assert mmu.lock_stalls(1, 0x40_FFFC, 8)  # straddles the end
    assert mmu.lock_stalls(1, 0x3F_FFFC, 8)  # straddles the start
    assert not mmu.lock_stalls(1, 0x41_0000, 4)
    assert not mmu.lock_stalls(1, 0x3F_F000, 0x1000)
    assert not mmu.lock_stalls(2, 0x40_0000, 4)  # another AS


def test_small_lock_widths_round_up_to_the_32k_minimum() -> None:
    mmu = _mmu()
    _cmd(mmu, 1, LOCK, _lockaddr(0x40_0000, 11))  # asks for 4 KiB
    assert mmu.lock_stalls(1, 0x40_7FF0, 4)  # 32 KiB are locked
    assert not mmu.lock_stalls(1, 0x40_8000, 4)


def test_unlock_and_flushes_end_the_lock_update_and_nop_do_not() -> None:
    for ender in (UNLOCK, FLUSH_PT, FLUSH_MEM):
        mmu = _mmu()
        _cmd(mmu, 3, LOCK, _lockaddr(0x10_0000, 14))
        _cmd(mmu, 3, UPDATE)
        _cmd(mmu, 3, 0)
        assert mmu.lock_stalls(3, 0x10_0000, 4)
        _cmd(mmu, 3, ender)
        assert not mmu.lock_stalls(3, 0x10_0000, 4) and mmu.locked_ases == 0


def test_gpu_reset_drops_locks() -> None:
    mmu = _mmu()
    _cmd(mmu, 1, LOCK, _lockaddr(0x10_0000, 14))
    mmu.reset()
    assert not mmu.lock_stalls(1, 0x10_0000, 4) and mmu.locked_ases == 0


# -- the command-stream front-end stalls on a locked region -----------------------------------
DATA = 0x200000


def test_store_into_a_locked_region_stalls_and_completes_after_unlock() -> None:
    rig = Rig()
    rig.mmu.map(DATA, 0x1000)
    rig.mmu.lock(DATA, 0x8000)
    rig.push([A.move48(0, DATA), A.move32(2, 0x77), A.store_multiple(2, 0, 1), A.move32(3, 1)])
    res = rig.run()
    assert res.kind == "lock_stall"
    assert res.cmd_ptr == RING + 16 and rig.st.extract == 16  # on the STORE, not past it
    assert rig.mmu.ram.read_u32(DATA) == 0  # nothing committed
    assert rig.run().kind == "lock_stall"  # still locked: stalls again
    rig.mmu.unlock()
    assert rig.run().kind == "idle"
    assert rig.mmu.ram.read_u32(DATA) == 0x77 and rig.st.regs[3] == 1


def test_access_outside_the_locked_region_proceeds() -> None:
    rig = Rig()
    rig.mmu.map(DATA, 0x1000)
    rig.mmu.lock(DATA + 0x10000, 0x8000)
    rig.push([A.move48(0, DATA), A.move32(2, 0x77), A.store_multiple(2, 0, 1)])
    assert rig.run().kind == "idle" and rig.mmu.ram.read_u32(DATA) == 0x77


def test_instruction_fetch_from_a_locked_region_stalls() -> None:
    rig = Rig()
    rig.mmu.lock(RING, 0x8000)
    rig.push([A.move32(2, 5)])
    assert rig.run().kind == "lock_stall" and rig.st.regs[2] == 0
    rig.mmu.unlock()
    assert rig.run().kind == "idle" and rig.st.regs[2] == 5


def test_firmware_resumes_a_lock_stalled_stream_on_unlock_not_before() -> None:
    """Through the whole firmware: the stream is not idle while stalled, an MMU_INT clear
    does not restart it, the driver's UNLOCK does, and its store lands once."""
    h = Host.booted()
    h.start_group(0)
    base = as_base(1)
    h.w(base + LOCKADDR, _lockaddr(USER_VA, 14), 8)
    h.w(base + COMMAND, LOCK)
    h.push([A.move48(0, USER_VA + 0x800), A.move32(2, 0x1234), A.store_multiple(2, 0, 1),
            0, 0, 0, 0, 0])
    h.fw.sched.pump()
    cs = h.fw.csgs[0].streams[0]
    assert cs.stalled_as == 1 and not cs.fatal and not cs.idle
    assert h.ram.read_u32(h.user_pa + 0x800) == 0
    h.w(0x2004, 0xFFFFFFFF)  # MMU_INT_CLEAR: no restart
    h.fw.sched.pump()
    assert h.ram.read_u32(h.user_pa + 0x800) == 0 and cs.stalled_as == 1
    h.w(base + COMMAND, UNLOCK)
    h.fw.sched.pump()
    assert h.ram.read_u32(h.user_pa + 0x800) == 0x1234
    assert h.extract() == h.insert and cs.stalled_as is None and not cs.fatal
    assert h.r(0x2000) == 0  # MMU_INT_RAWSTAT: a lock stall is not a fault

"""MMU registers, AS commands, fault latching/clearing, TLB behaviour and the panthor 7.2
register sequences of reference §4.3 executed against the model. Offsets and codes are
written from the reference, not imported from the model."""

from __future__ import annotations

import logging

import pytest
from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.mmu import Access, Mmu, MmuFault, Translation, introspect

# §2.5/§4.4: MMU_INT relative to the MMU block base 0x2000
RAWSTAT, CLEAR, MASK, STAT = 0x0, 0x4, 0x8, 0xC
# §4.1 per-AS offsets
TRANSTAB, MEMATTR, LOCKADDR, COMMAND = 0x00, 0x08, 0x10, 0x18
FAULTSTATUS, FAULTADDRESS, STATUS, TRANSCFG, FAULTEXTRA = 0x1C, 0x20, 0x28, 0x30, 0x38
NOP, UPDATE, LOCK, UNLOCK, FLUSH_PT, FLUSH_MEM = range(6)
MEMATTR_NC = 0x4C4C4C4C_8C4C8F4C  # §5.1 non-coherent AS_MEMATTR
TRANSCFG_48 = 0x420001C6
TRANSCFG_32 = 0x420005C6
RW = ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE
RO = ptw.IOMMU_READ | ptw.IOMMU_CACHE


def AS(n: int, reg: int) -> int:
    return 0x400 + n * 0x40 + reg


class Driver:
    """The 7.2 panthor register sequences (§4.3), driving the model through read32/write32."""

    def __init__(self, mmu: Mmu) -> None:
        self.mmu = mmu
        self.locked: dict[int, bool] = {}

    def w64(self, off: int, v: int) -> None:  # gpu_write64: LO then HI
        self.mmu.write32(off, v & 0xFFFFFFFF)
        self.mmu.write32(off + 4, v >> 32)

    def r64(self, off: int) -> int:
        return self.mmu.read32(off) | self.mmu.read32(off + 4) << 32

    def send_cmd(self, n: int, cmd: int) -> None:  # as_send_cmd_and_wait
        for _ in range(3):
            if not self.mmu.read32(AS(n, STATUS)) & 1:
                break
        else:
            raise AssertionError("AS_ACTIVE bit stuck")
        self.mmu.write32(AS(n, COMMAND), cmd)
        assert not self.mmu.read32(AS(n, STATUS)) & 1

    def as_enable(self, n: int, transtab: int, transcfg: int, faulty: bool = False) -> None:
        if faulty:
            self.mmu.write32(CLEAR, 1 << n)
        self.mmu.write32(MASK, self.mmu.read32(MASK) | 1 << n)
        self.w64(AS(n, TRANSTAB), transtab)
        self.w64(AS(n, MEMATTR), MEMATTR_NC)
        self.w64(AS(n, TRANSCFG), transcfg)
        self.send_cmd(n, UPDATE)

    def as_disable(self, n: int) -> None:
        self.mmu.write32(MASK, self.mmu.read32(MASK) & ~(1 << n))
        # (GPU_CMD FLUSH_CACHES goes to GPU_CONTROL, not modelled here)
        if self.locked.pop(n, False):
            self.send_cmd(n, UNLOCK)
        self.w64(AS(n, TRANSTAB), 0)
        self.w64(AS(n, MEMATTR), 0)
        self.w64(AS(n, TRANSCFG), 1)
        self.send_cmd(n, UPDATE)

    def lock_region(self, n: int, va: int, size: int) -> None:
        self.w64(AS(n, LOCKADDR), pack_region_range(va, size))
        self.send_cmd(n, LOCK)
        self.locked[n] = True

    def unlock_region(self, n: int) -> None:
        self.send_cmd(n, UNLOCK)
        self.locked[n] = False

    def irq_handler(self) -> list[tuple[int, int, int]]:
        """panthor_mmu_irq_handler: per faulting AS read status/address, clear that bit."""
        status = self.mmu.read32(RAWSTAT) & self.mmu.read32(MASK) & 0xFFFF
        seen = []
        for n in range(16):
            if status >> n & 1:
                seen.append((n, self.mmu.read32(AS(n, FAULTSTATUS)), self.r64(AS(n, FAULTADDRESS))))
                self.mmu.write32(CLEAR, 1 << n)
        return seen


def pack_region_range(start: int, size: int) -> int:
    """§4.3 oracle: width = max(fls64(start ^ (start+size-1)), 15) - 1."""
    width = max((start ^ (start + size - 1)).bit_length(), 15) - 1
    start &= ~((1 << width) - 1)
    return start | width


@pytest.fixture
def env():
    ram = ptw.TableRam(base=0x8000_0000, size=8 << 20, tables=2 << 20)
    lines: list[bool] = []
    irq = IrqBlock("mmu", on_level=lines.append)
    mmu = Mmu(ram.mem, irq, as_present=0xFF, va_bits=48, pa_bits=40)
    return ram, mmu, Driver(mmu), lines


def test_pack_region_range_example():
    assert pack_region_range(0x800000000000, 0x1000) == 0x80000000000E


def test_register_file(env):
    _, mmu, drv, _ = env
    drv.w64(AS(3, TRANSTAB), 0x1234_5678_9ABC_D000)
    drv.w64(AS(3, TRANSCFG), TRANSCFG_48)
    drv.w64(AS(3, LOCKADDR), 0x80000000000E)
    assert drv.r64(AS(3, TRANSTAB)) == 0x1234_5678_9ABC_D000
    assert drv.r64(AS(3, TRANSCFG)) == TRANSCFG_48
    assert drv.r64(AS(3, LOCKADDR)) == 0x80000000000E
    assert mmu.read32(AS(3, COMMAND)) == 0
    assert mmu.read32(AS(3, STATUS)) == 0
    mmu.write32(AS(3, FAULTSTATUS), 0xFFFF)  # read-only
    assert mmu.read32(AS(3, FAULTSTATUS)) == 0
    # AS 8..15 are not in AS_PRESENT=0xFF: read 0, writes ignored
    drv.w64(AS(8, TRANSTAB), 0x1000)
    assert drv.r64(AS(8, TRANSTAB)) == 0
    assert mmu.read32(0x0FF0) == 0
    # unknown AS command is ignored and counted
    mmu.write32(AS(3, COMMAND), 0x77)
    assert introspect.as_state(mmu, 3)["bad_commands"] == 1
    # MMU_INT quartet
    mmu.write32(MASK, 0xFFFF)
    assert mmu.read32(MASK) == 0xFFFF


def test_update_latches_config(env):
    ram, mmu, drv, _ = env
    w = ptw.LpaeWriter(ram)
    w.map(0x10_0000, 0x8000_0000, 0x1000, RW)
    # registers programmed but no UPDATE yet: still the reset (unmapped) config
    drv.w64(AS(1, TRANSTAB), w.transtab)
    drv.w64(AS(1, TRANSCFG), TRANSCFG_48)
    assert mmu.translate(1, 0x10_0000, Access.READ).exception_type == 0xC0
    drv.send_cmd(1, UPDATE)
    assert mmu.translate(1, 0x10_0000, Access.READ).pa == 0x8000_0000
    # a new TRANSTAB without UPDATE is not used
    w2 = ptw.LpaeWriter(ram)
    w2.map(0x10_0000, 0x8000_2000, 0x1000, RW)
    drv.w64(AS(1, TRANSTAB), w2.transtab)
    assert introspect.walk(mmu, 1, 0x10_0000).pa == 0x8000_0000
    drv.send_cmd(1, UPDATE)
    assert mmu.translate(1, 0x10_0000, Access.READ).pa == 0x8000_2000


def test_fault_report_latch_and_clear_protocol(env):
    ram, mmu, drv, lines = env
    w = ptw.LpaeWriter(ram)
    w.map(0x20_0000, 0x8000_0000, 0x2000, RO)
    drv.as_enable(2, w.transtab, TRANSCFG_48)
    updates: list[int] = []
    mmu.on_as_update = updates.append
    f = mmu.write(2, 0x20_1234, b"xy")
    assert isinstance(f, MmuFault) and f.exception_type == 0xCB and f.access == Access.WRITE
    assert mmu.read32(RAWSTAT) == 1 << 2 and mmu.read32(STAT) == 1 << 2
    assert lines == [True]
    assert mmu.read32(AS(2, FAULTSTATUS)) == 0xCB | 3 << 8
    assert drv.r64(AS(2, FAULTADDRESS)) == 0x20_1234
    assert mmu.fault_pending(2)
    # a second fault while pending does not overwrite (first fault wins)
    assert mmu.read(2, 0x40_0000, 4).exception_type == 0xC2
    assert mmu.read32(AS(2, FAULTSTATUS)) == 0xCB | 3 << 8
    assert drv.r64(AS(2, FAULTADDRESS)) == 0x20_1234
    # report=False never touches registers
    assert mmu.read(3, 0x0, 4, report=False).exception_type == 0xC0
    assert mmu.read32(RAWSTAT) == 1 << 2
    # driver IRQ handler: read status/address, clear the AS bit
    assert drv.irq_handler() == [(2, 0x3CB, 0x20_1234)]
    assert mmu.read32(RAWSTAT) == 0 and lines == [True, False]
    assert not mmu.fault_pending(2) and updates == [2]
    # registers keep the last fault; as_disable -> accesses fault UNMAPPED, latched but masked
    drv.as_disable(2)
    assert updates == [2, 2]
    f = mmu.read(2, 0x20_0000, 4)
    assert f.exception_type == 0xC0
    assert mmu.read32(RAWSTAT) == 1 << 2 and mmu.read32(STAT) == 0 and lines == [True, False]
    assert mmu.read32(AS(2, FAULTSTATUS)) == 0xC0 | 2 << 8
    # fix the tables and re-enable the faulty slot: CLEAR, then mask, then UPDATE
    w.unmap(0x20_0000, 0x2000)
    w.map(0x20_0000, 0x8000_0000, 0x2000, RW)
    drv.as_enable(2, w.transtab, TRANSCFG_48, faulty=True)
    assert mmu.read32(RAWSTAT) == 0
    assert mmu.write(2, 0x20_1234, b"xy") is None
    assert ram.mem.read(0x8000_1234, 2) == b"xy"
    st = introspect.as_state(mmu, 2)
    assert st["faults_latched"] == 2 and st["faults_dropped"] == 1


def test_multi_page_access_faults_at_faulting_page(env):
    ram, mmu, drv, _ = env
    w = ptw.LpaeWriter(ram)
    w.map(0x30_0000, 0x8000_0000, 0x1000, RW)  # next page unmapped
    drv.as_enable(1, w.transtab, TRANSCFG_48)
    f = mmu.write(1, 0x30_0FFE, b"abcd")
    assert f.exception_type == 0xC3 and f.va == 0x30_1000
    assert ram.mem.read(0x8000_0FFE, 2) == b"\0\0"  # nothing written
    w.map(0x30_1000, 0x8000_5000, 0x1000, RW)
    drv.lock_region(1, 0x30_1000, 0x1000)
    drv.unlock_region(1)
    assert mmu.write(1, 0x30_0FFE, b"abcd") is None
    assert ram.mem.read(0x8000_0FFE, 2) == b"ab" and ram.mem.read(0x8000_5000, 2) == b"cd"
    assert mmu.read(1, 0x30_0FFE, 4) == b"abcd"
    assert mmu.read_u32(1, 0x30_0FFE) == int.from_bytes(b"abcd", "little")
    assert mmu.write_u64(1, 0x30_0FF8, 0x1122334455667788) is None
    assert mmu.read_u64(1, 0x30_0FF8) == 0x1122334455667788


def test_tlb_is_not_coherent_with_tables(env, caplog):
    """Editing a live PTE without LOCK/UNLOCK keeps serving the cached translation."""
    ram, mmu, drv, _ = env
    w = ptw.LpaeWriter(ram)
    va = 0x800000000000
    w.map(va, 0x8000_0000, 0x1000, RW)
    w.map(va + 0x10_0000, 0x8000_1000, 0x1000, RW)
    drv.as_enable(1, w.transtab, TRANSCFG_48)
    assert mmu.translate(1, va, Access.READ).pa == 0x8000_0000
    assert mmu.translate(1, va + 0x10_0000, Access.READ).pa == 0x8000_1000
    st = introspect.as_state(mmu, 1)["tlb"]
    assert (st["hits"], st["misses"]) == (0, 2)
    p = w.pte_addr(va)
    ram.mem.write_u64(p, (ram.mem.read_u64(p) & ~ptw.PTE_ADDR_MASK) | 0x8000_7000)
    assert mmu.translate(1, va, Access.READ).pa == 0x8000_0000  # stale
    assert introspect.walk(mmu, 1, va).pa == 0x8000_7000  # tables say otherwise
    # a lock region that does not cover it changes nothing
    drv.lock_region(1, va + 0x10_0000, 0x1000)
    drv.unlock_region(1)
    assert mmu.translate(1, va, Access.READ).pa == 0x8000_0000
    # LOCK (pack_region_range example: 0x80000000000E = 32 KiB at va) + UNLOCK -> new
    drv.lock_region(1, va, 0x1000)
    assert introspect.as_state(mmu, 1)["locked"] == [(va, 0x8000)]
    drv.unlock_region(1)
    assert introspect.as_state(mmu, 1)["locked"] == []
    assert mmu.translate(1, va, Access.READ).pa == 0x8000_7000
    # UPDATE drops the whole AS
    ram.mem.write_u64(p, (ram.mem.read_u64(p) & ~ptw.PTE_ADDR_MASK) | 0x8000_9000)
    assert mmu.translate(1, va, Access.READ).pa == 0x8000_7000
    drv.send_cmd(1, UPDATE)
    assert mmu.translate(1, va, Access.READ).pa == 0x8000_9000
    st = introspect.as_state(mmu, 1)["tlb"]
    assert st["hits"] >= 2 and st["misses"] >= 4


def test_strict_mode_reports_stale_hits(caplog):
    ram = ptw.TableRam(base=0x8000_0000, size=4 << 20, tables=1 << 20)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0x3, va_bits=48, pa_bits=40, strict=True)
    drv = Driver(mmu)
    w = ptw.LpaeWriter(ram)
    w.map(0x1000, 0x8000_0000, 0x1000, RW)
    drv.as_enable(1, w.transtab, TRANSCFG_48)
    assert mmu.read(1, 0x1000, 4) == b"\0" * 4
    assert mmu.read(1, 0x1000, 4) == b"\0" * 4
    assert introspect.as_state(mmu, 1)["tlb"]["stale_hits"] == 0
    w.unmap(0x1000, 0x1000)  # no LOCK/UNLOCK: a driver bug
    with caplog.at_level(logging.WARNING, logger="qemu_panthor.mmu"):
        assert mmu.read(1, 0x1000, 4) == b"\0" * 4  # hardware still serves the stale entry
    assert introspect.as_state(mmu, 1)["tlb"]["stale_hits"] == 1
    assert mmu.stats["stale_hits"] == 1
    assert "stale TLB entry" in caplog.text


def test_block_entry_invalidated_by_lock_of_any_part(env):
    ram, mmu, drv, _ = env
    w = ptw.LpaeWriter(ram)
    va = 0x4000_0000
    w.map(va, 0x8020_0000, ptw.SZ_2M, RW)
    drv.as_enable(1, w.transtab, TRANSCFG_48)
    assert mmu.translate(1, va + 0x1000, Access.READ).pa == 0x8020_1000
    # io-pgtable (pre-6.14) splits the block on a partial unmap; panthor locks the block
    w.unmap(va + 0x10_0000, 0x1000)
    assert mmu.translate(1, va + 0x1000, Access.READ).pa == 0x8020_1000
    assert isinstance(mmu.translate(1, va + 0x10_0000, Access.READ), Translation)  # stale block
    drv.lock_region(1, va + 0x10_0000, 0x1000)  # 32 KiB region inside the block
    drv.unlock_region(1)
    assert mmu.translate(1, va + 0x10_0000, Access.READ).exception_type == 0xC3
    t = mmu.translate(1, va + 0x1000, Access.READ)
    assert t.pa == 0x8020_1000 and t.level == 3  # re-walked: now a page of the split table


@pytest.mark.parametrize("cmd", [FLUSH_PT, FLUSH_MEM])
def test_flush_commands_invalidate_and_unlock(env, cmd):
    ram, mmu, drv, _ = env
    w = ptw.LpaeWriter(ram)
    w.map(0x1000, 0x8000_0000, 0x1000, RW)
    drv.as_enable(1, w.transtab, TRANSCFG_48)
    assert mmu.translate(1, 0x1000, Access.READ).pa == 0x8000_0000
    w.unmap(0x1000, 0x1000)
    drv.w64(AS(1, LOCKADDR), pack_region_range(0x1000, 0x1000))
    drv.send_cmd(1, LOCK)
    assert introspect.as_state(mmu, 1)["locked"]
    drv.send_cmd(1, cmd)
    assert introspect.as_state(mmu, 1)["locked"] == []
    assert mmu.translate(1, 0x1000, Access.READ).exception_type == 0xC3


def test_lock_region_decode_small_width_rounded_up(env):
    _, mmu, drv, _ = env
    drv.w64(AS(1, LOCKADDR), 0x12345000 | 11)  # 4 KiB asked; hardware minimum is 32 KiB
    drv.send_cmd(1, LOCK)
    assert introspect.as_state(mmu, 1)["locked"] == [(0x12340000, 0x8000)]


def test_vm_bind_sequence_map_and_unmap(env):
    """§4.3 page-table update: LOCK, edit, (GPU flush), UNLOCK; double LOCK on widening."""
    ram, mmu, drv, _ = env
    mcu = ptw.LpaeWriter(ram, ias=48)
    mcu.map(0x0400_0000, 0x8000_0000, 0x1000, RW)
    drv.as_enable(0, mcu.transtab, TRANSCFG_48)
    user = ptw.LpaeWriter(ram)
    drv.as_enable(1, user.transtab, TRANSCFG_48)
    va = 0x7F00_0000_0000
    assert mmu.read(1, va, 4).exception_type == 0xC0  # empty pgd: L0 entry missing
    mmu.write32(CLEAR, 1 << 1)
    drv.lock_region(1, va, 0x20_0000)
    user.map(va, 0x8020_0000, 0x20_0000, RW)
    drv.unlock_region(1)
    assert mmu.write(1, va + 0x1_0000, b"hi") is None
    assert ram.mem.read(0x8021_0000, 2) == b"hi"
    # partial unmap of the 2M block the 7.2 way: lock, then widen (second LOCK), one UNLOCK
    user.split_blocks = False
    drv.lock_region(1, va + 0x1_0000, 0x1000)
    drv.lock_region(1, va, 0x20_0000)
    user.unmap_widened(va + 0x1_0000, 0x1000)
    drv.unlock_region(1)
    assert mmu.read(1, va + 0x1_0000, 2).exception_type == 0xC3
    assert mmu.read(1, va + 0x2_0000, 2) == b"\0\0"
    assert mmu.read(1, va, 2, report=False) == b"\0\0"
    assert mmu.read(0, 0x0400_0000, 4) == b"\0" * 4
    # suspend: as_disable every slot, MMU_INT_MASK = 0, then resume re-enables AS0
    for n in (0, 1):
        drv.as_disable(n)
    mmu.write32(MASK, 0)
    assert mmu.read(0, 0x0400_0000, 4).exception_type == 0xC0
    mmu.write32(CLEAR, 0xFFFF)
    drv.as_enable(0, mcu.transtab, TRANSCFG_48)
    assert mmu.read(0, 0x0400_0000, 4) == b"\0" * 4


def test_reset(env):
    ram, mmu, drv, lines = env
    w = ptw.LpaeWriter(ram)
    w.map(0x1000, 0x8000_0000, 0x1000, RW)
    drv.as_enable(1, w.transtab, TRANSCFG_48)
    mmu.read(1, 0x1000, 4)
    mmu.read(1, 0x9000, 4)
    assert lines == [True]
    mmu.reset()
    assert lines == [True, False]
    for reg in (TRANSTAB, MEMATTR, LOCKADDR, TRANSCFG, FAULTSTATUS, FAULTADDRESS):
        assert mmu.read32(AS(1, reg)) == 0
    assert mmu.read32(RAWSTAT) == 0 and mmu.read32(MASK) == 0
    assert introspect.as_state(mmu, 1)["tlb"]["entries"] == 0
    assert mmu.read(1, 0x1000, 4).exception_type == 0xC0


def test_mcu_vm_32bit(env):
    ram, mmu, drv, _ = env
    w = ptw.LpaeWriter(ram, ias=32)
    w.map(0x0, 0x8000_0000, 0x3000, RW)
    w.map(0x0400_0000, 0x8010_0000, 0x1000, RO)
    drv.as_enable(0, w.transtab, TRANSCFG_32)
    assert mmu.translate(0, 0x2FFF, Access.EXECUTE).pa == 0x8000_2FFF
    assert mmu.read(0, 0x1_0000_0000, 4).exception_type == 0xE0
    maps = introspect.mappings(mmu, 0)
    assert [(m.va, m.pa, m.size, m.attrs.writable) for m in maps] == [
        (0x0, 0x8000_0000, 0x3000, True),
        (0x0400_0000, 0x8010_0000, 0x1000, False),
    ]


def test_absent_as_and_odd_arguments(env):
    _, mmu, _, _ = env
    for n in (8, 15, 16, -1, 99):
        assert isinstance(mmu.read(n, 0, 4), MmuFault)
        assert isinstance(mmu.write(n, 0, b"x"), MmuFault)
        assert isinstance(mmu.translate(n, 0, Access.READ), MmuFault)
    assert mmu.read32(RAWSTAT) == 0
    assert mmu.read(1, 0, 0) == b""
    assert mmu.write(1, 0, b"") is None
    assert mmu.read(1, -5, 4).exception_type in (0xC0, 0xE0)
    assert introspect.as_state(mmu, 9) == {"as": 9, "present": False}

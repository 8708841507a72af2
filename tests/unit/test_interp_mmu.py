"""The kernel's job sequence through the real GPU MMU: page tables written by the independent
tests/support/pgtable_writer.py the way panthor maps its BOs (ring, user stream and syncobj NOEXEC,
§5.2 / §9.4), then a fault on an unmapped stream reported in AS_FAULTSTATUS and retried."""

from __future__ import annotations

from support import cs_asm
from support import pgtable_writer as ptw
from support.interp_doubles import FakeHooks

from qemu_panthor.csf.interp import CsInterpreter, new_state
from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.mmu import Access, Mmu

A = cs_asm
AS = 1
ASB = 0x400 + AS * 0x40
RW_NX = ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_NOEXEC
RING_VA, STREAM_VA, SYNC_VA = 0xFFFF_0000_0000, 0x10000, 0x8000_0000_2000
RING_PA, STREAM_PA, SYNC_PA = 0x8010_0000, 0x8020_0000, 0x8030_0000


def w64(mmu: Mmu, off: int, v: int) -> None:
    mmu.write32(off, v & 0xFFFFFFFF)
    mmu.write32(off + 4, v >> 32)


def setup():
    ram = ptw.TableRam(base=0x8000_0000, size=8 << 20, tables=2 << 20)
    writer = ptw.LpaeWriter(ram, ias=48, oas=40)
    irq = IrqBlock("mmu")
    mmu = Mmu(ram.mem, irq, as_present=0xFF, va_bits=48, pa_bits=40)
    w64(mmu, ASB + 0x00, writer.transtab)  # AS_TRANSTAB
    w64(mmu, ASB + 0x30, 6 | (55 - 48) << 6 | 2 << 24 | 1 << 30)  # AS_TRANSCFG (§4.2)
    mmu.write32(ASB + 0x18, 1)  # AS_COMMAND UPDATE
    writer.map(RING_VA, RING_PA, 0x1000, RW_NX)
    writer.map(SYNC_VA, SYNC_PA, 0x1000, RW_NX)
    return ram, writer, mmu, irq


def kernel_job(stream_size: int) -> list[int]:
    return [
        A.move32(94, 0),
        A.flush_cache2(3, 3, 2, 94),
        A.move48(92, STREAM_VA),
        A.move32(94, stream_size),
        A.wait(1),
        A.call(92, 94),
        A.move48(92, SYNC_VA),
        A.move48(94, 1),
        A.wait(0xFF),
        A.sync_add64(92, 94, propagate=True),
        A.error_barrier(),
    ] + [0] * 5


def test_kernel_job_through_real_page_tables_with_fault_and_retry():
    ram, writer, mmu, irq = setup()
    mem = ram.mem
    mem.write(RING_PA, A.assemble(kernel_job(24)))
    user = [A.move48(0, STREAM_VA + 0x800), A.move48(2, 0x2A), A.sync_add64(0, 2)]
    mem.write(STREAM_PA, A.assemble(user))
    st = new_state()
    st.ring_base, st.ring_size, st.as_nr, st.insert = RING_VA, 0x1000, AS, 128
    it = CsInterpreter(mmu, FakeHooks())

    res = it.run(st, 1000)  # the user stream is not mapped yet
    assert res.kind == "mmu_fault"
    assert (res.fault.as_nr, res.fault.va, res.fault.access) == (AS, STREAM_VA, Access.READ)
    # 48-bit VA: the walk starts at L0 (docs/mmu.md "Walk"). RING_VA and SYNC_VA use L0 slots
    # 0x1FF and 0x100; STREAM_VA's slot 0 is empty, so the walk stops at L0: invalid entry ->
    # 0xC0 + level = TRANSLATION_FAULT_0
    assert res.fault.exception_type == 0xC0
    assert irq.rawstat & (1 << AS)  # MMU_INT page fault bit for the AS (§4.4)
    assert mmu.read32(ASB + 0x20) == STREAM_VA  # AS_FAULTADDRESS (lo)
    # AS_FAULTSTATUS: TRANSLATION_FAULT_0 | ACCESS_TYPE READ (2) << 8, source id 0
    assert mmu.read32(ASB + 0x1C) == 0xC0 | 2 << 8
    assert st.extract == 40 and st.in_buf

    writer.map(STREAM_VA, STREAM_PA, 0x1000, RW_NX)  # NOEXEC, as panthor maps user BOs
    mmu.write32(0x4, 1 << AS)  # MMU_INT_CLEAR
    res = it.run(st, 1000)
    assert res.kind == "idle" and res.sync_update
    assert st.extract == 128
    assert mem.read_u64(SYNC_PA) == 1 and mem.read_u32(SYNC_PA + 8) == 0
    assert mem.read_u64(STREAM_PA + 0x800) == 0x2A

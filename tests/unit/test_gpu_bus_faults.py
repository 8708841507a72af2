"""Bus faults on a CSF GPU are GPU faults, not MMU faults (docs/mmu.md "Bus faults").

A GPU access whose translation is fine but whose physical address hits no memory, or a
page-table walk that reads no memory, is reported the way kbase's CSF backend handles it
(kbase_gpu_fault_interrupt / "GPU bus fault in AS%u at PA"): GPU_INT bit 0 FAULT with
GPU_FAULTSTATUS = GPU_BUS_FAULT (0x80) | ACCESS_TYPE [9:8] | ADDRESS_VALID (bit 10) |
JASID_VALID (bit 11) | AS [15:12] and GPU_FAULTADDRESS = the physical address. CSF's MMU_INT
has no bus-error bits and its exception codes have no TRANSTAB_BUS_FAULT: nothing is latched in
the AS, so panthor only logs the GPU fault instead of killing the VM (panthor_gpu.c
gpu_irq_handler vs panthor_mmu.c's fault path). The JM G52 keeps kbase-JM's AS report.
Register offsets from panthor_regs.h / panthor_mmu_regs.h, written independently here.
"""

from __future__ import annotations

from support import pgtable_writer as ptw

from qemu_panthor.gpu import MaliGpu
from qemu_panthor.gpu.models import G52, G610
from qemu_panthor.mmu import MmuFault, introspect

GPU_INT_RAWSTAT, GPU_FAULT_STATUS, GPU_FAULT_ADDR_LO, GPU_FAULT_ADDR_HI = 0x20, 0x3C, 0x40, 0x44
MMU_INT_RAWSTAT = 0x2000
AS1 = 0x2400 + 0x40
AS_FAULTSTATUS = 0x1C
VA = 0x7F12_3450_0000
HOLE_PA = 0xF0_0000_0000  # inside the 40 output bits, no RAM there
TRANSCFG_AARCH64_4K = 0x420001C6  # what panthor programs (ADRMODE AARCH64_4K, INA 48, ...)


def _gpu(model=G610, *, transtab: int | None = None) -> tuple[MaliGpu, ptw.TableRam]:
    ram = ptw.TableRam()
    w = ptw.LpaeWriter(ram, ias=48, oas=40)
    w.map(VA, HOLE_PA, 0x1000, ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE)
    gpu = MaliGpu(model, ram.mem, on_irq=lambda name, level: None)
    table = w.transtab if transtab is None else transtab
    for off, v in ((0x00, table), (0x30, TRANSCFG_AARCH64_4K)):
        gpu.mmio_write(AS1 + off, 4, v & 0xFFFF_FFFF)
        gpu.mmio_write(AS1 + off + 4, 4, v >> 32)
    gpu.mmio_write(AS1 + 0x18, 4, 1)  # UPDATE
    return gpu, ram


def _r(gpu: MaliGpu, off: int) -> int:
    return gpu.mmio_read(off, 4)


def test_a_data_access_to_no_memory_is_a_gpu_bus_fault_with_the_pa() -> None:
    gpu, _ = _gpu()
    f = gpu.mmu.write(1, VA + 0x10, b"\1\2\3\4")
    assert isinstance(f, MmuFault) and f.bus and f.exception_type == 0x80
    assert _r(gpu, GPU_INT_RAWSTAT) & 1  # FAULT
    # GPU_BUS_FAULT | WRITE (3) << 8 | ADDRESS_VALID | JASID_VALID | AS 1 << 12
    assert _r(gpu, GPU_FAULT_STATUS) == 0x80 | 3 << 8 | 1 << 10 | 1 << 11 | 1 << 12
    addr = _r(gpu, GPU_FAULT_ADDR_LO) | _r(gpu, GPU_FAULT_ADDR_HI) << 32
    assert addr == HOLE_PA + 0x10
    assert _r(gpu, MMU_INT_RAWSTAT) == 0  # no AS fault: panthor keeps the VM
    assert _r(gpu, AS1 + AS_FAULTSTATUS) == 0


def test_a_page_table_read_of_no_memory_is_a_gpu_bus_fault_without_an_address() -> None:
    gpu, _ = _gpu(transtab=HOLE_PA)  # the root table itself is nowhere
    f = gpu.mmu.read(1, VA, 4)
    assert isinstance(f, MmuFault) and f.bus and f.exception_type == 0x80
    assert _r(gpu, GPU_INT_RAWSTAT) & 1
    # GPU_BUS_FAULT | READ (2) << 8 | JASID_VALID | AS 1 << 12; the PA is not reported
    assert _r(gpu, GPU_FAULT_STATUS) == 0x80 | 2 << 8 | 1 << 11 | 1 << 12
    assert _r(gpu, MMU_INT_RAWSTAT) == 0 and _r(gpu, AS1 + AS_FAULTSTATUS) == 0
    # introspection (QMP x-query-mali-translate) names the fault the GPU reports
    f = introspect.walk(gpu.mmu, 1, VA)
    assert isinstance(f, MmuFault) and f.bus and f.exception_type == 0x80


def test_the_jm_g52_still_reports_bus_faults_in_the_address_space() -> None:
    """kbase-JM and panfrost: a page-table read of no memory is an AS fault,
    TRANSTAB_BUS_FAULT (0xD0 + level) with the decoder-fault bit, on MMU_INT; no GPU fault."""
    gpu = MaliGpu(G52, ptw.TableRam().mem, on_irq=lambda name, level: None)
    gpu.mmio_write(AS1 + 0x00, 4, (HOLE_PA | 3) & 0xFFFF_FFFF)  # legacy TRANSTAB, ADRMODE TABLE
    gpu.mmio_write(AS1 + 0x04, 4, HOLE_PA >> 32)
    gpu.mmio_write(AS1 + 0x18, 4, 1)  # UPDATE
    f = gpu.mmu.read(1, 0x1000_0000, 4)
    assert isinstance(f, MmuFault) and f.bus
    assert _r(gpu, MMU_INT_RAWSTAT) == 1 << 1
    status = _r(gpu, AS1 + AS_FAULTSTATUS)
    # TRANSTAB_BUS_FAULT_0 (legacy walks start at level 0) | READ << 8 | DECODER_FAULT
    assert status == 0xD0 | 2 << 8 | 1 << 10
    assert _r(gpu, GPU_FAULT_STATUS) == 0 and not _r(gpu, GPU_INT_RAWSTAT) & 1

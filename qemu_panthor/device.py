"""The Mali GPU as a PCI function: what the vfio-user server serves and the glue binds.

BAR0 is the GPU's 2 MiB register window (GPU_CONTROL, JOB_CONTROL, MMU, and on a CSF part the
USER page and the doorbell pages). The USER page (LATEST_FLUSH_ID) has no read side effects,
so it is served by sparse mmap from a shared memfd page the model keeps current: panthor maps
it to userspace and those reads never trap. A Job Manager part (panfrost) has no firmware: its
JOB_CONTROL block runs the job chains (docs/jm.md). BAR2 holds the MSI-X table and PBA (QEMU
emulates them) and, at 0xF00, the qemu-panthor test port (fault injection for tests, not part
of the GPU; docs/test-port.md). The three Mali interrupt lines are MSI-X vectors 0 (job), 1
(mmu) and 2 (gpu); without MSI-X they share INTx, as they would share one wired line on a
board.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .csf.mcu import CsfFirmware
from .gpu.device import MaliGpu
from .gpu.models import GpuModel
from .gpu.regs import Family
from .testport import PORT_BASE, PORT_SIZE, FaultInjector
from .vfio_user.pci import BarSpec, MsixCapability, PciFunction

if TYPE_CHECKING:
    from .timeline import Timeline

log = logging.getLogger(__name__)

PCI_VENDOR_ARM = 0x13B5
PCI_DEVICE_MALI_CSF = 0xC5F0  # the qemu-panthor GPU function (guest/glue binds it)
PCI_CLASS_ACCELERATOR = 0x120000  # processing accelerator
BAR_GPU = 0
BAR_MSIX = 2
GPU_WINDOW = 0x200000
VECTORS = {"job": 0, "mmu": 1, "gpu": 2}
PAGE = 0x1000


def user_pages(family: Family) -> tuple[tuple[int, int], ...]:
    """BAR0's sparse-mmap areas: the pages the GPU model declares free of side effects."""
    return tuple((off, PAGE) for off in MaliGpu.side_effect_free_pages(family))


class MaliPciFunction(PciFunction):
    """A Mali GPU behind a PCI function (``model`` picks the GPU and its family)."""

    def __init__(self, model: GpuModel, *, trace: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None,
                 work_scale: float = 1.0) -> None:
        pages = user_pages(model.family)
        super().__init__(
            vendor_id=PCI_VENDOR_ARM,
            device_id=PCI_DEVICE_MALI_CSF,
            class_code=PCI_CLASS_ACCELERATOR,
            revision=model.arch_major,
            subsystem_vendor_id=PCI_VENDOR_ARM,
            subsystem_id=model.gpu_id >> 16,
            bars={BAR_GPU: BarSpec(GPU_WINDOW, is64=True, mmap_areas=pages),
                  BAR_MSIX: BarSpec(0x1000)},
            msix=MsixCapability(vectors=len(VECTORS), table_bar=BAR_MSIX, table_offset=0,
                                pba_bar=BAR_MSIX, pba_offset=0x800),
            intx=True,
        )
        self.model = model
        self.gpu = MaliGpu(model, self.dma, on_irq=self._on_irq, trace=trace, loop=loop)
        for user, size in pages:
            self.gpu.attach_user_page(self.bar_memory(BAR_GPU)[user : user + size])
        #: the CSF firmware model (None on a Job Manager part)
        self.firmware: CsfFirmware | None = None
        if model.family == Family.CSF:
            self.firmware = CsfFirmware.attach(self.gpu, loop=loop, work_scale=work_scale)
        self.testport = FaultInjector(self.gpu, self.firmware)

    def attach_timeline(self, tl: Timeline | None) -> None:
        """--timeline: the GPU's, the firmware's and the test port's events go to ``tl``."""
        self.gpu.attach_timeline(tl)
        if self.firmware is not None:
            self.firmware.attach_timeline(tl)
        self.testport.tl = tl

    def _on_irq(self, line: str, level: bool) -> None:
        self.set_irq(VECTORS[line], level)

    def bar_read(self, bar: int, offset: int, size: int) -> int:
        if bar == BAR_GPU:
            return self.gpu.mmio_read(offset, size)
        if bar == BAR_MSIX and size == 4 and PORT_BASE <= offset < PORT_BASE + PORT_SIZE:
            return self.testport.read32(offset - PORT_BASE)
        return 0

    def bar_write(self, bar: int, offset: int, size: int, value: int) -> None:
        if bar == BAR_GPU:
            self.gpu.mmio_write(offset, size, value)
        elif bar == BAR_MSIX and size == 4 and PORT_BASE <= offset < PORT_BASE + PORT_SIZE:
            self.testport.write32(offset - PORT_BASE, value)

    def reset(self) -> None:
        """PCI function reset: the GPU returns to its power-on state."""
        self.gpu.reset()

"""The Mali PCI function: what the guest's glue and panthor find behind the PCI config space."""

from __future__ import annotations

import struct

from qemu_panthor.device import BAR_GPU, MaliPciFunction
from qemu_panthor.gpu.models import MODELS

CSF_GPU_LATEST_FLUSH_ID = 0x10000  # reference §3.3
GPU_CMD = 0x30
FLUSH_CACHES_L2_LSC_OTHER = 0x23304  # the flush the MMU unlock path issues (§2.3)


def test_identity_and_bars() -> None:
    dev = MaliPciFunction(MODELS["g610"])
    try:
        vendor, device = struct.unpack_from("<HH", dev.config_read(0, 4))
        assert (vendor, device) == (0x13B5, 0xC5F0)
        assert dev.bars[BAR_GPU].size == 0x200000  # doorbells reach 0x180000 (§1.2)
        assert dev.bars[BAR_GPU].is64
        assert dev.bar_read(BAR_GPU, 0x0, 4) == 0xA8670005
        assert dev.msix is not None and dev.msix.vectors == 3
    finally:
        dev.close()


def test_user_page_is_sparse_mmapped_and_tracks_flushes() -> None:
    """Reads of the mmapped USER page see what a trapped read of LATEST_FLUSH_ID sees."""
    dev = MaliPciFunction(MODELS["g610"])
    try:
        assert (CSF_GPU_LATEST_FLUSH_ID, 0x1000) in dev.bars[BAR_GPU].mmap_areas
        shared = dev.bar_memory(BAR_GPU)
        def mapped() -> int:
            return struct.unpack_from("<I", shared, CSF_GPU_LATEST_FLUSH_ID)[0]
        before = dev.bar_read(BAR_GPU, CSF_GPU_LATEST_FLUSH_ID, 4)
        assert before != 0 and mapped() == before  # 0 would mean "always flush"
        dev.bar_write(BAR_GPU, GPU_CMD, 4, FLUSH_CACHES_L2_LSC_OTHER)
        after = dev.bar_read(BAR_GPU, CSF_GPU_LATEST_FLUSH_ID, 4)
        assert after != before and mapped() == after
    finally:
        dev.close()


def test_interrupt_lines_map_to_msix_vectors() -> None:
    dev = MaliPciFunction(MODELS["g610"])
    try:
        GPU_INT_MASK, GPU_INT_RAWSTAT = 0x28, 0x20
        dev.bar_write(BAR_GPU, GPU_INT_MASK, 4, 1 << 17)
        assert not dev.irq_level(2)
        dev.bar_write(BAR_GPU, GPU_CMD, 4, FLUSH_CACHES_L2_LSC_OTHER)  # raises bit 17
        assert dev.bar_read(BAR_GPU, GPU_INT_RAWSTAT, 4) & (1 << 17)
        assert dev.irq_level(2) and not dev.irq_level(0) and not dev.irq_level(1)
        dev.bar_write(BAR_GPU, 0x24, 4, 1 << 17)  # GPU_INT_CLEAR
        assert not dev.irq_level(2)
    finally:
        dev.close()

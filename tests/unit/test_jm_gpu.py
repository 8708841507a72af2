"""The Mali-G52 (Job Manager) PCI function driven through its MMIO window the way panfrost 7.2
does (docs/reference/mali-g52-jm.md sections 2-4): the probe's soft reset, feature reads,
quirk writes and power-up, runtime suspend/resume, an address space programmed in the legacy
Mali LPAE format, job chains on JS1, and the QMP view of it. Offsets and values are written
out from panfrost_regs.h and the RK3568 boot log, not imported from the model."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError
from support import pgtable_writer as ptw
from support.qmp_local import qmp_client

from qemu_panthor.csf.mcu import CsfFirmware
from qemu_panthor.device import MaliPciFunction
from qemu_panthor.gpu.models import MODELS
from qemu_panthor.memory import RamRegion

# panfrost_regs.h
GPU_ID, L2_FEATURES, CORE_FEATURES, TILER_FEATURES, MEM_FEATURES = 0x0, 0x4, 0x8, 0xC, 0x10
MMU_FEATURES, AS_PRESENT, JS_PRESENT = 0x14, 0x18, 0x1C
GPU_INT_RAWSTAT, GPU_INT_CLEAR, GPU_INT_MASK, GPU_INT_STAT = 0x20, 0x24, 0x28, 0x2C
GPU_CMD, GPU_STATUS, GPU_LATEST_FLUSH_ID, GPU_FAULT_STATUS = 0x30, 0x34, 0x38, 0x3C
AFBC_FEATURES, PERFCNT_CFG = 0x4C, 0x68
CYCLE_COUNT, TIMESTAMP = 0x90, 0x98
THREAD_MAX_THREADS, THREAD_FEATURES, THREAD_TLS_ALLOC = 0xA0, 0xAC, 0x310
TEXTURE_FEATURES, JS_FEATURES = 0xB0, 0xC0
SHADER_PRESENT, TILER_PRESENT, L2_PRESENT, STACK_PRESENT = 0x100, 0x110, 0x120, 0xE00
SHADER_READY, TILER_READY, L2_READY = 0x140, 0x150, 0x160
SHADER_PWRON, TILER_PWRON, L2_PWRON = 0x180, 0x190, 0x1A0
SHADER_PWROFF, TILER_PWROFF, L2_PWROFF = 0x1C0, 0x1D0, 0x1E0
SHADER_PWRTRANS, TILER_PWRTRANS, L2_PWRTRANS = 0x200, 0x210, 0x220
COHERENCY_FEATURES = 0x300
JM_CONFIG, SHADER_CONFIG, TILER_CONFIG = 0xF00, 0xF04, 0xF08
CSF_ID_OR_JS_PRESENT, MCU_STATUS, CSF_USER_PAGE, CSF_DOORBELL0 = 0x1C, 0x704, 0x10000, 0x80000
GPU_CMD_SOFT_RESET, GPU_CMD_HARD_RESET, GPU_CMD_PERFCNT_SAMPLE = 1, 2, 4
GPU_CMD_CLEAN_INV_CACHES = 8
RESET_COMPLETED, PERFCNT_SAMPLE_COMPLETED, CLEAN_CACHES_COMPLETED = 1 << 8, 1 << 16, 1 << 17
GPU_IRQ_MASK_ALL = 0x30781
JOB_INT_RAWSTAT, JOB_INT_CLEAR, JOB_INT_MASK, JOB_INT_STAT = 0x1000, 0x1004, 0x1008, 0x100C
JOB_INT_JS_STATE = 0x1010
MMU_INT_RAWSTAT, MMU_INT_CLEAR, MMU_INT_MASK = 0x2000, 0x2004, 0x2008
JS_HEAD_NEXT, JS_AFFINITY_NEXT, JS_CONFIG_NEXT, JS_COMMAND_NEXT = 0x40, 0x50, 0x58, 0x60
JS_FLUSH_ID_NEXT, JS_STATUS, JS_HEAD = 0x70, 0x24, 0x00
AS_TRANSTAB, AS_MEMATTR, AS_LOCKADDR, AS_COMMAND, AS_FAULTSTATUS = 0x0, 0x8, 0x10, 0x18, 0x1C
AS_FAULTADDRESS, AS_STATUS, AS_TRANSCFG = 0x20, 0x28, 0x30
AS_CMD_UPDATE, AS_CMD_LOCK, AS_CMD_FLUSH_MEM = 1, 2, 5
MEMATTR_LPAE = 0x00888D88
JS_CONFIG_G52 = 0x0008_7300
WRITE_VALUE, IMM32 = 2, 6
DONE = 0x01
BO_VA, BO_SIZE = 0x0200_0000, 0x10000


def js(n: int, reg: int) -> int:
    return 0x1800 + n * 0x80 + reg


def as_reg(n: int, reg: int) -> int:
    return 0x2400 + n * 0x40 + reg


class G52:
    """A G52 PCI function with guest RAM in its DMA space."""

    def __init__(self) -> None:
        self.dev = MaliPciFunction(MODELS["g52"])
        self.gpu = self.dev.gpu
        self.ram = ptw.TableRam()
        self.dev.dma.add(RamRegion(self.ram.base, self.ram.buf))
        self.bo_pa = self.ram.base + 0x10_0000

    def r(self, off: int) -> int:
        return self.gpu.mmio_read(off, 4)

    def w(self, off: int, value: int) -> None:
        self.gpu.mmio_write(off, 4, value)

    def w64(self, off: int, value: int) -> None:
        self.w(off, value & 0xFFFF_FFFF)
        self.w(off + 4, value >> 32)

    def soft_reset(self) -> None:
        """panfrost_gpu_soft_reset: no interrupt, RESET_COMPLETED polled in RAWSTAT."""
        self.w(GPU_INT_MASK, 0)
        self.w(GPU_INT_CLEAR, RESET_COMPLETED)
        self.w(GPU_CMD, GPU_CMD_SOFT_RESET)
        assert self.r(GPU_INT_RAWSTAT) & RESET_COMPLETED, "panfrost would try a hard reset"
        self.w(GPU_INT_CLEAR, GPU_IRQ_MASK_ALL)
        self.w(GPU_INT_MASK, 0x30081)

    def power_on(self) -> None:
        """panfrost_gpu_init_quirks for a G52, then L2, shader, tiler PWRON with READY polls."""
        self.w(TILER_CONFIG, self.r(TILER_CONFIG))
        self.w(JM_CONFIG, 0xF << 16)
        for pwron, ready in ((L2_PWRON, L2_READY), (SHADER_PWRON, SHADER_READY),
                             (TILER_PWRON, TILER_READY)):
            self.w(pwron, 1)
            assert self.r(ready) == 1

    def power_off(self) -> None:
        """panfrost_gpu_power_off: PWROFF, then PWRTRANS polled to 0."""
        for pwroff, trans in ((SHADER_PWROFF, SHADER_PWRTRANS), (TILER_PWROFF, TILER_PWRTRANS),
                              (L2_PWROFF, L2_PWRTRANS)):
            self.w(pwroff, 1)
            assert self.r(trans) == 0

    def device_reset(self) -> None:
        """panfrost_device_reset (runtime resume): reset, power, MMU and job IRQs."""
        self.soft_reset()
        self.power_on()
        self.w(MMU_INT_CLEAR, 0xFFFF_FFFF)
        self.w(MMU_INT_MASK, 0xFFFF_FFFF)
        self.w(JOB_INT_CLEAR, 0x70007)
        self.w(JOB_INT_MASK, 0x70007)

    def enable_as(self, n: int, vm: ptw.LpaeWriter) -> None:
        """panfrost_mmu_enable on the ARM_MALI_LPAE path: lock + flush, then the config."""
        self.w64(as_reg(n, AS_LOCKADDR), 0x3F)
        self.w(as_reg(n, AS_COMMAND), AS_CMD_LOCK)
        self.w(as_reg(n, AS_COMMAND), AS_CMD_FLUSH_MEM)
        assert self.r(as_reg(n, AS_STATUS)) & 1 == 0
        self.w64(as_reg(n, AS_TRANSTAB), vm.transtab)
        self.w64(as_reg(n, AS_MEMATTR), MEMATTR_LPAE)
        self.w64(as_reg(n, AS_TRANSCFG), 0)  # ADRMODE_LEGACY
        self.w(as_reg(n, AS_COMMAND), AS_CMD_UPDATE)

    def vm(self) -> ptw.LpaeWriter:
        vm = ptw.LpaeWriter(self.ram, ias=35, oas=40, mali=True)
        vm.map(BO_VA, self.bo_pa, BO_SIZE, ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE)
        return vm

    def write_value_job(self, va: int, target: int, value: int) -> None:
        hdr = struct.pack("<IIQIHHQ", 0, 0, 0, 1 | WRITE_VALUE << 1 | 1 << 16, 0, 0, 0)
        payload = struct.pack("<QIIQ", target, IMM32, 0, value)
        o = va - BO_VA + self.bo_pa - self.ram.base
        job = hdr + payload
        self.ram.buf[o:o + len(job)] = job

    def u32(self, va: int) -> int:
        return int(struct.unpack_from("<I", self.ram.buf, va - BO_VA + self.bo_pa
                                      - self.ram.base)[0])

    def submit(self, slot: int, jc: int, as_nr: int) -> None:
        """panfrost_job_hw_submit."""
        assert self.r(js(slot, JS_COMMAND_NEXT)) == 0
        self.w64(js(slot, JS_HEAD_NEXT), jc)
        self.w64(js(slot, JS_AFFINITY_NEXT), 1)
        self.w(js(slot, JS_CONFIG_NEXT), JS_CONFIG_G52 | as_nr)
        self.w(js(slot, JS_FLUSH_ID_NEXT), self.r(GPU_LATEST_FLUSH_ID))
        self.w(js(slot, JS_COMMAND_NEXT), 1)


def test_probe_reads_the_rk3568_identity() -> None:
    """panfrost_gpu_init_features' reads give what panfrost printed on a real RK3568."""
    g = G52()
    g.soft_reset()
    assert g.r(GPU_ID) >> 16 == 0x7402 and g.r(GPU_ID) & 0xFFFF == 0x1000
    assert [g.r(o) for o in (L2_FEATURES, CORE_FEATURES, TILER_FEATURES, MEM_FEATURES,
                             MMU_FEATURES, AS_PRESENT, JS_PRESENT)] == [
        0x07110206, 0x2, 0x209, 0x1, 0x2823, 0xFF, 0x7]
    assert (g.r(SHADER_PRESENT), g.r(L2_PRESENT), g.r(TILER_PRESENT)) == (1, 1, 1)
    assert g.r(SHADER_PRESENT + 4) == g.r(L2_PRESENT + 4) == 0
    # JS_FEATURES for the three present slots, 0 beyond; the rest of the probe's reads exist
    # JS_FEATURES(0..2), THREAD_FEATURES and TEXTURE_FEATURES_0..3: kbase's dummy-model values
    # (docs/reference/mali-g52-jm.md section 1 register table; THREAD_FEATURES_PARTIAL(0x6000,
    # 4, 10) with implementation type 0 = silicon in bits 31:30)
    assert [g.r(JS_FEATURES + 4 * n) for n in range(3)] == [0x20E, 0x1FE, 0x7E]
    assert all(g.r(JS_FEATURES + 4 * n) == 0 for n in range(3, 16))
    assert g.r(THREAD_MAX_THREADS) == 384 and g.r(THREAD_FEATURES) == 0x0A046000
    assert [g.r(TEXTURE_FEATURES + 4 * n) for n in range(4)] == [
        0x000FFFFF, 0x0000FFFF, 0x9F81FFFF, 0]
    # the same table, values marked inferred there: ACE-Lite only, no AFBC restriction,
    # TLS allocation 0 (Mesa falls back to max threads), one stack
    assert g.r(COHERENCY_FEATURES) == 0x1
    assert (g.r(AFBC_FEATURES), g.r(THREAD_TLS_ALLOC), g.r(STACK_PRESENT)) == (0, 0, 1)
    assert g.gpu.stats["unknown_reads"] == 0
    assert g.gpu.stats["unknown_writes"] == 0
    # CSF-only registers are not there: no MCU, no USER page, no doorbells
    assert g.r(MCU_STATUS) == 0 and g.r(CSF_USER_PAGE) == 0
    g.w(CSF_DOORBELL0, 1)
    assert g.gpu.stats["doorbells"] == 0 and g.dev.firmware is None
    assert g.gpu.stats["unknown_reads"] == 2 and g.gpu.stats["unknown_writes"] == 1
    with pytest.raises(ValueError, match="no MCU"):  # nor can CSF firmware be attached
        CsfFirmware.attach(g.gpu)
    assert g.gpu.mcu is None


def test_quirk_registers_store_and_power_domains_follow_pwron_pwroff() -> None:
    g = G52()
    g.soft_reset()
    g.power_on()
    assert g.r(JM_CONFIG) == 0xF0000 and g.r(SHADER_CONFIG) == 0
    assert g.r(GPU_INT_RAWSTAT) & (1 << 10)  # POWER_CHANGED_ALL
    g.power_off()
    assert (g.r(L2_READY), g.r(SHADER_READY), g.r(TILER_READY)) == (0, 0, 0)
    g.soft_reset()  # a reset returns the quirk registers to 0 (panfrost rewrites them)
    assert g.r(JM_CONFIG) == 0


def test_gpu_cmd_is_a_plain_command_number() -> None:
    """JM GPU_CMD: 1 soft reset (not the CSF encoding 0x101), 8 clean+invalidate, 4 sample."""
    g = G52()
    g.w(GPU_INT_CLEAR, 0xFFFF_FFFF)
    g.w(GPU_CMD, 0x101)  # the CSF soft reset means nothing here
    assert not g.r(GPU_INT_RAWSTAT) & RESET_COMPLETED
    flush = g.r(GPU_LATEST_FLUSH_ID)
    g.w(GPU_CMD, GPU_CMD_CLEAN_INV_CACHES)
    assert g.r(GPU_INT_RAWSTAT) & CLEAN_CACHES_COMPLETED
    assert g.r(GPU_LATEST_FLUSH_ID) != flush
    g.w(GPU_CMD, GPU_CMD_PERFCNT_SAMPLE)
    assert g.r(GPU_INT_RAWSTAT) & PERFCNT_SAMPLE_COMPLETED
    g.w(GPU_CMD, GPU_CMD_HARD_RESET)
    assert g.r(GPU_INT_RAWSTAT) == RESET_COMPLETED


def test_write_value_job_in_a_legacy_lpae_address_space() -> None:
    g = G52()
    g.device_reset()
    vm = g.vm()
    g.enable_as(3, vm)
    g.write_value_job(BO_VA, BO_VA + 0x1000, 0xCAFEF00D)
    g.submit(1, BO_VA, 3)
    g.dev.gpu.jobs.pump()  # type: ignore[union-attr]  # no event loop: run the slots here
    assert g.r(JOB_INT_STAT) == 1 << 1  # DONE(1)
    assert g.r(js(1, JS_STATUS)) == DONE and g.r(JOB_INT_JS_STATE) == 0
    assert g.u32(BO_VA + 0x1000) == 0xCAFEF00D and g.u32(BO_VA) == DONE
    g.w(JOB_INT_CLEAR, 1 << 1)
    assert g.r(JOB_INT_RAWSTAT) == 0


def test_unmapped_target_faults_the_as_and_fails_the_job() -> None:
    """IGT pan-unhandled-pagefault through panfrost's MMU IRQ thread: the fault is latched
    (MMU_INT bit as) and the job stalls; the driver clears MMU_INT, disables the AS
    (panfrost_mmu_disable) and masks it; the job then ends FAILED with JOB_BUS_FAULT and its
    header unwritten, as IGT's test describes hardware."""
    g = G52()
    g.device_reset()
    g.enable_as(0, g.vm())
    g.write_value_job(BO_VA, 0xDEADBEEF0000, 1)
    g.submit(1, BO_VA, 0)
    g.dev.gpu.jobs.pump()  # type: ignore[union-attr]
    assert g.r(MMU_INT_RAWSTAT) == 1 << 0
    # 0xDEADBEEF0000's L0 index (VA[47:39] = 0x1BD) is empty: only BO_VA's slot 0 is a table.
    # Legacy tables are walked from L0 (mali-g52-jm.md section 4), so TRANSLATION_FAULT_0
    # (0xC0, section 3.4) with access type WRITE (3) in [9:8] (reference/mmu.md AS_FAULTSTATUS)
    assert g.r(as_reg(0, AS_FAULTSTATUS)) == 0x3C0
    assert g.r(as_reg(0, AS_FAULTADDRESS)) == 0xBEEF0000
    assert g.r(JOB_INT_RAWSTAT) == 0 and g.r(JOB_INT_JS_STATE) == 1 << 1
    g.w(MMU_INT_CLEAR, 1 << 0)
    g.w64(as_reg(0, AS_LOCKADDR), 0x3F)
    g.w(as_reg(0, AS_COMMAND), AS_CMD_LOCK)
    g.w(as_reg(0, AS_COMMAND), AS_CMD_FLUSH_MEM)
    g.w64(as_reg(0, AS_TRANSTAB), 0)
    g.w64(as_reg(0, AS_MEMATTR), 0)
    g.w64(as_reg(0, AS_TRANSCFG), 1)  # UNMAPPED
    g.w(as_reg(0, AS_COMMAND), AS_CMD_UPDATE)
    g.w(MMU_INT_MASK, 0xFFFF_FFFE)
    g.dev.gpu.jobs.pump()  # type: ignore[union-attr]
    assert g.r(JOB_INT_RAWSTAT) == 1 << 17  # FAILED(1)
    assert g.r(js(1, JS_STATUS)) == 0x48 and g.u32(BO_VA) == 0  # JOB_BUS_FAULT
    assert g.r(JOB_INT_JS_STATE) == 0


def test_soft_reset_idles_the_slots_and_forgets_the_address_spaces() -> None:
    g = G52()
    g.device_reset()
    g.enable_as(0, g.vm())
    g.write_value_job(BO_VA, BO_VA + 0x100, 7)
    g.submit(1, BO_VA, 0)
    assert g.r(JOB_INT_JS_STATE) & (1 << 1)
    g.soft_reset()
    assert g.r(JOB_INT_JS_STATE) == 0 and g.r(JOB_INT_MASK) == 0
    assert g.r(MMU_INT_MASK) == 0 and g.r(as_reg(0, AS_TRANSTAB)) == 0


@pytest.fixture
async def qmp_g52(tmp_path: Path):
    g = G52()
    async with qmp_client(g.dev, tmp_path / "qmp.sock") as qmp:
        yield g, qmp


async def test_qmp_shows_job_slots_and_refuses_csf_queries(qmp_g52) -> None:
    g, qmp = qmp_g52
    info = await qmp.execute("query-mali-gpu")
    assert (info["family"], info["driver"], info["name"]) == ("jm", "panfrost", "mali-g52")
    assert "mcu" not in info and info["identity"]["JS_PRESENT"] == 7
    g.device_reset()
    g.enable_as(5, g.vm())
    g.write_value_job(BO_VA, BO_VA + 0x200, 9)
    g.submit(1, BO_VA, 5)  # on a running loop the slots run as a task: wait for DONE
    for _ in range(200):
        if g.r(JOB_INT_RAWSTAT):
            break
        await asyncio.sleep(0.005)
    slots = await qmp.execute("query-mali-job-slots")
    assert slots["JS_PRESENT"] == 7 and [s["js"] for s in slots["slots"]] == [0, 1, 2]
    s1 = slots["slots"][1]
    assert (s1["state"], s1["as"], s1["STATUS"], s1["status-name"]) == ("idle", 5, 1, "DONE")
    assert s1["HEAD"] == BO_VA and s1["chains-done"] == 1 and s1["next"] is None
    stats = await qmp.execute("query-mali-stats")
    assert stats["job-slots"] == {"jobs": 1, "chains-done": 1, "chains-failed": 0}
    assert "cs" not in stats
    with pytest.raises(ExecuteError, match="Job Manager GPU"):
        await qmp.execute("query-mali-csg")
    mmu = await qmp.execute("query-mali-mmu", {"as": 5})
    assert mmu[0]["active"]["adrmode"] == "LEGACY_TABLE" and mmu[0]["enabled"]
    tr = await qmp.execute("x-query-mali-translate", {"as": 5, "va": BO_VA + 0x200})
    assert tr["translated"] and tr["pa"] == g.bo_pa + 0x200


async def test_csf_gpu_refuses_the_job_slot_query(tmp_path: Path) -> None:
    async with qmp_client(MaliPciFunction(MODELS["g610"]), tmp_path / "qmp.sock") as qmp:
        with pytest.raises(ExecuteError, match="CSF GPU"):
            await qmp.execute("query-mali-job-slots")
        info = await qmp.execute("query-mali-gpu")
        assert info["family"] == "csf" and "mcu" in info


def test_table_switches_count_the_slot_changing_hands() -> None:
    """An AS slot handed from one file's page tables to another's (panfrost's LRU reuse)
    counts a switch; re-enabling the tables it last served (after a reset, say) does not."""
    g = G52()
    g.device_reset()
    vm1, vm2 = g.vm(), g.vm()
    assert vm1.transtab != vm2.transtab
    st = g.gpu.mmu.slot(2)
    assert st is not None
    g.enable_as(2, vm1)
    g.enable_as(2, vm1)
    assert st.table_switches == 0
    g.enable_as(2, vm2)
    assert st.table_switches == 1
    g.soft_reset()  # the driver forgets every assignment: the slot reads TRANSTAB 0 again
    g.enable_as(2, vm2)
    assert st.table_switches == 1
    g.enable_as(2, vm1)
    assert st.table_switches == 2
    # disabling (TRANSCFG UNMAPPED after a fault) is not a switch
    g.w64(as_reg(2, AS_TRANSCFG), 1)
    g.w(as_reg(2, AS_COMMAND), AS_CMD_UPDATE)
    assert st.table_switches == 2

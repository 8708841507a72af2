"""MaliGpu register behaviour against the hardware reference (§1.4, §2, §3)."""

from __future__ import annotations

import dataclasses
import logging
import struct
import time

import pytest
from support.gpu_doubles import FakeClock, RecordingMcu, Rig

from qemu_panthor.gpu import MaliGpu
from qemu_panthor.gpu.models import G610, MODELS
from qemu_panthor.memory import SparseRam
from qemu_panthor.mmu import Mmu, introspect

# Offsets written out from the reference tables (not imported from the product code).
GPU_ID, L2_FEATURES, CORE_FEATURES, TILER_FEATURES = 0x0, 0x4, 0x8, 0xC
MEM_FEATURES, MMU_FEATURES, AS_PRESENT, CSF_ID = 0x10, 0x14, 0x18, 0x1C
GPU_INT_RAWSTAT, GPU_INT_CLEAR, GPU_INT_MASK, GPU_INT_STAT = 0x20, 0x24, 0x28, 0x2C
GPU_CMD, GPU_FAULT_STATUS, GPU_FAULT_ADDR = 0x30, 0x3C, 0x40
GPU_FEATURES, TIMESTAMP_OFFSET, CYCLE_COUNT, TIMESTAMP = 0x60, 0x88, 0x90, 0x98
THREAD_MAX_THREADS, THREAD_MAX_WG, THREAD_MAX_BARRIER, THREAD_FEATURES = 0xA0, 0xA4, 0xA8, 0xAC
TEXTURE_FEATURES = 0xB0
SHADER_PRESENT, TILER_PRESENT, L2_PRESENT = 0x100, 0x110, 0x120
SHADER_READY, TILER_READY, L2_READY = 0x140, 0x150, 0x160
SHADER_PWRON, TILER_PWRON, L2_PWRON = 0x180, 0x190, 0x1A0
SHADER_PWROFF, TILER_PWROFF, L2_PWROFF = 0x1C0, 0x1D0, 0x1E0
SHADER_PWRTRANS, TILER_PWRTRANS, L2_PWRTRANS = 0x200, 0x210, 0x220
GPU_REVID, COHERENCY_FEATURES, COHERENCY_PROTOCOL = 0x280, 0x300, 0x304
MCU_CONTROL, MCU_STATUS = 0x700, 0x704
JOB_INT_RAWSTAT, JOB_INT_CLEAR, JOB_INT_MASK, JOB_INT_STAT = 0x1000, 0x1004, 0x1008, 0x100C
MMU_INT_MASK = 0x2008
LATEST_FLUSH_ID = 0x10000


def doorbell(i: int) -> int:
    return 0x80000 + i * 0x10000


RESET_COMPLETED, POWER_CHANGED, POWER_CHANGED_ALL = 1 << 8, 1 << 9, 1 << 10
CLEAN_CACHES_COMPLETED, MCU_STATUS_CHANGED = 1 << 17, 1 << 19
GPU_IRQ_DEFAULT = 0x00020103


# -- oracles: the driver's access sequences ------------------------------------------------
def read_counter(rig: Rig, off: int) -> tuple[int, int]:
    """panthor_gpu_read_64bit_counter: HI, LO, HI, retried while the HIs differ."""
    for attempt in range(1, 10):
        hi1 = rig.r32(off + 4)
        lo = rig.r32(off)
        hi2 = rig.r32(off + 4)
        if hi1 == hi2:
            return (hi1 << 32) | lo, attempt
    raise AssertionError("counter never settled")


def poll(rig: Rig, cond, *, interval_us: int = 100, timeout_us: int = 20_000) -> int:
    """read_poll_timeout: evaluate, then sleep ``interval``; False on timeout. Returns polls."""
    polls = 0
    elapsed = 0
    while True:
        polls += 1
        if cond():
            return polls
        if elapsed > timeout_us:
            return 0
        rig.clock.ns += interval_us * 1000
        elapsed += interval_us


def driver_l2_power_on(rig: Rig) -> bool:
    """panthor_gpu_l2_power_on / panthor_gpu_block_power_on (§2.4), non-coherent."""
    rig.w32(COHERENCY_PROTOCOL, 31)
    mask = 1
    if not poll(rig, lambda: not (mask & (rig.r64(L2_PWRTRANS) & 0xFFFFFFFF))):
        return False
    rig.w64(L2_PWRON, mask)

    def ready_ok() -> bool:
        val = rig.r64(L2_READY) & 0xFFFFFFFF  # read as 64-bit, stored in a u32
        return (mask & val) == val

    return bool(poll(rig, ready_ok))


def driver_l2_power_off(rig: Rig) -> bool:
    """panthor_gpu_l2_power_off (§2.4)."""
    l2_present = rig.gpu.model.l2_present
    if not poll(rig, lambda: not (rig.r64(L2_PWRTRANS) & l2_present)):
        return False
    rig.w64(L2_PWROFF, l2_present)
    return bool(poll(rig, lambda: not (rig.r64(L2_PWRTRANS) & l2_present)))


def driver_soft_reset(rig: Rig) -> bool:
    """panthor_gpu_soft_reset: CLEAR bit 8, write 0x101, wait for the IRQ, check RAWSTAT."""
    rig.w32(GPU_INT_CLEAR, RESET_COMPLETED)
    rig.w32(GPU_CMD, 0x101)
    return bool(rig.r32(GPU_INT_RAWSTAT) & RESET_COMPLETED)


# -- identity ------------------------------------------------------------------------------
def test_panthor_hw_init_read_order_gives_reference_values() -> None:
    rig = Rig()
    got = {}
    assert rig.r32(GPU_ID) != 0
    for name, off in (
        [
            ("csf_id", CSF_ID),
            ("gpu_rev", GPU_REVID),
            ("core_features", CORE_FEATURES),
            ("l2_features", L2_FEATURES),
            ("tiler_features", TILER_FEATURES),
            ("mem_features", MEM_FEATURES),
            ("mmu_features", MMU_FEATURES),
            ("thread_features", THREAD_FEATURES),
            ("max_threads", THREAD_MAX_THREADS),
            ("wg", THREAD_MAX_WG),
            ("barrier", THREAD_MAX_BARRIER),
            ("coherency_features", COHERENCY_FEATURES),
        ]
        + [(f"tex{n}", TEXTURE_FEATURES + 4 * n) for n in range(4)]
        + [("as_present", AS_PRESENT)]
    ):
        got[name] = rig.r32(off)
    got["gpu_features"] = rig.r64(GPU_FEATURES)
    got["shader_present"] = rig.r64(SHADER_PRESENT)
    got["tiler_present"] = rig.r64(TILER_PRESENT)
    got["l2_present"] = rig.r64(L2_PRESENT)
    assert rig.r32(GPU_ID) == 0xA8670005
    assert got["mmu_features"] == 0x2830
    assert got["as_present"] == 0xFF
    assert got["shader_present"] == 0x50005
    assert got["l2_present"] == 1 and got["tiler_present"] == 1
    assert got["l2_features"] == 0x07120306
    assert got["tiler_features"] == 0x809
    assert got["mem_features"] == 0x301
    assert got["gpu_features"] == 0  # arch 10
    assert got["csf_id"] == G610.csf_id and got["thread_features"] == G610.thread_features
    assert [got[f"tex{n}"] for n in range(4)] == list(G610.texture_features)
    assert rig.gpu.stats["unknown_reads"] == 0


def test_identity_registers_are_read_only() -> None:
    rig = Rig()
    for off in (GPU_ID, MMU_FEATURES, AS_PRESENT, SHADER_PRESENT, L2_PRESENT + 4, CSF_ID):
        before = rig.r32(off)
        rig.w32(off, 0xDEADBEEF)
        assert rig.r32(off) == before


def test_second_model_decodes_its_own_identity() -> None:
    g720 = MODELS["g720"]
    rig = Rig(g720)
    gpu_id = rig.r32(GPU_ID)
    assert (gpu_id >> 28, (gpu_id >> 24) & 0xF) == (12, 8)
    assert rig.r64(GPU_FEATURES) == g720.gpu_features
    assert rig.r64(SHADER_PRESENT) == g720.shader_present
    assert rig.gpu.mmu.as_present == g720.as_present


def test_mmu_constructed_from_model_and_window_forwarded() -> None:
    rig = Rig()
    mmu = rig.gpu.mmu
    assert (mmu.as_present, mmu.va_bits, mmu.pa_bits) == (0xFF, 48, 40)
    assert mmu.irq is rig.gpu.mmu_irq
    rig.w64(0x2400 + 1 * 0x40 + 0x00, 0x1234_5000)  # AS1 AS_TRANSTAB (MMU block +0x440)
    rig.w32(0x2400 + 1 * 0x40 + 0x18, 1)  # AS1 AS_COMMAND = UPDATE (MMU block +0x458)
    st = introspect.as_state(mmu, 1)
    assert st["present"] is True
    assert st["registers"]["TRANSTAB"] == 0x1234_5000
    assert st["commands"]["UPDATE"] == 1 and sum(st["commands"].values()) == 1
    assert st["active"]["TRANSTAB"] == 0x1234_5000
    assert rig.r64(0x2400 + 1 * 0x40 + 0x00) == 0x1234_5000  # reads come back the same way
    rig.w32(MMU_INT_MASK, 0xFFFF)
    assert rig.r32(MMU_INT_MASK) == 0xFFFF
    rig.gpu.mmu_irq.raise_bits(1 << 3)
    assert rig.lines[-1] == ("mmu", True)


# -- GPU_INT -------------------------------------------------------------------------------
def test_gpu_int_quartet_and_level_line() -> None:
    rig = Rig()
    rig.w32(GPU_INT_MASK, 0)  # request_irq
    rig.w32(GPU_INT_CLEAR, GPU_IRQ_DEFAULT)  # irq_resume
    rig.w32(GPU_INT_MASK, GPU_IRQ_DEFAULT)
    assert rig.lines == []
    rig.w32(GPU_CMD, 0x1104)
    assert rig.r32(GPU_INT_RAWSTAT) & CLEAN_CACHES_COMPLETED
    assert rig.r32(GPU_INT_STAT) == CLEAN_CACHES_COMPLETED
    assert rig.lines == [("gpu", True)]
    # the driver's raw handler: STAT != 0 -> MASK = 0 (line drops), thread clears and restores
    rig.w32(GPU_INT_MASK, 0)
    assert rig.lines[-1] == ("gpu", False)
    status = rig.r32(GPU_INT_RAWSTAT) & GPU_IRQ_DEFAULT
    rig.w32(GPU_INT_CLEAR, status)
    assert rig.r32(GPU_INT_RAWSTAT) & GPU_IRQ_DEFAULT == 0
    rig.w32(GPU_INT_MASK, GPU_IRQ_DEFAULT)
    assert rig.lines == [("gpu", True), ("gpu", False)]
    assert rig.gpu.stats["irq_gpu"] == 1


def test_power_changed_bits_not_in_default_mask_do_not_assert_line() -> None:
    rig = Rig()
    rig.w32(GPU_INT_MASK, GPU_IRQ_DEFAULT)
    rig.w64(L2_PWRON, 1)
    raw = rig.r32(GPU_INT_RAWSTAT)
    assert raw & POWER_CHANGED and raw & POWER_CHANGED_ALL
    assert rig.lines == []


def test_gpu_fault_reporting() -> None:
    rig = Rig()
    rig.w32(GPU_INT_MASK, GPU_IRQ_DEFAULT)
    rig.gpu.raise_gpu_fault(0x88, 0x1234_5678_9000)
    assert rig.r32(GPU_INT_STAT) & 1
    assert rig.r32(GPU_FAULT_STATUS) & 0xFF == 0x88
    assert rig.r64(GPU_FAULT_ADDR) == 0x1234_5678_9000
    assert rig.lines == [("gpu", True)]


# -- GPU_CMD -------------------------------------------------------------------------------
def test_soft_reset_as_the_driver_does_it(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()
    mmu_resets = 0
    mmu_reset = rig.gpu.mmu.reset

    def counted_mmu_reset() -> None:
        nonlocal mmu_resets
        mmu_resets += 1
        mmu_reset()

    monkeypatch.setattr(rig.gpu.mmu, "reset", counted_mmu_reset)
    mcu = RecordingMcu(rig.gpu)
    rig.gpu.mcu = mcu
    rig.w32(GPU_INT_MASK, GPU_IRQ_DEFAULT)
    assert driver_l2_power_on(rig)
    rig.w32(JOB_INT_MASK, 0xFFFFFFFF)
    rig.gpu.job_irq.raise_bits(1 << 31)
    rig.w32(MMU_INT_MASK, 0xFFFF)
    rig.w32(MCU_CONTROL, 2)
    assert rig.r32(MCU_STATUS) == 1
    rig.gpu.raise_gpu_fault(0x88, 0x1000)
    rig.w64(0x2400 + 2 * 0x40 + 0x00, 0x5000)  # AS2 AS_TRANSTAB: an AS register reset clears
    resets_before = mmu_resets

    assert driver_soft_reset(rig)

    assert rig.r32(GPU_INT_RAWSTAT) == RESET_COMPLETED  # everything else cleared
    assert rig.r32(GPU_INT_STAT) == RESET_COMPLETED  # mask kept: the driver waits on the IRQ
    gpu_lines = [lv for name, lv in rig.lines if name == "gpu"]
    assert gpu_lines == [True]  # asserted by the fault, still asserted, no glitch
    assert ("job", False) in rig.lines  # JOB_INT mask/raw cleared drops the job line
    assert rig.r64(L2_READY) == 0 and rig.r64(SHADER_READY) == 0
    assert rig.r32(JOB_INT_MASK) == 0 and rig.r32(JOB_INT_RAWSTAT) == 0
    assert rig.r32(MMU_INT_MASK) == 0
    assert mmu_resets == resets_before + 1
    assert rig.r64(0x2400 + 2 * 0x40 + 0x00) == 0
    assert mcu.calls[-1] == ("gpu_reset", None)
    assert rig.r32(MCU_STATUS) == 0 and rig.r32(MCU_CONTROL) == 0
    assert rig.r32(GPU_FAULT_STATUS) == 0
    assert rig.r32(COHERENCY_PROTOCOL) == 31
    # the driver then powers L2 up again and it works
    assert driver_l2_power_on(rig)
    assert rig.r64(L2_READY) == 1


def test_hard_reset_also_completes() -> None:
    rig = Rig()
    rig.w64(L2_PWRON, 1)
    rig.w32(GPU_CMD, 0x201)
    assert rig.r32(GPU_INT_RAWSTAT) & RESET_COMPLETED
    assert rig.r64(L2_READY) == 0


def test_fast_reset_keeps_the_power_domains_powered() -> None:
    """GPU_CMD RESET payload 0 (kbase GPU_COMMAND_RESET_PAYLOAD_FAST_RESET): a reset that
    completes like the soft one but leaves the power domains on."""
    rig = Rig()
    rig.w64(L2_PWRON, 1)
    assert rig.r64(L2_READY) == 1
    rig.w32(GPU_INT_MASK, 0)
    rig.w32(GPU_CMD, 0x001)
    assert rig.r32(GPU_INT_RAWSTAT) & RESET_COMPLETED
    assert rig.r64(L2_READY) == 1
    assert rig.r32(GPU_INT_MASK) == 0  # the mask survives, as for the soft reset


def test_flush_pa_range_completes_with_its_own_bit() -> None:
    """GPU_CMD FLUSH_PA_RANGE (type 8): kbase waits for FLUSH_PA_RANGE_COMPLETED (bit 20), not
    CLEAN_CACHES_COMPLETED (bit 17)."""
    rig = Rig()
    rig.w32(GPU_INT_CLEAR, 0xFFFFFFFF)
    rig.w32(GPU_CMD, 0x00000308)  # FLUSH_PA_RANGE, clean and invalidate
    raw = rig.r32(GPU_INT_RAWSTAT)
    assert raw & 1 << 20 and not raw & CLEAN_CACHES_COMPLETED


@pytest.mark.parametrize("cmd", [0x00023304, 0x00001104])
def test_flush_caches_raise_bit17_and_bump_latest_flush_id(cmd: int) -> None:
    rig = Rig()
    before = rig.r32(LATEST_FLUSH_ID)
    assert before != 0  # 0 means "always flush"
    rig.w32(GPU_CMD, cmd)
    assert rig.r32(GPU_INT_RAWSTAT) & CLEAN_CACHES_COMPLETED
    after = rig.r32(LATEST_FLUSH_ID)
    assert after == before + 1
    assert after & 0x7F000000 == 0  # bits 30:24 must be zero for userspace (§3.3)
    assert struct.unpack_from("<I", rig.gpu.user_page)[0] == after
    rig.w32(GPU_INT_CLEAR, CLEAN_CACHES_COMPLETED)
    rig.w32(GPU_CMD, cmd)
    assert rig.r32(LATEST_FLUSH_ID) == after + 1
    assert rig.r32(GPU_INT_RAWSTAT) & CLEAN_CACHES_COMPLETED


def test_latest_flush_id_is_read_only_and_wraps_without_zero() -> None:
    rig = Rig()
    rig.w32(LATEST_FLUSH_ID, 0)
    assert rig.r32(LATEST_FLUSH_ID) == 1
    rig.gpu.latest_flush_id = 0xFFFFFF
    rig.gpu.flush_caches()  # CS FLUSH_CACHE2 path: no GPU_INT bit
    assert rig.r32(LATEST_FLUSH_ID) == 1
    assert rig.r32(GPU_INT_RAWSTAT) & CLEAN_CACHES_COMPLETED == 0


def test_user_page_can_be_served_from_shared_buffer() -> None:
    rig = Rig()
    assert rig.gpu.side_effect_free_pages() == (0x10000,)
    page = bytearray(4096)
    rig.gpu.attach_user_page(page)
    rig.w32(GPU_CMD, 0x23304)
    assert struct.unpack_from("<I", page)[0] == rig.r32(LATEST_FLUSH_ID)


# -- power ---------------------------------------------------------------------------------
def test_l2_power_on_and_off_driver_polls_succeed_at_once() -> None:
    rig = Rig()
    t0 = rig.clock.ns
    assert driver_l2_power_on(rig)
    assert rig.clock.ns == t0  # both polls pass on their first read
    assert rig.r64(L2_READY) == 1
    assert rig.r64(L2_PWRTRANS) == 0
    assert driver_l2_power_off(rig)
    assert rig.clock.ns == t0
    assert rig.r64(L2_READY) == 0


def test_l2_ready_reads_back_only_written_bits_with_two_l2_slices() -> None:
    model = dataclasses.replace(G610, key="two-l2", l2_present=0x3)
    rig = Rig(model)
    assert driver_l2_power_on(rig)  # would time out if READY showed bit 1
    assert rig.r64(L2_READY) == 1
    assert driver_l2_power_off(rig)
    assert rig.r64(L2_READY) == 0


def test_repeated_suspend_resume_power_cycles() -> None:
    rig = Rig()
    for _ in range(5):
        assert driver_l2_power_on(rig)
        assert driver_l2_power_off(rig)


def test_shader_and_tiler_pwron_masked_by_present() -> None:
    rig = Rig()
    rig.w64(L2_PWRON, 1)
    rig.w64(SHADER_PWRON, 0xFFFF_FFFF_FFFF_FFFF)
    rig.w64(TILER_PWRON, 0xFF)
    assert rig.r64(SHADER_READY) == 0x50005
    assert rig.r64(TILER_READY) == 1
    assert rig.r64(SHADER_PWRTRANS) == 0 and rig.r64(TILER_PWRTRANS) == 0
    rig.w64(SHADER_PWROFF, 0x4)
    assert rig.r64(SHADER_READY) == 0x50001
    # L2 off takes the cores that depend on it down too
    rig.w64(L2_PWROFF, 1)
    assert rig.r64(SHADER_READY) == 0 and rig.r64(TILER_READY) == 0


def test_power_changed_single_only_on_a_real_change() -> None:
    rig = Rig()
    rig.w64(L2_PWRON, 1)
    rig.w32(GPU_INT_CLEAR, 0xFFFFFFFF)
    rig.w64(L2_PWRON, 1)  # already on
    raw = rig.r32(GPU_INT_RAWSTAT)
    assert raw & POWER_CHANGED_ALL and not raw & POWER_CHANGED


# -- timers --------------------------------------------------------------------------------
def test_counter_hi_lo_hi_consistent_across_low_word_carry() -> None:
    clock = FakeClock()
    rig = Rig(clock=clock, timestamp_hz=1_000_000_000)  # 1 tick per ns
    clock.ns, clock.step = 2**32 - 2, 1  # LO carries between the first HI and the LO read
    value, attempts = read_counter(rig, TIMESTAMP)
    assert attempts == 2  # the first attempt saw HI change and retried, as the driver does
    assert value == 2**32 + 2  # HI=1 from the retry, LO from the same epoch


def test_counter_reads_monotonic() -> None:
    clock = FakeClock(step=333)
    rig = Rig(clock=clock)
    last_ts = last_cc = -1
    for _ in range(200):
        ts, _ = read_counter(rig, TIMESTAMP)
        cc, _ = read_counter(rig, CYCLE_COUNT)
        assert ts > last_ts and cc > last_cc
        last_ts, last_cc = ts, cc


def test_eight_byte_counter_read_is_one_sample() -> None:
    clock = FakeClock()
    rig = Rig(clock=clock, timestamp_hz=1_000_000_000)
    clock.ns, clock.step = 2**32 - 1, 1
    assert rig.gpu.mmio_read(TIMESTAMP, 8) == 2**32 - 1  # not torn into 2**33 - 1


def test_counter_rates_follow_model_frequencies() -> None:
    clock = FakeClock()
    rig = Rig(clock=clock)
    ts0, _ = read_counter(rig, TIMESTAMP)
    cc0, _ = read_counter(rig, CYCLE_COUNT)
    clock.ns += 1_000_000_000
    ts1, _ = read_counter(rig, TIMESTAMP)
    cc1, _ = read_counter(rig, CYCLE_COUNT)
    assert ts1 - ts0 == G610.timestamp_hz
    assert cc1 - cc0 == G610.core_clock_hz
    assert rig.gpu.timestamp() == ts1


def test_timestamp_rate_against_real_clock() -> None:
    hz = 24_000_000
    gpu = MaliGpu(
        G610,
        SparseRam(),
        on_irq=lambda n, lv: None,
        clock=time.monotonic_ns,
        timestamp_hz=hz,
    )
    outer0 = time.monotonic_ns()
    ts0 = gpu.mmio_read(TIMESTAMP, 8)
    inner0 = time.monotonic_ns()
    while time.monotonic_ns() - inner0 < 20_000_000:  # let ~20 ms of real time pass
        time.sleep(0.005)
    inner1 = time.monotonic_ns()
    ts1 = gpu.mmio_read(TIMESTAMP, 8)
    outer1 = time.monotonic_ns()
    ticks = ts1 - ts0
    # the two samples lie inside [outer0, inner0] and [inner1, outer1]; allow 1 tick rounding
    assert (inner1 - inner0) * hz // 10**9 - 1 <= ticks <= (outer1 - outer0) * hz // 10**9 + 1


def test_timestamp_offset_is_added_and_reads_back() -> None:
    clock = FakeClock()
    rig = Rig(clock=clock)
    clock.ns = 5_000
    base = rig.gpu.mmio_read(TIMESTAMP, 8)
    rig.w64(TIMESTAMP_OFFSET, 0x1_0000_0000)
    assert rig.r64(TIMESTAMP_OFFSET) == 0x1_0000_0000
    assert rig.gpu.mmio_read(TIMESTAMP, 8) == base + 0x1_0000_0000


# -- MCU, doorbells ------------------------------------------------------------------------
def test_mcu_control_forwarded_and_status_read_back() -> None:
    rig = Rig()
    mcu = RecordingMcu(rig.gpu)
    rig.gpu.mcu = mcu
    rig.w32(MCU_CONTROL, 2)
    assert mcu.calls == [("mcu_control", 2)]
    assert rig.r32(MCU_CONTROL) == 2
    assert rig.r32(MCU_STATUS) == 1
    assert rig.r32(GPU_INT_RAWSTAT) & MCU_STATUS_CHANGED
    rig.gpu.mcu_status = 2  # firmware halted
    assert rig.r32(MCU_STATUS) == 2
    rig.w32(MCU_CONTROL, 0)
    assert mcu.calls[-1] == ("mcu_control", 0)
    assert rig.r32(MCU_STATUS) == 0


def test_without_firmware_mcu_never_boots() -> None:
    rig = Rig()
    rig.w32(JOB_INT_CLEAR, 0xFFFFFFFF)
    rig.w32(JOB_INT_MASK, 0xFFFFFFFF)
    rig.w32(MCU_CONTROL, 2)
    assert rig.r32(JOB_INT_STAT) & (1 << 31) == 0
    assert rig.r32(MCU_STATUS) == 0  # the driver then reports a boot timeout
    rig.w32(MCU_CONTROL, 1)
    assert rig.r32(MCU_STATUS) == 0


def test_job_int_block() -> None:
    rig = Rig()
    rig.w32(JOB_INT_MASK, 0xFFFFFFFF)
    rig.gpu.job_irq.raise_bits((1 << 31) | (1 << 2))
    assert rig.r32(JOB_INT_STAT) == (1 << 31) | (1 << 2)
    assert rig.lines == [("job", True)]
    rig.w32(JOB_INT_CLEAR, 1 << 31)
    assert rig.r32(JOB_INT_RAWSTAT) == 1 << 2
    rig.w32(JOB_INT_CLEAR, 1 << 2)
    assert rig.lines == [("job", True), ("job", False)]


def test_doorbells_dispatch_by_index() -> None:
    rig = Rig()
    mcu = RecordingMcu()
    rig.gpu.mcu = mcu
    for i in range(17):
        rig.w32(doorbell(i), 1)
        assert rig.r32(doorbell(i)) == 0
    assert mcu.calls == [("doorbell", i) for i in range(17)]
    # other offsets inside a doorbell page are not the doorbell register
    unknown = rig.gpu.stats["unknown_writes"]
    for off in (doorbell(1) + 4, doorbell(2) + 0x100, doorbell(3) + 0xFFFC):
        rig.w32(off, 1)
    assert len(mcu.calls) == 17
    assert rig.gpu.stats["unknown_writes"] == unknown + 3
    rig.w32(doorbell(23), 1)  # last page inside the 2 MiB window
    assert mcu.calls[-1] == ("doorbell", 23)


def test_doorbell_without_firmware_is_dropped_and_counted() -> None:
    rig = Rig()
    rig.w32(doorbell(0), 1)
    assert rig.gpu.stats["doorbells_dropped"] == 1


def test_hook_exceptions_never_escape() -> None:
    rig = Rig()
    rig.gpu.mcu = RecordingMcu(raise_on="doorbell")
    rig.w32(doorbell(0), 1)
    assert rig.gpu.stats["mcu_hook_errors"] == 1
    rig.gpu.mcu = RecordingMcu(raise_on="gpu_reset")
    rig.w32(GPU_CMD, 0x101)  # reset still completes
    assert rig.r32(GPU_INT_RAWSTAT) & RESET_COMPLETED


# -- decode, widths, robustness ------------------------------------------------------------
@pytest.mark.parametrize("off", [0x034 + 4, 0x800, 0xFFC, 0x1010, 0x3000, 0x10004, 0x7FFFC])
def test_unknown_offsets_read_zero_and_are_counted(off: int) -> None:
    rig = Rig()
    assert rig.r32(off) == 0
    assert rig.gpu.stats["unknown_reads"] == 1
    rig.w32(off, 0xFFFFFFFF)
    assert rig.gpu.stats["unknown_writes"] == 1
    assert rig.r32(off) == 0


def test_sub_word_and_wide_accesses() -> None:
    rig = Rig()
    gpu = rig.gpu
    assert [gpu.mmio_read(i, 1) for i in range(4)] == [0x05, 0x00, 0x67, 0xA8]
    assert gpu.mmio_read(2, 2) == 0xA867
    assert gpu.mmio_read(0, 8) == 0xA8670005 | (0x07120306 << 32)
    assert gpu.mmio_read(2, 4) == 0xA867 | (0x0306 << 16)  # unaligned: spans two registers
    gpu.mmio_write(GPU_INT_MASK + 2, 1, 0x02)  # read-modify-write of GPU_INT_MASK
    gpu.mmio_write(GPU_INT_MASK, 1, 0x03)
    assert rig.r32(GPU_INT_MASK) == 0x00020003
    gpu.mmio_write(GPU_INT_MASK, 2, 0x0103)
    assert rig.r32(GPU_INT_MASK) == 0x00020103
    gpu.mmio_write(L2_PWRON, 8, 1)  # LO then HI
    assert gpu.mmio_read(L2_READY, 8) == 1
    gpu.mmio_write(TIMESTAMP_OFFSET, 8, 0x1122_3344_5566_7788)
    assert gpu.mmio_read(TIMESTAMP_OFFSET, 8) == 0x1122_3344_5566_7788
    assert gpu.mmio_read(TIMESTAMP_OFFSET + 4, 2) == 0x3344


@pytest.mark.parametrize(
    ("off", "size"), [(0, 3), (0, 0), (0, 16), (-4, 4), (0x200000, 4), (0x1FFFFE, 4)]
)
def test_bad_accesses_are_refused_quietly(off: int, size: int) -> None:
    rig = Rig()
    assert rig.gpu.mmio_read(off, size) == 0
    rig.gpu.mmio_write(off, size, 1)
    assert rig.gpu.stats["bad_accesses"] == 2


def test_trace_names_registers(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(trace=True)
    with caplog.at_level(logging.INFO, logger="qemu_panthor.gpu"):
        rig.r32(GPU_ID)
        rig.w64(L2_PWRON, 1)
        rig.w32(0x2400 + 2 * 0x40 + 0x18, 1)
        rig.w32(doorbell(3), 1)
    text = caplog.text
    for name in ("GPU_ID", "L2_PWRON_LO", "L2_PWRON_HI", "AS2.AS_COMMAND", "CSF_DOORBELL(3)"):
        assert name in text


def test_device_reset_returns_to_power_on_state() -> None:
    rig = Rig()
    rig.w32(GPU_INT_MASK, GPU_IRQ_DEFAULT)
    rig.w64(L2_PWRON, 1)
    rig.w32(GPU_CMD, 0x23304)
    assert rig.gpu.gpu_irq.level
    rig.gpu.reset()
    assert rig.r32(GPU_INT_MASK) == 0 and rig.r32(GPU_INT_RAWSTAT) == 0
    assert rig.r64(L2_READY) == 0
    assert rig.lines[-1] == ("gpu", False)
    assert rig.r32(GPU_ID) == 0xA8670005


def test_the_mmu_is_the_real_mmu_model() -> None:
    lines: list[tuple[str, bool]] = []
    gpu = MaliGpu(G610, SparseRam(), on_irq=lambda n, lv: lines.append((n, lv)))
    assert isinstance(gpu.mmu, Mmu)
    gpu.mmio_write(MMU_INT_MASK, 4, 0xFFFF)
    assert gpu.mmio_read(MMU_INT_MASK, 4) == 0xFFFF
    gpu.mmio_write(GPU_CMD, 4, 0x101)  # reset clears MMU_INT_MASK
    assert gpu.mmio_read(MMU_INT_MASK, 4) == 0

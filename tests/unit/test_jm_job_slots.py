"""JOB_CONTROL of a JM Mali as panfrost drives it (docs/reference/mali-g52-jm.md section 3).

Chains are written into guest memory mapped with the Mali LPAE format, submitted the way
panfrost_job_hw_submit does (HEAD/AFFINITY/CONFIG/FLUSH_ID_NEXT, then COMMAND_NEXT START) and
read back the way its IRQ thread does (JOB_INT_RAWSTAT, JS_STATUS, JS_HEAD/TAIL,
JOB_INT_JS_STATE). Job headers and payloads are packed here from the genxml v7 layout, not
from the model's structs.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import pgtable_writer as ptw

from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.jm import JobControl
from qemu_panthor.mmu import Mmu

BASE = 0x8000_0000
AS = 2
ASB = 0x400 + AS * 0x40
BO_VA = 0x200_0000
BO_PA = BASE + 0x10_0000
BO_SIZE = 0x10000
JS1 = 0x800 + 1 * 0x80  # JS1 registers (JOB_CONTROL-relative)
RAWSTAT, CLEAR, MASK, JS_STATE = 0x0, 0x4, 0x8, 0x10
HEAD, TAIL, CONFIG, COMMAND, STATUS = 0x00, 0x08, 0x18, 0x20, 0x24
HEAD_NEXT, AFFINITY_NEXT, CONFIG_NEXT, COMMAND_NEXT, FLUSH_ID_NEXT = 0x40, 0x50, 0x58, 0x60, 0x70
CONFIG_G52 = 0x0008_7300  # panfrost on G52: PRI 8, clean+invalidate at start/end, flush reduction
CHAIN_FLAG = 1 << 11
TIMESTAMP = 0x1122_3344_5566_7788

# job types and write-value types (genxml v7)
NULL, WRITE_VALUE, CACHE_FLUSH, COMPUTE = 1, 2, 3, 4
ZERO, TS, IMM8, IMM32, IMM64 = 3, 2, 4, 6, 7


class Gpu:
    """Guest RAM with one BO mapped in AS2 (Mali LPAE) and the JOB_CONTROL block."""

    def __init__(self) -> None:
        self.ram = ptw.TableRam(base=BASE, size=4 << 20, tables=1 << 20)
        w = self.vm = ptw.LpaeWriter(self.ram, ias=35, oas=40, mali=True)
        w.map(BO_VA, BO_PA, BO_SIZE, ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE)
        self.mmu = Mmu(self.ram.mem, IrqBlock("mmu"), as_present=0xFF, va_bits=35, pa_bits=40,
                       legacy_lpae=True)
        for off, v in ((0x00, w.transtab), (0x08, 0x888D88), (0x30, 0)):
            self.mmu.write32(ASB + off, v & 0xFFFF_FFFF)
            self.mmu.write32(ASB + off + 4, v >> 32)
        self.mmu.write32(ASB + 0x18, 1)  # UPDATE
        self.jm = JobControl(self.mmu, IrqBlock("job"), js_present=0x7,
                             timestamp=lambda: TIMESTAMP)
        self.jm.write32(MASK, 0x70007)
        self.mmu.on_as_update = self.jm.on_as_update  # as MaliGpu wires a JM part

    def off(self, va: int) -> int:
        return va - BO_VA + (BO_PA - BASE)

    def job(self, va: int, jtype: int, nxt: int = 0, payload: bytes = b"", *,
            is_64b: bool = True, status: int = 0) -> int:
        control = int(is_64b) | jtype << 1 | 1 << 16  # index 1
        hdr = struct.pack("<IIQIHHQ", status, 0, 0, control, 0, 0, nxt)
        o = self.off(va)
        self.ram.buf[o:o + 32 + len(payload)] = hdr + payload
        return va

    def write_value(self, va: int, addr: int, wtype: int, imm: int = 0, nxt: int = 0) -> int:
        return self.job(va, WRITE_VALUE, nxt, struct.pack("<QIIQ", addr, wtype, 0, imm))

    def u32(self, va: int) -> int:
        return int(struct.unpack_from("<I", self.ram.buf, self.off(va))[0])

    def u64(self, va: int) -> int:
        return int(struct.unpack_from("<Q", self.ram.buf, self.off(va))[0])

    def submit(self, js_base: int, jc: int, config: int = CONFIG_G52 | AS) -> None:
        """panfrost_job_hw_submit: the _NEXT registers, then COMMAND_NEXT START."""
        jm = self.jm
        assert jm.read32(js_base + COMMAND_NEXT) == 0, "panfrost WARNs and drops the job"
        jm.write32(js_base + HEAD_NEXT, jc & 0xFFFF_FFFF)
        jm.write32(js_base + HEAD_NEXT + 4, jc >> 32)
        jm.write32(js_base + AFFINITY_NEXT, 0x1)
        jm.write32(js_base + AFFINITY_NEXT + 4, 0)
        jm.write32(js_base + CONFIG_NEXT, config)
        jm.write32(js_base + FLUSH_ID_NEXT, 0)
        jm.write32(js_base + COMMAND_NEXT, 1)


def test_register_map_and_absent_slots() -> None:
    g = Gpu()
    jm = g.jm
    jm.write32(JS1 + HEAD_NEXT, 0x1234_5000)
    jm.write32(JS1 + HEAD_NEXT + 4, 0x1)
    jm.write32(JS1 + CONFIG_NEXT, 0x87302)
    assert (jm.read32(JS1 + HEAD_NEXT), jm.read32(JS1 + HEAD_NEXT + 4)) == (0x1234_5000, 1)
    assert jm.read32(JS1 + CONFIG_NEXT) == 0x87302 and jm.read32(JS1 + COMMAND_NEXT) == 0
    assert jm.read32(JS_STATE) == 0 and jm.read32(MASK) == 0x70007
    js3 = 0x800 + 3 * 0x80  # not in JS_PRESENT 0x7
    jm.write32(js3 + COMMAND_NEXT, 1)
    assert jm.read32(js3 + COMMAND_NEXT) == 0 and jm.read32(JS_STATE) == 0
    assert jm.stats["unknown_writes"] == 1 and jm.stats["unknown_reads"] == 1


def test_write_value_chain_completes_with_done_written_back() -> None:
    g = Gpu()
    data = BO_VA + 0x8000
    j3 = g.write_value(BO_VA + 0x80, data + 0x10, TS)
    j2 = g.write_value(BO_VA + 0x40, data + 0x8, IMM8, 0x1AB, nxt=j3)
    j1 = g.write_value(BO_VA + 0x00, data, IMM32, 0xCAFE_F00D_1234_5678, nxt=j2)
    g.ram.buf[g.off(data):g.off(data) + 0x18] = b"\xff" * 0x18
    g.submit(JS1, j1)
    assert g.jm.read32(COMMAND_NEXT + JS1) == 0  # an idle slot takes the _NEXT set at once
    assert g.jm.read32(JS_STATE) == 1 << 1
    assert not g.jm.pump()
    assert g.u32(data) == 0x1234_5678 and g.u32(data + 4) == 0xFFFF_FFFF  # 32 bits only
    assert g.ram.buf[g.off(data + 8)] == 0xAB and g.ram.buf[g.off(data + 9)] == 0xFF
    assert g.u64(data + 0x10) == TIMESTAMP
    for j in (j1, j2, j3):
        assert g.u32(j) == 1 and g.u64(j + 8) == 0  # exception status DONE, no fault pointer
    assert g.jm.read32(RAWSTAT) == 1 << 1 and g.jm.irq.level
    assert g.jm.read32(JS1 + STATUS) == 1 and g.jm.read32(JS_STATE) == 0
    g.jm.write32(CLEAR, 1 << 1)
    assert g.jm.read32(RAWSTAT) == 0 and not g.jm.irq.level


def test_null_cache_flush_compute_and_zero() -> None:
    g = Gpu()
    data = BO_VA + 0x8000
    g.ram.buf[g.off(data):g.off(data) + 8] = b"\xee" * 8
    j4 = g.write_value(BO_VA + 0xC0, data, ZERO)
    j3 = g.job(BO_VA + 0x80, COMPUTE, j4)
    j2 = g.job(BO_VA + 0x40, CACHE_FLUSH, j3, struct.pack("<II", 0x30003, 0x3))
    j1 = g.job(BO_VA, NULL, j2)
    g.submit(JS1, j1)
    g.jm.pump()
    assert g.u64(data) == 0 and all(g.u32(j) == 1 for j in (j1, j2, j3, j4))
    assert g.jm.read32(RAWSTAT) == 1 << 1


def test_next_set_is_double_buffered() -> None:
    """A second chain queued while the first runs waits in _NEXT (COMMAND_NEXT reads START,
    JS_STATE bit 16+js) and starts when the first ends, with no acknowledgement: one DONE
    bit covers both."""
    g = Gpu()
    a = g.write_value(BO_VA, BO_VA + 0x8000, IMM64, 0xA)
    b = g.write_value(BO_VA + 0x40, BO_VA + 0x8008, IMM64, 0xB)
    g.submit(JS1, a, CONFIG_G52 | AS)
    g.jm.write32(JS1 + HEAD_NEXT, b)
    g.jm.write32(JS1 + CONFIG_NEXT, CONFIG_G52 | CHAIN_FLAG | AS)
    g.jm.write32(JS1 + COMMAND_NEXT, 1)
    assert g.jm.read32(JS1 + COMMAND_NEXT) == 1
    assert g.jm.read32(JS_STATE) == (1 << 1) | (1 << 17)
    assert g.jm.pump()  # chain a done, b taken from _NEXT: the slot still runs
    assert g.jm.read32(JS1 + COMMAND_NEXT) == 0 and g.jm.read32(JS_STATE) == 1 << 1
    assert not g.jm.pump()
    assert (g.u64(BO_VA + 0x8000), g.u64(BO_VA + 0x8008)) == (0xA, 0xB)
    assert g.jm.read32(RAWSTAT) == 1 << 1 and g.jm.read32(JS_STATE) == 0
    assert g.jm.read32(JS1 + CONFIG) & CHAIN_FLAG and g.jm.read32(JS1 + HEAD) == b
    assert g.jm.slots[1].chains_done == 2


def test_withdrawn_next_does_not_run() -> None:
    g = Gpu()
    a = g.job(BO_VA, NULL)
    b = g.write_value(BO_VA + 0x40, BO_VA + 0x8000, IMM64, 0xB)
    g.submit(JS1, a)
    g.jm.write32(JS1 + HEAD_NEXT, b)
    g.jm.write32(JS1 + CONFIG_NEXT, CONFIG_G52 | AS)
    g.jm.write32(JS1 + COMMAND_NEXT, 1)
    g.jm.write32(JS1 + COMMAND_NEXT, 0)  # NOP: withdrawn
    g.jm.pump()
    assert g.u64(BO_VA + 0x8000) == 0 and g.jm.slots[1].chains_done == 1


def _disable_as(g: Gpu) -> None:
    """panfrost_mmu_disable after an unhandled fault: LOCK + FLUSH_MEM over the whole VA, then
    TRANSTAB 0, MEMATTR 0, TRANSCFG UNMAPPED and UPDATE."""
    g.mmu.write32(ASB + 0x10, 0x3F)
    g.mmu.write32(ASB + 0x14, 0)
    g.mmu.write32(ASB + 0x18, 2)  # LOCK
    g.mmu.write32(ASB + 0x18, 5)  # FLUSH_MEM (restarts: the retry faults again)
    g.jm.pump()
    for off, v in ((0x00, 0), (0x08, 0), (0x30, 1)):
        g.mmu.write32(ASB + off, v)
        g.mmu.write32(ASB + off + 4, 0)
    g.mmu.write32(ASB + 0x18, 1)  # UPDATE


def test_page_fault_stalls_the_job_until_the_driver_disables_the_as() -> None:
    """IGT pan-unhandled-pagefault: a write value to 0xdeadbeef0000. The MMU latches the fault
    (MMU_INT bit AS) and the job stalls, still active; clearing MMU_INT restarts nothing;
    panfrost's answer, disabling the AS, ends it with JOB_BUS_FAULT, and the header is not
    written (IGT: "it's not reflected in the job header because the MMU mapping is disabled
    (to kill the job immediately) before the job manager has a chance to update the
    exception status")."""
    g = Gpu()
    j = g.write_value(BO_VA, 0xDEAD_BEEF_0000, ZERO)
    g.submit(JS1, j)
    assert not g.jm.pump()  # stalled: nothing left to run
    assert g.mmu.irq.rawstat == 1 << AS
    assert g.mmu.read32(ASB + 0x20) == 0xBEEF_0000 and g.mmu.read32(ASB + 0x1C) & 0xFF == 0xC0
    assert g.jm.read32(RAWSTAT) == 0 and g.jm.read32(JS_STATE) == 1 << 1
    g.mmu.write32(0x4, 1 << AS)  # MMU_INT_CLEAR
    g.jm.pump()
    assert g.jm.read32(RAWSTAT) == 0 and g.jm.read32(JS_STATE) == 1 << 1
    _disable_as(g)
    g.jm.pump()
    assert g.jm.read32(RAWSTAT) == 1 << 17 and g.jm.read32(JS1 + STATUS) == 0x48
    assert g.u32(j) == 0 and g.u64(j + 8) == 0  # the header was not written
    assert g.jm.read32(JS1 + HEAD) == j and g.jm.read32(JS_STATE) == 0


def test_page_fault_retries_when_the_driver_maps_the_page() -> None:
    """A heap BO growing on fault: the driver maps the page, then LOCK + UNLOCK (a restart
    command) on the AS; the stalled job retries and completes."""
    g = Gpu()
    target = BO_VA + 0x40_0000  # beyond the BO: unmapped
    j = g.write_value(BO_VA, target, IMM32, 0x1234_5678)
    g.submit(JS1, j)
    g.jm.pump()
    assert g.jm.read32(JS_STATE) == 1 << 1 and g.jm.read32(RAWSTAT) == 0
    g.vm.map(target, BO_PA + 0x8000, 0x1000, ptw.IOMMU_READ | ptw.IOMMU_WRITE)
    g.mmu.write32(0x4, 1 << AS)  # the fault handler clears MMU_INT first
    g.jm.pump()
    assert g.jm.read32(JS_STATE) == 1 << 1  # a clear is not a restart
    g.mmu.write32(ASB + 0x10, (target & ~0xFFF) | 11)
    g.mmu.write32(ASB + 0x18, 2)  # LOCK
    g.mmu.write32(ASB + 0x18, 3)  # UNLOCK: restarts the stalled access
    g.jm.pump()
    assert g.jm.read32(RAWSTAT) == 1 << 1 and g.jm.read32(JS1 + STATUS) == 1
    assert g.u32(BO_VA + 0x8000) == 0x1234_5678 and g.u32(j) == 1
    assert g.jm.stats["mmu_stalls"] == 1


def test_hard_stop_kills_a_stalled_job() -> None:
    g = Gpu()
    j = g.write_value(BO_VA, 0xDEAD_BEEF_0000, ZERO)
    g.submit(JS1, j)
    g.jm.pump()
    g.jm.write32(JS1 + COMMAND, 2)  # SOFT_STOP: waits for a boundary the job cannot reach
    g.jm.pump()
    assert g.jm.read32(JS_STATE) == 1 << 1
    g.jm.write32(JS1 + COMMAND, 3)  # HARD_STOP
    assert g.jm.read32(RAWSTAT) == 1 << 17 and g.jm.read32(JS1 + STATUS) == 0x04
    assert g.jm.read32(JS_STATE) == 0


def test_unreadable_chain_head_stalls_then_fails_without_write_back() -> None:
    g = Gpu()
    g.submit(JS1, 0x1000_0000)  # nothing mapped there
    g.jm.pump()
    assert g.jm.read32(RAWSTAT) == 0 and g.mmu.irq.rawstat == 1 << AS
    _disable_as(g)
    assert g.jm.read32(RAWSTAT) == 1 << 17 and g.jm.read32(JS1 + STATUS) == 0x48
    assert g.jm.read32(JS1 + HEAD) == 0x1000_0000


def test_a_job_in_a_disabled_as_fails_at_once() -> None:
    g = Gpu()
    j = g.write_value(BO_VA, BO_VA + 0x8000, IMM32, 1)
    g.submit(JS1, j, config=CONFIG_G52 | 5)  # AS5 was never enabled
    g.jm.pump()
    assert g.jm.read32(RAWSTAT) == 1 << 17 and g.jm.read32(JS1 + STATUS) == 0x48


@pytest.mark.parametrize("jtype,is_64b", [(0, True), (11, True), (0x7F, True), (NULL, False)])
def test_bad_descriptors_are_job_config_faults(jtype: int, is_64b: bool) -> None:
    g = Gpu()
    ok = g.write_value(BO_VA + 0x40, BO_VA + 0x8000, IMM64, 5)
    bad = g.job(BO_VA, jtype, ok, is_64b=is_64b)
    g.submit(JS1, bad)
    g.jm.pump()
    assert g.jm.read32(JS1 + STATUS) == 0x40 and g.jm.read32(RAWSTAT) == 1 << 17
    assert g.u32(bad) == 0x40 and g.u64(bad + 8) == bad
    assert g.u64(BO_VA + 0x8000) == 0  # nothing after the bad job ran


def test_descriptor_write_back_can_be_disabled() -> None:
    g = Gpu()
    j = g.write_value(BO_VA, BO_VA + 0x8000, IMM64, 7)
    g.submit(JS1, j, CONFIG_G52 | 1 << 15 | AS)
    g.jm.pump()
    assert g.u64(BO_VA + 0x8000) == 7 and g.u32(j) == 0 and g.jm.read32(RAWSTAT) == 1 << 1


def _loop(g: Gpu) -> int:
    """IGT's job loop: two write values that zero each other's exception status, forever."""
    a, b = BO_VA, BO_VA + 0x40
    g.write_value(a, b, ZERO, nxt=b)
    g.write_value(b, a, ZERO, nxt=a)
    return a


def test_soft_stop_ends_an_endless_chain_resumably() -> None:
    g = Gpu()
    g.submit(JS1, _loop(g))
    assert g.jm.pump(100)  # still running after 100 jobs
    g.jm.write32(JS1 + COMMAND, 2)  # SOFT_STOP
    assert not g.jm.pump(100)
    assert g.jm.read32(RAWSTAT) == 1 << 17 and g.jm.read32(JS1 + STATUS) == 0x03
    tail = g.jm.read32(JS1 + TAIL)
    assert tail in (BO_VA, BO_VA + 0x40) and g.jm.read32(JS_STATE) == 0
    g.jm.write32(CLEAR, 1 << 17)
    g.submit(JS1, tail)  # panfrost resumes a stopped job at JS_TAIL
    assert g.jm.pump(10) and g.jm.slots[1].jobs_done == 110


def test_hard_stop_variants_follow_the_chain_flag() -> None:
    g = Gpu()
    g.submit(JS1, _loop(g), CONFIG_G52 | AS)  # chain flag 0
    g.jm.write32(JS1 + COMMAND, 7)  # HARD_STOP_1: another chain's
    assert g.jm.pump(10)
    g.jm.write32(JS1 + COMMAND, 5)  # HARD_STOP_0
    assert not g.jm.pump(10)
    assert g.jm.read32(JS1 + STATUS) == 0x04 and g.jm.read32(RAWSTAT) == 1 << 17


def test_reset_idles_every_slot_and_its_interrupts() -> None:
    g = Gpu()
    g.submit(JS1, g.job(BO_VA + 0x100, 0))  # a bad job: FAILED pending
    g.jm.pump()
    g.submit(0x800, _loop(g))  # JS0 busy
    g.jm.pump(5)
    assert g.jm.read32(RAWSTAT) == 1 << 17 and g.jm.irq.level
    g.jm.reset()
    assert g.jm.read32(JS_STATE) == 0 and g.jm.read32(JS1 + HEAD) == 0
    assert (g.jm.read32(RAWSTAT), g.jm.read32(MASK)) == (0, 0) and not g.jm.irq.level
    assert not g.jm.pump()


def test_a_chain_ending_at_a_slice_boundary_is_done_not_stopped() -> None:
    """The last job ran as the slice's budget ran out: the chain has ended, and a soft stop
    arriving before the next slice finds nothing to stop (panfrost must not see STOPPED or
    TERMINATED for a finished job)."""
    g = Gpu()
    jobs = [BO_VA + 0x40 * i for i in range(4)]
    for i, j in enumerate(jobs):
        g.job(j, NULL, jobs[i + 1] if i + 1 < len(jobs) else 0)
    g.submit(JS1, jobs[0])
    assert not g.jm.pump(4)
    g.jm.write32(JS1 + COMMAND, 3)  # HARD_STOP
    assert not g.jm.pump(4)
    assert g.jm.read32(RAWSTAT) == 1 << 1 and g.jm.read32(JS1 + STATUS) == 1


def test_read_only_slot_registers_ignore_writes() -> None:
    g = Gpu()
    for reg in (HEAD, TAIL, CONFIG, STATUS, 0x1C):  # 0x1C: XAFFINITY
        g.jm.write32(JS1 + reg, 0xFFFF_FFFF)
        assert g.jm.read32(JS1 + reg) == 0, hex(reg)
    assert g.jm.read32(JS1 + COMMAND) == 0  # write-only


def test_an_endless_chain_never_holds_the_event_loop() -> None:
    """On the event loop: register reads are answered while a job loop runs, and the soft stop
    the driver's timeout sends ends it (the FAILED interrupt wakes the waiter)."""

    async def main() -> None:
        failed = asyncio.Event()
        g = Gpu()
        g.jm.irq.on_level = lambda level: failed.set() if level else None
        g.submit(JS1, _loop(g))
        for _ in range(5):
            await asyncio.sleep(0)
            assert g.jm.read32(JS_STATE) == 1 << 1
        assert g.jm.slots[1].jobs_done > 0
        g.jm.write32(JS1 + COMMAND, 2)
        await asyncio.wait_for(failed.wait(), timeout=10)
        assert g.jm.read32(JS1 + STATUS) == 0x03

    asyncio.run(main())


# Codes panfrost's panfrost_exception_name() names (it WARNs on any other JS_STATUS):
# docs/reference/mali-g52-jm.md section 3.4.
PANFROST_NAMED = (
    {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x08, 0x40, 0x41, 0x42, 0x43, 0x44, 0x48}
    | set(range(0x50, 0x57)) | {0x58, 0x59, 0x5A, 0x5B, 0x60, 0x61, 0x7F, 0x80, 0x88, 0x89, 0x8A}
    | set(range(0xC0, 0xC5)) | {0xC7} | set(range(0xC8, 0xCC)) | set(range(0xD0, 0xD4))
    | set(range(0xD8, 0xDC)) | set(range(0xE0, 0xF0))
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage=st.binary(min_size=0x200, max_size=0x200),
       ops=st.lists(st.tuples(st.sampled_from(["w", "r", "pump", "jc"]),
                              st.integers(0, 0xFFF), st.integers(0, 0xFFFF_FFFF)),
                    max_size=30))
def test_garbage_chains_and_registers_never_raise(garbage: bytes, ops: list) -> None:
    """Hostile job memory and register writes: never an exception or an endless pump; only
    DONE/FAILED bits of present slots are raised; every JS_STATUS is a code panfrost names."""
    g = Gpu()
    g.ram.buf[g.off(BO_VA):g.off(BO_VA) + len(garbage)] = garbage
    for op, off, val in ops:
        if op == "w" and off & ~3 != RAWSTAT:  # (software may set RAWSTAT bits: kbase's
            g.jm.write32(off & ~3, val)       # interrupt self-test does)
        elif op == "r":
            g.jm.read32(off & ~3)
        elif op == "jc":  # a chain head somewhere in (or near) the garbage
            g.jm.write32(JS1 + COMMAND_NEXT, 0)
            g.submit(JS1, BO_VA + (val & 0x3C0) if val & 1 else val << 6,
                     CONFIG_G52 | (val >> 8 & 0xF))
        else:
            g.jm.pump(8)
    for _ in range(4):
        g.jm.pump(8)
    assert not g.jm.read32(RAWSTAT) & ~0x0007_0007
    for js in range(3):
        assert g.jm.read32(0x800 + js * 0x80 + STATUS) in PANFROST_NAMED


def test_the_next_registers_read_zero_once_the_slot_takes_them() -> None:
    """kbase decides whether a queued chain was taken by reading HEAD_NEXT after a
    COMMAND_NEXT NOP (non-zero: still queued), so taking the _NEXT set clears it."""
    g = Gpu()
    g.submit(JS1, _loop(g))
    assert (g.jm.read32(JS1 + HEAD_NEXT), g.jm.read32(JS1 + CONFIG_NEXT),
            g.jm.read32(JS1 + AFFINITY_NEXT)) == (0, 0, 0)
    assert g.jm.read32(JS1 + HEAD) == BO_VA
    # while the chain runs JS_STATUS reads ACTIVE (kbase BASE_JD_EVENT_ACTIVE 0x08)
    assert g.jm.pump(10) and g.jm.read32(JS1 + STATUS) == 0x08


def test_a_soft_stopped_chain_has_head_equal_to_tail() -> None:
    """kbase_job_done: "For a soft-stopped job chain js_tail should same as the js_head"."""
    g = Gpu()
    g.submit(JS1, _loop(g))
    assert g.jm.pump(7)
    g.jm.write32(JS1 + COMMAND, 2)  # SOFT_STOP
    assert not g.jm.pump(10)
    assert g.jm.read32(JS1 + STATUS) == 0x03
    assert g.jm.read32(JS1 + HEAD) == g.jm.read32(JS1 + TAIL) != 0


def test_start_with_head_next_zero_fetches_a_job_at_va_zero() -> None:
    """START has no "empty chain": HEAD_NEXT 0 makes the slot fetch a descriptor at VA 0,
    which faults in the MMU (unmapped here) instead of completing DONE with nothing run."""
    g = Gpu()
    g.submit(JS1, 0)
    assert not g.jm.pump()
    assert g.jm.slots[1].stalled is not None and g.jm.slots[1].stalled.va == 0
    assert g.jm.read32(RAWSTAT) == 0 and g.jm.slots[1].jobs_done == 0

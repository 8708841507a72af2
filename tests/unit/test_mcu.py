"""The CSF firmware (MCU) model driven as the panthor 7.2 driver drives it (§2.6, §7, §9.4).

The "driver" is :class:`support.csf_host.Host`: a real MaliGpu + Mmu over SparseRam, the
firmware image loaded and the interface discovered the way panthor does, its blocks declared
from panthor_fw.h (support.panthor_fw), not imported from the model.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from support import panthor_fw as pf
from support.csf_host import (
    JOB_INT_RAWSTAT,
    MCU_CONTROL,
    MCU_STATUS,
    SHARED,
    SYNCOBJ_VA,
    USER_VA,
    Host,
    blocking_program,
    doorbell_off,
    kernel_job,
)


@pytest.fixture
def host() -> Host:
    return Host.booted()


# ---------------------------------------------------------------------------------------------
def test_boot_publishes_control_blocks_the_driver_accepts() -> None:
    h = Host()
    assert h.r(MCU_STATUS) == 0
    h.boot()
    assert h.glb["version"] == 0x01010000  # 1.1.0: classic HALT path
    assert h.glb["group_num"] == 8 and h.csg[0]["stream_num"] == 8
    assert h.cs[0][0]["features"] == 0x0007085F
    assert h.csg[0]["suspend_size"] >= 0x4000
    assert h.shared_size == 0x10000


def test_16_csg_model_uses_a_128k_section() -> None:
    h = Host("g720")
    h.boot()
    assert h.glb["group_num"] == 16 and h.shared_size == 0x20000
    assert h.glb["version"] == 0x03000000


def test_boot_without_as0_is_an_mcu_fault() -> None:
    h = Host(program_as0=False)
    h.w(MCU_CONTROL, 2)
    assert h.r(MCU_STATUS) == 3  # FATAL: "Failed to boot MCU (status=fatal)"
    assert not h.r(JOB_INT_RAWSTAT) & (1 << 31)
    assert h.r(0x2000) & 1  # the MCU's access faulted in AS0 (MMU_INT bit 0)


def test_glb_init_and_ping_are_acked_within_the_doorbell_write(host: Host) -> None:
    gi, go = host.glb["input_va"], host.glb["output_va"]
    assert (host.r32(gi) & 0x48E) == (host.r32(go) & 0x48E)
    assert host.fw.glb["progress_timer"] == 2560000
    assert host.fw.glb["core_en_mask"] == host.gpu.model.shader_present
    host.toggle(gi, go, pf.GLB_PING)
    assert host.r32(gi) & pf.GLB_PING != host.r32(go) & pf.GLB_PING
    host.w(doorbell_off(0), 1)
    assert host.r32(gi) & pf.GLB_PING == host.r32(go) & pf.GLB_PING
    assert host.job_irq() == 1 << 31


def test_glb_acknowledgements_interrupt_only_as_ack_irq_mask_says(host: Host) -> None:
    """GLB_ACK_IRQ_MASK selects which acknowledged requests raise the global interrupt
    (panthor_fw.c sets ALLOC_EN, PING, the timers, IDLE_EN and IDLE): the ack itself is
    written either way, the interrupt only for masked-in bits."""
    gi, go = host.glb["input_va"], host.glb["output_va"]
    host.job_irq()
    host.put(gi, pf.GlbInput, "ack_irq_mask", 0x0400050E & ~pf.GLB_PING)
    host.toggle(gi, go, pf.GLB_PING)
    host.w(doorbell_off(0), 1)
    assert host.r32(gi) & pf.GLB_PING == host.r32(go) & pf.GLB_PING  # acknowledged
    assert host.job_irq() == 0  # silently
    host.put(gi, pf.GlbInput, "ack_irq_mask", 0x0400050E)
    host.toggle(gi, go, pf.GLB_PING)
    host.w(doorbell_off(0), 1)
    assert host.job_irq() == 1 << 31


def test_halt_is_not_acknowledged_through_the_interface(host: Host) -> None:
    """panthor_fw.c: "GLB_HALT doesn't get acked through the FW interface": the MCU halts
    (MCU_STATUS) and GLB_ACK's HALT bit stays as it was, with no global interrupt."""
    gi, go = host.glb["input_va"], host.glb["output_va"]
    host.job_irq()
    host.update(gi, pf.GLB_HALT, pf.GLB_HALT)
    host.w(doorbell_off(0), 1)
    assert host.r(MCU_STATUS) == 2  # HALT
    assert host.r32(go) & pf.GLB_HALT == 0
    assert host.job_irq() == 0


def test_halt_disable_and_fast_resume_keep_host_input(host: Host) -> None:
    gi, go = host.glb["input_va"], host.glb["output_va"]
    host.update(gi, pf.GLB_HALT, pf.GLB_HALT)
    host.w(doorbell_off(0), 1)
    assert host.r(MCU_STATUS) == 2
    host.w(doorbell_off(0), 1)  # a halted MCU ignores doorbells
    host.w(MCU_CONTROL, 0)
    assert host.r(MCU_STATUS) == 0
    # Fast resume: HALT cleared without a doorbell, sections not reloaded.
    host.update(gi, 0, pf.GLB_HALT)
    host.w32(gi + 0x10, 0xABCDE)
    ci = host.csg[3]["input_va"]
    host.w32(ci + 0x50, 0x5A5A)
    before = host.ram.read(host.shared_pa, host.shared_size)
    host.w(MCU_CONTROL, 2)
    assert host.job_irq() & (1 << 31) and host.r(MCU_STATUS) == 1
    assert host.fw.fast_boots == 1
    after = host.ram.read(host.shared_pa, host.shared_size)
    glb_in = slice(gi - SHARED, gi - SHARED + 0x88)  # the whole GLB input block
    assert after[glb_in] == before[glb_in]
    assert host.r32(gi + 0x10) == 0xABCDE and host.r32(ci + 0x50) == 0x5A5A
    assert host.r32(go) & pf.GLB_HALT == 0
    host.parse_ifaces()
    host.toggle(gi, go, pf.GLB_PING)
    host.w(doorbell_off(0), 1)
    assert host.r32(gi) & pf.GLB_PING == host.r32(go) & pf.GLB_PING


def test_job_runs_and_raises_sync_update_then_idle(host: Host) -> None:
    host.start_group(0)
    assert host.csg_acked(0, pf.CSG_STATE_MASK | pf.CSG_ENDPOINT_CONFIG)
    assert host.cs_out("ack") & 7 == pf.CS_STATE_START
    assert host.job_irq() & 1
    ack0 = host.r32(host.csg[0]["output_va"])
    # 24-byte user stream: 0x10800 += 0x2A (reference §9.4)
    for k, wd in enumerate([0x0100000000010800, 0x010200000000002A, 0x3300000200000000]):
        host.ram.write_u64(host.user_pa + 8 * k, wd)
    host.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))
    assert host.fw.sched.pump() >= 1
    assert host.ram.read_u64(host.user_pa + 0x800) == 0x2A
    assert host.ram.read_u64(host.sync_pa) == 1
    assert host.extract() == 128
    ack1 = host.r32(host.csg[0]["output_va"])
    assert (ack0 ^ ack1) & pf.CSG_SYNC_UPDATE
    assert host.job_irq() & 1
    co = host.csg[0]["output_va"]
    assert host.r32(co + 0x18) & 1  # status_state IS_IDLE
    # Second job through the CS doorbell (slot 0 -> doorbell 1).
    host.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))
    assert host.r32(co + 0x18) & 1 == 0
    host.fw.sched.pump()
    assert host.ram.read_u64(host.sync_pa) == 2 and host.extract() == 256
    assert host.ram.read_u64(host.user_pa + 0x800) == 0x54


def test_status_update_reports_a_sync_wait(host: Host) -> None:
    host.start_group(0)
    host.push(blocking_program())
    host.fw.sched.pump()
    ci, co = host.csg[0]["input_va"], host.csg[0]["output_va"]
    host.toggle(ci, co, pf.CSG_STATUS_UPDATE)
    host.ring_csg(0)
    assert host.csg_acked(0, pf.CSG_STATUS_UPDATE)
    assert host.cs_out("status_blocked_reason") == 3
    wait = host.cs_out("status_wait")
    assert wait & (1 << 31) and wait & (1 << 30) and (wait >> 24) & 0xF == 1
    assert host.cs_out("status_wait_sync_ptr") == USER_VA + 0x900
    assert host.extract() == 32  # stopped at the SYNC_WAIT (5th instruction)
    assert host.r32(co + 0x18) & 1  # blocked in a sync wait counts as idle
    # The host satisfies the wait from the CPU and rings the CS doorbell.
    host.ram.write_u64(host.user_pa + 0x900, 1)
    host.w(doorbell_off(1), 1)
    host.fw.sched.pump()
    assert host.ram.read_u32(host.user_pa + 0x800) == 0x1234
    assert host.extract() == 64


def _suspend(host: Host, i: int = 0) -> None:
    host.csg_req(i, pf.CSG_STATE_SUSPEND)
    assert host.csg_acked(i, pf.CSG_STATE_MASK)


def _resume(host: Host, i: int = 0) -> None:
    host.start_group(i, state=pf.CSG_STATE_RESUME)
    assert host.csg_acked(i, pf.CSG_STATE_MASK | pf.CSG_ENDPOINT_CONFIG)


def test_suspend_state_really_travels_through_guest_memory(host: Host) -> None:
    host.start_group(0)
    host.push(blocking_program())
    host.fw.sched.pump()
    _suspend(host)
    buf = host.ram.read(host.suspend_pa[0], host.csg[0]["suspend_size"])
    at = buf.find(b"CSIS")  # the interpreter's state image inside our record
    assert at > 0
    blob_len = struct.unpack_from("<I", buf, at - 4)[0]
    # the registers, then the work in flight: 8 scoreboard + 3 endpoint times, a count
    tail = 4 * (8 + 3) + 2
    r5 = at + blob_len - tail - 4 * 96 + 4 * 5
    assert struct.unpack_from("<I", buf, r5)[0] == 0x1234
    host.ram.write_u32(host.suspend_pa[0] + r5, 0x5678)  # edit the saved register in RAM
    _resume(host)
    host.fw.sched.pump()
    host.ram.write_u64(host.user_pa + 0x900, 1)
    host.w(doorbell_off(1), 1)
    host.fw.sched.pump()
    assert host.ram.read_u32(host.user_pa + 0x800) == 0x5678


def test_resume_with_a_corrupt_suspend_buffer_restarts_from_extract(host: Host) -> None:
    host.start_group(0)
    host.push(blocking_program())
    host.fw.sched.pump()
    _suspend(host)
    host.ram.write(host.suspend_pa[0], b"\xff" * 64)
    _resume(host)
    host.ram.write_u64(host.user_pa + 0x900, 1)
    host.w(doorbell_off(1), 1)
    host.fw.sched.pump()
    # Registers were lost: r5 = 0 (restarted at the SYNC_WAIT with fresh registers,
    # r0:r1 = 0 too, so the SYNC_SET32 targets VA 0, which is unmapped -> stalls).
    assert host.ram.read_u32(host.user_pa + 0x800) == 0


def test_hundred_suspend_resume_cycles(host: Host) -> None:
    host.start_group(0)
    host.push(blocking_program())
    host.fw.sched.pump()
    for _ in range(100):
        host.job_irq()
        _suspend(host)
        assert host.job_irq() & 1
        _resume(host)
        assert host.job_irq() & 1
        host.fw.sched.pump()
        assert host.cs_out("status_blocked_reason") == 3
    host.ram.write_u64(host.user_pa + 0x900, 1)
    host.w(doorbell_off(1), 1)
    host.fw.sched.pump()
    assert host.ram.read_u32(host.user_pa + 0x800) == 0x1234


def test_terminate_discards_the_group(host: Host) -> None:
    host.start_group(0)
    host.csg_req(0, pf.CSG_STATE_TERMINATE)
    assert host.csg_acked(0, pf.CSG_STATE_MASK)
    host.push(kernel_job(USER_VA, 0, SYNCOBJ_VA))
    assert host.fw.sched.pump() == 0
    assert host.extract() == 0


def test_invalid_instruction_is_a_cs_fatal(host: Host) -> None:
    host.start_group(0)
    host.job_irq()
    co = host.csg[0]["output_va"]
    irq_req0 = host.r32(co + 0x0C)
    host.push([0xFF00000000000000])
    host.fw.sched.pump()
    assert host.cs_out("ack") & pf.CS_FATAL
    assert (host.r32(co + 0x0C) ^ irq_req0) == 1  # cs_irq_req bit 0 toggled
    assert host.cs_out("fatal") & 0xFF == 0x49  # CS_INSTR_INVALID
    assert host.job_irq() & 1


def test_a_ring_size_not_a_power_of_two_is_a_cs_config_fault(host: Host) -> None:
    """A stream started with a ring it cannot use fails alone with CS_FATAL CS_CONFIG_FAULT
    (0x40), not CS_UNRECOVERABLE (0x41), on which panthor resets the whole GPU
    (panthor_sched.c cs_slot_process_fatal_event_locked)."""
    put = host.put

    def bad_size(va: int, layout: object, name: str, value: int) -> None:
        put(va, layout, name, 0x1800 if name == "ringbuf_size" else value)  # type: ignore[arg-type]

    host.put = bad_size  # type: ignore[method-assign]
    host.start_group(0)
    host.put = put  # type: ignore[method-assign]
    host.fw.sched.pump()
    assert host.cs_out("ack") & pf.CS_FATAL
    assert host.cs_out("fatal") & 0xFF == 0x40 and host.cs_out("fatal_info") == 0x1800


def test_mcu_fault_on_as0_is_fatal(host: Host) -> None:
    host.start_group(0)
    host.w64(host.csg[0]["input_va"] + 0x40, 0x07F00000)  # suspend buffer not mapped
    host.csg_req(0, pf.CSG_STATE_SUSPEND)
    assert host.r(MCU_STATUS) == 3
    assert host.r(0x2000) & 1


def test_gpu_reset_drops_all_csg_state(host: Host) -> None:
    host.start_group(0)
    host.w(0x30, 0x101)  # GPU_CMD soft reset
    assert host.r(MCU_STATUS) == 0
    host.as_enable(0, host.mcu_vm.root)
    host.as_enable(1, host.user_vm.root)
    host.boot()
    host.push(kernel_job(USER_VA, 0, SYNCOBJ_VA))
    assert host.fw.sched.pump() == 0  # no group resident any more


async def test_scheduler_runs_on_the_event_loop(host: Host) -> None:
    host.start_group(0)
    for k, wd in enumerate([0x0100000000010800, 0x010200000000002A, 0x3300000200000000]):
        host.ram.write_u64(host.user_pa + 8 * k, wd)
    host.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))  # returns at once; work runs later

    async def done() -> None:
        while host.ram.read_u64(host.sync_pa) != 1:
            await asyncio.sleep(0)

    await asyncio.wait_for(done(), 5)
    assert host.extract() == 128
    host.fw.sched.stop()

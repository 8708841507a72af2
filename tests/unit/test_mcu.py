"""The CSF firmware (MCU) model driven as the panthor 7.2 driver drives it (§2.6, §7, §9.4).

A real MaliGpu + Mmu over SparseRam; AS0 (MCU VM) and AS1 (group VM) page tables are written
by a tiny local LPAE writer; the "driver" side reads/writes the shared section through its
CPU mapping (the physical pages), exactly like panthor's kmap.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from qemu_panthor.csf import iface as I
from qemu_panthor.csf.mcu import CsfFirmware
from qemu_panthor.gpu.device import MaliGpu
from qemu_panthor.gpu.models import lookup_model
from qemu_panthor.memory import RamRegion, SparseRam

RAM_BASE = 0x8000_0000
RAM_SIZE = 32 << 20
SHARED = 0x04000000
SUSPEND_VA = 0x04100000
RINGIO_VA = 0x04200000
RING_VA = 0x0100_0000
SYNCOBJ_VA = 0x0200_0000
USER_VA = 0x10000
TRANSCFG_48 = 0x420001C6
MEMATTR = 0x4C4C4C4C_8C4C8F4C
JOB_INT_RAWSTAT, JOB_INT_CLEAR = 0x1000, 0x1004
MCU_CONTROL, MCU_STATUS = 0x700, 0x704


def doorbell_off(i: int) -> int:
    return 0x80000 + i * 0x10000


# -- instruction encodings (reference §8.2/§8.3) ----------------------------------------------
def move48(reg: int, imm: int) -> int:
    return (0x01 << 56) | (reg << 48) | (imm & ((1 << 48) - 1))


def move32(reg: int, imm: int) -> int:
    return (0x02 << 56) | (reg << 48) | (imm & 0xFFFFFFFF)


def sync_wait64_gt(addr_reg: int, data_reg: int) -> int:
    return (0x35 << 56) | (addr_reg << 40) | (data_reg << 32) | (1 << 28)


def sync_set32(addr_reg: int, data_reg: int) -> int:
    return (0x26 << 56) | (addr_reg << 40) | (data_reg << 32)


def kernel_job(stream: int, size: int, syncobj: int) -> list[int]:
    """The 7.2 ring sequence of §8.2 (no profiling): 11 instructions padded to 16."""
    seq = [0x025E000000000000, 0x24005E0000000233, move48(92, stream), move32(94, size),
           0x0300000000010000, 0x20005C5E00000000, move48(92, syncobj), move48(94, 1),
           0x0300000000FF0000, 0x33005C5E00000001, 0x2F00000000000000]
    return seq + [0] * (16 - len(seq))


# -- a tiny LPAE stage-1 writer (4 KiB pages, 48-bit VA) --------------------------------------
class Tables:
    def __init__(self, ram: SparseRam, alloc: Bump) -> None:
        self.ram, self.alloc = ram, alloc
        self.root = alloc.page()

    def map(self, va: int, pa: int, size: int, *, ro: bool = False, xn: bool = True) -> None:
        for off in range(0, size, 0x1000):
            table = self.root
            v = va + off
            for lvl in range(3):
                idx = (v >> (39 - 9 * lvl)) & 0x1FF
                d = self.ram.read_u64(table + 8 * idx)
                if not d & 1:
                    d = self.alloc.page() | 0b11
                    self.ram.write_u64(table + 8 * idx, d)
                table = d & 0xFFFFFFFFF000
            pte = ((pa + off) | 0b11 | (1 << 10) | (1 << 11) | (1 << 6) | (2 << 8)
                   | ((1 << 7) if ro else 0) | ((3 << 53) if xn else 0))
            self.ram.write_u64(table + 8 * ((v >> 12) & 0x1FF), pte)


class Bump:
    def __init__(self, base: int) -> None:
        self.next = base

    def page(self, n: int = 1) -> int:
        pa = self.next
        self.next += n * 0x1000
        return pa


# -- the "driver" ---------------------------------------------------------------------------------
class Host:
    def __init__(self, model: str = "g610", *, program_as0: bool = True) -> None:
        self.ram = SparseRam()
        self.ram.add(RamRegion(RAM_BASE, bytearray(RAM_SIZE)))
        self.irqs: list[tuple[str, bool]] = []
        self.gpu = MaliGpu(lookup_model(model), self.ram, on_irq=lambda n, lv: None)
        self.fw = CsfFirmware.attach(self.gpu)
        self.alloc = Bump(RAM_BASE + 0x10_0000)
        self.mcu_vm = Tables(self.ram, self.alloc)
        self.user_vm = Tables(self.ram, self.alloc)
        lay = self.fw.layout
        self.shared_size = lay.section_size
        self.shared_pa = self.alloc.page(self.shared_size // 0x1000)
        self.mcu_vm.map(SHARED, self.shared_pa, self.shared_size)
        code_pa = self.alloc.page(16)
        self.mcu_vm.map(0, code_pa, 0x10000, ro=True, xn=False)
        n = self.fw.config.group_num
        ssz = self.fw.config.suspend_size
        self.suspend_pa = []
        for i in range(n):
            pa = self.alloc.page(ssz // 0x1000)
            self.mcu_vm.map(SUSPEND_VA + i * 0x10000, pa, ssz)
            self.suspend_pa.append(pa)
        self.ringio_pa = self.alloc.page(2)
        self.mcu_vm.map(RINGIO_VA, self.ringio_pa, 0x2000)
        self.ring_pa = self.alloc.page()
        self.user_vm.map(RING_VA, self.ring_pa, 0x1000, xn=False)
        self.sync_pa = self.alloc.page()
        self.user_vm.map(SYNCOBJ_VA, self.sync_pa, 0x1000)
        self.user_pa = self.alloc.page()
        self.user_vm.map(USER_VA, self.user_pa, 0x1000, xn=False)
        self.insert = 0
        if program_as0:
            self.as_enable(0, self.mcu_vm.root)
        self.as_enable(1, self.user_vm.root)

    # registers
    def w(self, off: int, v: int, size: int = 4) -> None:
        self.gpu.mmio_write(off, size, v)

    def r(self, off: int) -> int:
        return self.gpu.mmio_read(off, 4)

    def as_enable(self, n: int, root: int) -> None:
        base = 0x2400 + n * 0x40
        self.w(base + 0x00, root, 8)
        self.w(base + 0x08, MEMATTR, 8)
        self.w(base + 0x30, TRANSCFG_48, 8)
        self.w(base + 0x18, 1)

    def job_irq(self) -> int:
        """Read and clear JOB_INT (what the handler does)."""
        v = self.r(JOB_INT_RAWSTAT)
        self.w(JOB_INT_CLEAR, v)
        return v

    # shared section through the CPU mapping
    def cpu(self, va: int) -> int:
        assert SHARED <= va < SHARED + self.shared_size, hex(va)
        return self.shared_pa + va - SHARED

    def r32(self, va: int) -> int:
        return self.ram.read_u32(self.cpu(va))

    def w32(self, va: int, v: int) -> None:
        self.ram.write_u32(self.cpu(va), v)

    def w64(self, va: int, v: int) -> None:
        self.ram.write_u64(self.cpu(va), v)

    def toggle(self, in_va: int, out_va: int, mask: int) -> None:
        req, ack = self.r32(in_va), self.r32(out_va)
        self.w32(in_va, ((ack ^ mask) & mask) | (req & ~mask))

    def update(self, in_va: int, value: int, mask: int) -> None:
        self.w32(in_va, (self.r32(in_va) & ~mask) | (value & mask))

    # -- panthor_fw_init_ifaces -----------------------------------------------------------------
    def in_section(self, va: int, size: int) -> bool:
        return SHARED <= va and va + size <= SHARED + self.shared_size

    def parse_ifaces(self) -> dict:
        ctrl = I.GLB_CONTROL.unpack(self.ram.read(self.shared_pa, I.GLB_CONTROL.size))
        assert ctrl["version"] != 0, "Firmware may have failed to boot"
        assert self.in_section(ctrl["input_va"], I.GLB_INPUT.size)
        assert self.in_section(ctrl["output_va"], I.GLB_OUTPUT.size)
        assert 3 <= ctrl["group_num"] <= 31
        self.glb = ctrl
        self.csg: list[dict] = []
        self.cs: list[list[dict]] = []
        for i in range(ctrl["group_num"]):
            off = 0x1000 + i * ctrl["group_stride"]
            assert off + I.CSG_CONTROL.size < self.shared_size
            c = I.CSG_CONTROL.unpack(self.ram.read(self.shared_pa + off, I.CSG_CONTROL.size))
            assert 8 <= c["stream_num"] <= 32
            assert self.in_section(c["input_va"], I.CSG_INPUT.size)
            assert self.in_section(c["output_va"], I.CSG_OUTPUT.size)
            assert c["suspend_size"] > 0 and c["protm_suspend_size"] > 0
            if i:
                for k in ("features", "suspend_size", "protm_suspend_size", "stream_num"):
                    assert c[k] == self.csg[0][k], "Expecting identical CSG slots"
            streams = []
            for j in range(c["stream_num"]):
                soff = off + 0x40 + j * c["stream_stride"]
                s = I.CS_CONTROL.unpack(self.ram.read(self.shared_pa + soff, I.CS_CONTROL.size))
                assert self.in_section(s["input_va"], I.CS_INPUT.size)
                assert self.in_section(s["output_va"], I.CS_OUTPUT.size)
                if i or j:
                    assert s["features"] == self.cs[0][0]["features"] if i else (
                        s["features"] == streams[0]["features"])
                streams.append(s)
            self.csg.append(c)
            self.cs.append(streams)
        # every block distinct
        vas = [ctrl["input_va"], ctrl["output_va"]]
        vas += [c[k] for c in self.csg for k in ("input_va", "output_va")]
        vas += [s[k] for row in self.cs for s in row for k in ("input_va", "output_va")]
        assert len(set(vas)) == len(vas)
        return ctrl

    def boot(self) -> None:
        self.w(JOB_INT_CLEAR, 0xFFFFFFFF)
        self.w(0x1008, 0xFFFFFFFF)
        self.w(MCU_CONTROL, 2)
        assert self.job_irq() & (1 << 31)
        assert self.r(MCU_STATUS) == 1
        self.parse_ifaces()

    def glb_init(self) -> None:
        gi = self.glb["input_va"]
        self.w64(gi + 0x18, self.gpu.model.shader_present)
        self.w32(gi + 0x14, 235)
        self.w32(gi + 0x10, 2560000)
        self.w32(gi + 0x80, 19)
        self.w32(gi + 0x04, 0x0400050E)
        self.update(gi, I.GLB_IDLE_EN | I.GLB_COUNTER_EN, I.GLB_IDLE_EN | I.GLB_COUNTER_EN)
        self.toggle(gi, self.glb["output_va"], 0xE)
        self.w(doorbell_off(0), 1)

    def ring_csg(self, i: int) -> None:
        self.toggle(self.glb["input_va"] + 8, self.glb["output_va"] + 8, 1 << i)
        self.w(doorbell_off(0), 1)

    # -- group programming (tick_ctx_apply) -------------------------------------------------------
    def start_group(self, i: int = 0, *, state: int = I.CSG_STATE_START, prio: int = 15,
                    as_nr: int = 1) -> None:
        c = self.csg[i]
        s = self.cs[i][0]
        si = s["input_va"]
        self.ram.write_u64(self.ringio_pa + 8, self.ram.read_u64(self.ringio_pa + 0x1000))
        self.w64(si + 0x10, RING_VA)
        self.w32(si + 0x18, 0x1000)
        self.w64(si + 0x30, RINGIO_VA)
        self.w64(si + 0x38, RINGIO_VA + 0x1000)
        self.w32(si + 0x04, 0 | ((i + 1) << 8))
        self.w32(si + 0x0C, 0xFFFFFFFF)
        self.update(si, I.CS_STATE_START | I.CS_IDLE_SYNC_WAIT | I.CS_IDLE_EMPTY, 0x507)
        ci = c["input_va"]
        self.w32(ci + 0x34, (prio << 28) | (1 << 16) | (4 << 8) | 4)
        self.w32(ci + 0x50, as_nr)  # AS of the group's VM
        self.w64(ci + 0x40, SUSPEND_VA + i * 0x10000)
        self.w64(ci + 0x48, 0)
        self.w32(ci + 0x04, 0xFFFFFFFF)
        self.toggle(ci + 8, c["output_va"] + 8, 1)
        self.update(ci, state, I.CSG_STATE_MASK)
        self.toggle(ci, c["output_va"], I.CSG_ENDPOINT_CONFIG)
        self.ring_csg(i)

    def csg_req(self, i: int, state: int) -> None:
        self.update(self.csg[i]["input_va"], state, I.CSG_STATE_MASK)
        self.ring_csg(i)

    def csg_acked(self, i: int, mask: int) -> bool:
        req = self.r32(self.csg[i]["input_va"])
        ack = self.r32(self.csg[i]["output_va"])
        return (req & mask) == (ack & mask)

    def push(self, words: list[int], doorbell: int | None = 1) -> None:
        for k, wd in enumerate(words):
            self.ram.write_u64(self.ring_pa + ((self.insert + 8 * k) & 0xFFF), wd)
        self.insert += 8 * len(words)
        self.ram.write_u64(self.ringio_pa, self.insert)
        if doorbell is not None:
            self.w(doorbell_off(doorbell), 1)

    def extract(self) -> int:
        return self.ram.read_u64(self.ringio_pa + 0x1000)

    def cs_out(self, field: str, i: int = 0, j: int = 0) -> int:
        return I.CS_OUTPUT.get(self.ram.read(self.cpu(self.cs[i][j]["output_va"]),
                                             I.CS_OUTPUT.size), field)


@pytest.fixture
def host() -> Host:
    h = Host()
    h.boot()
    h.glb_init()
    h.job_irq()
    return h


# ---------------------------------------------------------------------------------------------
def test_boot_publishes_control_blocks_the_driver_accepts() -> None:
    h = Host()
    assert h.r(MCU_STATUS) == 0
    h.boot()
    assert h.glb["version"] == 0x01010000  # 1.1.0: classic HALT path
    assert h.glb["group_num"] == 8 and h.csg[0]["stream_num"] == 8
    assert h.cs[0][0]["features"] == 0x0007085F == h.gpu.model.cs_features
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
    host.toggle(gi, go, I.GLB_PING)
    assert host.r32(gi) & I.GLB_PING != host.r32(go) & I.GLB_PING
    host.w(doorbell_off(0), 1)
    assert host.r32(gi) & I.GLB_PING == host.r32(go) & I.GLB_PING
    assert host.job_irq() == 1 << 31


def test_halt_disable_and_fast_resume_keep_host_input(host: Host) -> None:
    gi, go = host.glb["input_va"], host.glb["output_va"]
    host.update(gi, I.GLB_HALT, I.GLB_HALT)
    host.w(doorbell_off(0), 1)
    assert host.r(MCU_STATUS) == 2
    host.w(doorbell_off(0), 1)  # a halted MCU ignores doorbells
    host.w(MCU_CONTROL, 0)
    assert host.r(MCU_STATUS) == 0
    # Fast resume: HALT cleared without a doorbell, sections not reloaded.
    host.update(gi, 0, I.GLB_HALT)
    host.w32(gi + 0x10, 0xABCDE)
    ci = host.csg[3]["input_va"]
    host.w32(ci + 0x50, 0x5A5A)
    before = host.ram.read(host.shared_pa, host.shared_size)
    host.w(MCU_CONTROL, 2)
    assert host.job_irq() & (1 << 31) and host.r(MCU_STATUS) == 1
    assert host.fw.fast_boots == 1
    after = host.ram.read(host.shared_pa, host.shared_size)
    lay = host.fw.layout
    assert after[lay.GLB_INPUT_OFF:lay.GLB_INPUT_OFF + 0x88] == \
        before[lay.GLB_INPUT_OFF:lay.GLB_INPUT_OFF + 0x88]
    assert host.r32(gi + 0x10) == 0xABCDE and host.r32(ci + 0x50) == 0x5A5A
    assert host.r32(go) & I.GLB_HALT == 0
    host.parse_ifaces()
    host.toggle(gi, go, I.GLB_PING)
    host.w(doorbell_off(0), 1)
    assert host.r32(gi) & I.GLB_PING == host.r32(go) & I.GLB_PING


def test_job_runs_and_raises_sync_update_then_idle(host: Host) -> None:
    host.start_group(0)
    assert host.csg_acked(0, I.CSG_STATE_MASK | I.CSG_ENDPOINT_CONFIG)
    assert host.cs_out("ack") & 7 == I.CS_STATE_START
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
    assert (ack0 ^ ack1) & I.CSG_SYNC_UPDATE
    assert host.job_irq() & 1
    co = host.csg[0]["output_va"]
    assert host.r32(co + 0x18) & 1  # status_state IS_IDLE
    # Second job through the CS doorbell (slot 0 -> doorbell 1).
    host.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))
    assert host.r32(co + 0x18) & 1 == 0
    host.fw.sched.pump()
    assert host.ram.read_u64(host.sync_pa) == 2 and host.extract() == 256
    assert host.ram.read_u64(host.user_pa + 0x800) == 0x54


def _blocking_program(host: Host) -> list[int]:
    return [move48(0, USER_VA + 0x800), move32(5, 0x1234), move48(2, USER_VA + 0x900),
            move48(6, 0), sync_wait64_gt(2, 6), sync_set32(0, 5), 0, 0]


def test_status_update_reports_a_sync_wait(host: Host) -> None:
    host.start_group(0)
    host.push(_blocking_program(host))
    host.fw.sched.pump()
    ci, co = host.csg[0]["input_va"], host.csg[0]["output_va"]
    host.toggle(ci, co, I.CSG_STATUS_UPDATE)
    host.ring_csg(0)
    assert host.csg_acked(0, I.CSG_STATUS_UPDATE)
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
    host.csg_req(i, I.CSG_STATE_SUSPEND)
    assert host.csg_acked(i, I.CSG_STATE_MASK)


def _resume(host: Host, i: int = 0) -> None:
    host.start_group(i, state=I.CSG_STATE_RESUME)
    assert host.csg_acked(i, I.CSG_STATE_MASK | I.CSG_ENDPOINT_CONFIG)


def test_suspend_state_really_travels_through_guest_memory(host: Host) -> None:
    host.start_group(0)
    host.push(_blocking_program(host))
    host.fw.sched.pump()
    _suspend(host)
    buf = host.ram.read(host.suspend_pa[0], host.fw.config.suspend_size)
    at = buf.find(b"CSIS")  # the interpreter's state image inside our record
    assert at > 0
    blob_len = struct.unpack_from("<I", buf, at - 4)[0]
    r5 = at + blob_len - 4 * 96 + 4 * 5
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
    host.push(_blocking_program(host))
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
    host.push(_blocking_program(host))
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
    host.csg_req(0, I.CSG_STATE_TERMINATE)
    assert host.csg_acked(0, I.CSG_STATE_MASK)
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
    assert host.cs_out("ack") & I.CS_FATAL
    assert (host.r32(co + 0x0C) ^ irq_req0) == 1  # cs_irq_req bit 0 toggled
    assert host.cs_out("fatal") & 0xFF == 0x49  # CS_INSTR_INVALID
    assert host.job_irq() & 1


def test_mcu_fault_on_as0_is_fatal(host: Host) -> None:
    host.start_group(0)
    host.w64(host.csg[0]["input_va"] + 0x40, 0x07F00000)  # suspend buffer not mapped
    host.csg_req(0, I.CSG_STATE_SUSPEND)
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

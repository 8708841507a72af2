"""A simulated panthor driving the CSF firmware model (docs/reference/csf-interface.md).

A real MaliGpu + Mmu over SparseRam, with the firmware model attached. The "driver" here
loads the firmware image the way panthor_fw.c does (every IFACE section mapped in the MCU VM,
AS0, at its VA; the section at 0x04000000 is the shared one), boots the MCU, then discovers
the interface blocks from the GLB/CSG/CS control blocks the firmware published
(panthor_fw_init_ifaces). It reads and writes them through its CPU mapping of the shared
section (the physical pages), as panthor does through its kernel mapping.

Everything it knows about the interface comes from :mod:`support.panthor_fw` (declared from
panthor_fw.h) and register offsets from docs/reference/gpu-registers.md and mmu.md, never from
``qemu_panthor.csf``'s own declarations (section sizes, block placement, bits). The firmware
model itself is used through its public surface only: ``CsfFirmware.attach``, MCU_CONTROL,
doorbells and resets through MMIO; the tests add ``fw.sched.pump()``.
"""

from __future__ import annotations

from ctypes import sizeof
from dataclasses import dataclass

from qemu_panthor.csf.fwimage import build_image
from qemu_panthor.csf.mcu import CsfFirmware
from qemu_panthor.gpu.device import MaliGpu
from qemu_panthor.gpu.models import lookup_model
from qemu_panthor.memory import RamRegion, SparseRam
from support import cs_asm as A
from support import panthor_fw as pf
from support.panthor_fw import CsgInput, CsgOutput, CsInput, CsOutput, GlbInput, GlbOutput

RAM_BASE = 0x8000_0000
RAM_SIZE = 32 << 20
SHARED = pf.CSF_MCU_SHARED_REGION_START
SUSPEND_VA = 0x04100000  # + i * SUSPEND_STRIDE: CSG i's suspend buffer (MCU VM)
SUSPEND_STRIDE = 0x10000
RINGIO_VA = 0x04200000  # the ring input page, output page at +0x1000 (MCU VM)
RING_VA = 0x0100_0000  # the ring buffer (group VM)
SYNCOBJ_VA = 0x0200_0000
USER_VA = 0x10000  # a page for user streams and their data (group VM)
TRANSCFG_48 = 0x420001C6  # §5.1: AARCH64_4K, 48-bit VA, PTW WB, RA
MEMATTR = 0x4C4C4C4C_8C4C8F4C  # §5.1 non-coherent AS_MEMATTR
# §2.1 / §3.1 registers
JOB_INT_RAWSTAT, JOB_INT_CLEAR, JOB_INT_MASK = 0x1000, 0x1004, 0x1008
JOB_INT_GLOBAL_IF = 1 << 31
MCU_CONTROL, MCU_STATUS = 0x700, 0x704
MCU_CONTROL_AUTO = 2
MCU_STATUS_DISABLED, MCU_STATUS_ENABLED, MCU_STATUS_HALT, MCU_STATUS_FATAL = 0, 1, 2, 3
MMU_INT_RAWSTAT = 0x2000


def doorbell_off(i: int) -> int:
    """CSF_DOORBELL(i) (§3.2)."""
    return 0x80000 + i * 0x10000


def as_base(n: int) -> int:
    """AS(n) registers (§4.1)."""
    return 0x2400 + n * 0x40


# -- instruction encodings (reference §8.2/§8.3) ----------------------------------------------
move48 = A.move48
move32 = A.move32
sync_set32 = A.sync_set32


def sync_wait64_gt(addr_reg: int, data_reg: int) -> int:
    return A.sync_wait64(addr_reg, data_reg, A.GREATER)


def kernel_job(stream: int, size: int, syncobj: int) -> list[int]:
    """The 7.2 ring sequence of §8.2 (no profiling): 11 instructions padded to 16."""
    seq = [0x025E000000000000, 0x24005E0000000233, move48(92, stream), move32(94, size),
           0x0300000000010000, 0x20005C5E00000000, move48(92, syncobj), move48(94, 1),
           0x0300000000FF0000, 0x33005C5E00000001, 0x2F00000000000000]
    return seq + [0] * (16 - len(seq))


def blocking_program() -> list[int]:
    """[USER_VA+0x800].u32 := 0x1234 once [USER_VA+0x900].u64 > 0: blocks in its SYNC_WAIT64
    (5th instruction) until the host writes the sync object."""
    return [move48(0, USER_VA + 0x800), move32(5, 0x1234), move48(2, USER_VA + 0x900),
            move48(6, 0), sync_wait64_gt(2, 6), sync_set32(0, 5), 0, 0]


# -- a tiny LPAE stage-1 writer (4 KiB pages, 48-bit VA) --------------------------------------
class Bump:
    def __init__(self, base: int) -> None:
        self.next = base

    def page(self, n: int = 1) -> int:
        pa = self.next
        self.next += n * 0x1000
        return pa


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


@dataclass
class Ring:
    """A ring buffer (group VM) and its input/output pages (MCU VM), as panthor allocates
    per queue: input page = insert (+8: extract), output page = extract."""

    va: int
    pa: int
    io_va: int
    io_pa: int
    insert: int = 0


# -- the "driver" ---------------------------------------------------------------------------------
class Host:
    def __init__(self, model: str = "g610", *, program_as0: bool = True,
                 image: bytes | None = None, work_scale: float = 1.0) -> None:
        self.ram = SparseRam()
        self.ram.add(RamRegion(RAM_BASE, bytearray(RAM_SIZE)))
        self.gpu = MaliGpu(lookup_model(model), self.ram, on_irq=lambda n, lv: None)
        #: the firmware's clock for work in flight: the test advances it
        self.now = 1000.0
        self.fw = CsfFirmware.attach(self.gpu, work_scale=work_scale, clock=lambda: self.now)
        self.alloc = Bump(RAM_BASE + 0x10_0000)
        self.mcu_vm = Tables(self.ram, self.alloc)
        self.user_vm = Tables(self.ram, self.alloc)
        self.load_firmware(build_image(model=self.gpu.model) if image is None else image)
        self.suspend_pa: list[int] = []  # per CSG, once the firmware said how big (boot)
        self.ringio_pa = self.alloc.page(2)
        self.mcu_vm.map(RINGIO_VA, self.ringio_pa, 0x2000)
        self.ring_pa = self.alloc.page()
        self.user_vm.map(RING_VA, self.ring_pa, 0x1000, xn=False)
        self.sync_pa = self.alloc.page()
        self.user_vm.map(SYNCOBJ_VA, self.sync_pa, 0x1000)
        self.user_pa = self.alloc.page()
        self.user_vm.map(USER_VA, self.user_pa, 0x1000, xn=False)
        self.insert = 0
        self.rings: list[Ring] = []
        if program_as0:
            self.as_enable(0, self.mcu_vm.root)
        self.as_enable(1, self.user_vm.root)

    @classmethod
    def booted(cls, model: str = "g610", *, work_scale: float = 1.0) -> Host:
        """Booted, GLB initialised, JOB_INT handled: where panthor is after probe."""
        h = cls(model, work_scale=work_scale)
        h.boot()
        h.glb_init()
        h.job_irq()
        return h

    def load_firmware(self, image: bytes) -> None:
        """panthor_fw_load_section_entry: each section gets pages of its VA size, its data
        copied (the rest zero), mapped in the MCU VM at its VA (read-only without WR, NOEXEC
        without EX); the one at 0x04000000 is the shared section."""
        self.shared_pa = self.shared_size = 0
        for sec in pf.fw_sections(image):
            pa = self.alloc.page(sec.size // 0x1000)
            self.ram.write(pa, image[sec.data_start:sec.data_end])
            self.mcu_vm.map(sec.va_start, pa, sec.size, ro=not sec.writable,
                            xn=not sec.executable)
            if sec.va_start == SHARED:
                self.shared_pa, self.shared_size = pa, sec.size
        assert self.shared_size, "Shared interface region not found"

    # registers
    def w(self, off: int, v: int, size: int = 4) -> None:
        self.gpu.mmio_write(off, size, v)

    def r(self, off: int) -> int:
        return self.gpu.mmio_read(off, 4)

    def as_enable(self, n: int, root: int) -> None:
        base = as_base(n)
        self.w(base + 0x00, root, 8)  # TRANSTAB
        self.w(base + 0x08, MEMATTR, 8)
        self.w(base + 0x30, TRANSCFG_48, 8)
        self.w(base + 0x18, 1)  # COMMAND UPDATE

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

    def put(self, block_va: int, st: type[pf.Iface], field: str, v: int) -> None:
        """Write field ``field`` of the ``st`` block at ``block_va``."""
        (self.w64 if st.size_of(field) == 8 else self.w32)(block_va + st.off(field), v)

    def toggle(self, in_va: int, out_va: int, mask: int) -> None:
        """panthor_fw_toggle_reqs."""
        req, ack = self.r32(in_va), self.r32(out_va)
        self.w32(in_va, ((ack ^ mask) & mask) | (req & ~mask))

    def update(self, in_va: int, value: int, mask: int) -> None:
        """panthor_fw_update_reqs."""
        self.w32(in_va, (self.r32(in_va) & ~mask) | (value & mask))

    # -- panthor_fw_init_ifaces -----------------------------------------------------------------
    def in_section(self, va: int, size: int) -> bool:
        return SHARED <= va and va + size <= SHARED + self.shared_size

    def _control(self, off: int, st: type[pf.Iface]) -> dict[str, int]:
        assert off + sizeof(st) <= self.shared_size
        return st.unpack(self.ram.read(self.shared_pa + off, sizeof(st)))

    def parse_ifaces(self) -> dict[str, int]:
        ctrl = self._control(0, pf.GlbControl)
        assert ctrl["version"] != 0, "Firmware may have failed to boot"
        assert self.in_section(ctrl["input_va"], sizeof(GlbInput))
        assert self.in_section(ctrl["output_va"], sizeof(GlbOutput))
        assert pf.MIN_CSGS <= ctrl["group_num"] <= pf.MAX_CSGS
        self.glb = ctrl
        self.csg: list[dict[str, int]] = []
        self.cs: list[list[dict[str, int]]] = []
        for i in range(ctrl["group_num"]):
            off = pf.CSF_GROUP_CONTROL_OFFSET + i * ctrl["group_stride"]
            assert off + sizeof(pf.CsgControl) < self.shared_size
            c = self._control(off, pf.CsgControl)
            assert pf.MIN_CS_PER_CSG <= c["stream_num"] <= pf.MAX_CS_PER_CSG
            assert self.in_section(c["input_va"], sizeof(CsgInput))
            assert self.in_section(c["output_va"], sizeof(CsgOutput))
            assert c["suspend_size"] > 0 and c["protm_suspend_size"] > 0
            if i:
                for k in ("features", "suspend_size", "protm_suspend_size", "stream_num"):
                    assert c[k] == self.csg[0][k], "Expecting identical CSG slots"
            streams: list[dict[str, int]] = []
            for j in range(c["stream_num"]):
                soff = off + pf.CSF_STREAM_CONTROL_OFFSET + j * c["stream_stride"]
                s = self._control(soff, pf.CsControl)
                assert self.in_section(s["input_va"], sizeof(CsInput))
                assert self.in_section(s["output_va"], sizeof(CsOutput))
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
        self._alloc_suspend_buffers()
        return ctrl

    def _alloc_suspend_buffers(self) -> None:
        """panthor_fw_alloc_suspend_buf_mem: one buffer of CSG suspend_size per slot (done
        once; the sizes do not change across reboots)."""
        if self.suspend_pa:
            return
        size = (self.csg[0]["suspend_size"] + 0xFFF) & ~0xFFF
        assert size <= SUSPEND_STRIDE
        for i in range(len(self.csg)):
            pa = self.alloc.page(size // 0x1000)
            self.mcu_vm.map(SUSPEND_VA + i * SUSPEND_STRIDE, pa, size)
            self.suspend_pa.append(pa)

    def boot(self) -> None:
        self.w(JOB_INT_CLEAR, 0xFFFFFFFF)
        self.w(JOB_INT_MASK, 0xFFFFFFFF)
        self.w(MCU_CONTROL, MCU_CONTROL_AUTO)
        assert self.job_irq() & JOB_INT_GLOBAL_IF
        assert self.r(MCU_STATUS) == MCU_STATUS_ENABLED
        self.parse_ifaces()

    def glb_init(self) -> None:
        """panthor_fw_init_global_iface (§7.2), 24 MHz timer values."""
        gi = self.glb["input_va"]
        self.put(gi, GlbInput, "core_en_mask", self.gpu.model.shader_present)
        self.put(gi, GlbInput, "poweroff_timer", 235)
        self.put(gi, GlbInput, "progress_timer", 2560000)
        self.put(gi, GlbInput, "idle_timer", 19)
        self.put(gi, GlbInput, "ack_irq_mask", 0x0400050E)
        self.update(gi, pf.GLB_IDLE_EN | pf.GLB_COUNTER_EN, pf.GLB_IDLE_EN | pf.GLB_COUNTER_EN)
        self.toggle(gi, self.glb["output_va"],
                    pf.GLB_CFG_PROGRESS_TIMER | pf.GLB_CFG_ALLOC_EN | pf.GLB_CFG_POWEROFF_TIMER)
        self.w(doorbell_off(0), 1)

    def ring_csg(self, i: int) -> None:
        """panthor_fw_ring_csg_doorbells: toggle GLB doorbell_req bit i, ring doorbell 0."""
        self.toggle(self.glb["input_va"] + GlbInput.off("doorbell_req"),
                    self.glb["output_va"] + GlbOutput.off("doorbell_ack"), 1 << i)
        self.w(doorbell_off(0), 1)

    # -- group programming (tick_ctx_apply) -------------------------------------------------------
    def add_ring(self) -> Ring:
        """A ring of its own (for a second group running beside the first)."""
        k = len(self.rings) + 1
        ring = Ring(RING_VA + k * 0x10000, self.alloc.page(), RINGIO_VA + k * 0x2000,
                    self.alloc.page(2))
        self.user_vm.map(ring.va, ring.pa, 0x1000, xn=False)
        self.mcu_vm.map(ring.io_va, ring.io_pa, 0x2000)
        self.rings.append(ring)
        return ring

    def start_group(self, i: int = 0, *, state: int = pf.CSG_STATE_START, prio: int = 15,
                    as_nr: int = 1, ring: Ring | None = None) -> None:
        """Program CSG i's stream 0 on ``ring`` (default: the host's first ring) and start it."""
        c = self.csg[i]
        si = self.cs[i][0]["input_va"]
        ring_va, io_va, io_pa = ((ring.va, ring.io_va, ring.io_pa) if ring is not None
                                 else (RING_VA, RINGIO_VA, self.ringio_pa))
        # the ring's input extract := output extract before a (re)start
        self.ram.write_u64(io_pa + 8, self.ram.read_u64(io_pa + 0x1000))
        self.put(si, CsInput, "ringbuf_base", ring_va)
        self.put(si, CsInput, "ringbuf_size", 0x1000)
        self.put(si, CsInput, "ringbuf_input", io_va)
        self.put(si, CsInput, "ringbuf_output", io_va + 0x1000)
        self.put(si, CsInput, "config", 0 | pf.cs_config_doorbell(i + 1))
        self.put(si, CsInput, "ack_irq_mask", 0xFFFFFFFF)
        self.update(si, pf.CS_STATE_START | pf.CS_IDLE_SYNC_WAIT | pf.CS_IDLE_EMPTY,
                    pf.CS_STATE_MASK | pf.CS_IDLE_SYNC_WAIT | pf.CS_IDLE_EMPTY)
        ci = c["input_va"]
        self.put(ci, CsgInput, "endpoint_req",
                 pf.csg_ep_req_priority(prio) | (1 << 16) | (4 << 8) | 4)
        self.put(ci, CsgInput, "config", as_nr)  # AS of the group's VM
        self.put(ci, CsgInput, "suspend_buf", SUSPEND_VA + i * SUSPEND_STRIDE)
        self.put(ci, CsgInput, "protm_suspend_buf", 0)
        self.put(ci, CsgInput, "ack_irq_mask", 0xFFFFFFFF)
        self.toggle(ci + CsgInput.off("doorbell_req"),
                    c["output_va"] + CsgOutput.off("doorbell_ack"), 1)
        self.update(ci, state, pf.CSG_STATE_MASK)
        self.toggle(ci, c["output_va"], pf.CSG_ENDPOINT_CONFIG)
        self.ring_csg(i)

    def csg_req(self, i: int, state: int) -> None:
        self.update(self.csg[i]["input_va"], state, pf.CSG_STATE_MASK)
        self.ring_csg(i)

    def csg_acked(self, i: int, mask: int) -> bool:
        req = self.r32(self.csg[i]["input_va"])
        ack = self.r32(self.csg[i]["output_va"])
        return (req & mask) == (ack & mask)

    def push(self, words: list[int], doorbell: int | None = 1, ring: Ring | None = None) -> None:
        if ring is not None:
            for k, wd in enumerate(words):
                self.ram.write_u64(ring.pa + ((ring.insert + 8 * k) & 0xFFF), wd)
            ring.insert += 8 * len(words)
            self.ram.write_u64(ring.io_pa, ring.insert)
            if doorbell is not None:
                self.w(doorbell_off(doorbell), 1)
            return
        for k, wd in enumerate(words):
            self.ram.write_u64(self.ring_pa + ((self.insert + 8 * k) & 0xFFF), wd)
        self.insert += 8 * len(words)
        self.ram.write_u64(self.ringio_pa, self.insert)  # ringbuf input: insert
        if doorbell is not None:
            self.w(doorbell_off(doorbell), 1)

    def extract(self, ring: Ring | None = None) -> int:
        """The ring output page's extract."""
        return self.ram.read_u64((self.ringio_pa if ring is None else ring.io_pa) + 0x1000)

    def cs_out(self, field: str, i: int = 0, j: int = 0) -> int:
        """Field ``field`` of CS[i][j]'s output block."""
        raw = self.ram.read(self.cpu(self.cs[i][j]["output_va"]), sizeof(CsOutput))
        return CsOutput.unpack(raw)[field]

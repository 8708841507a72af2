"""Fuzz campaign: random MMIO over the whole GPU window, with the firmware model attached.

The GPU (Mali-G610, G720 or the arch 14 G1-Pro with PWR_CONTROL), its MMU and the CSF
firmware model run over guest RAM that holds a valid MCU address space (AS0 maps the shared
section), so MCU boots succeed and the firmware really processes requests. Each case is a
burst of register accesses at random offsets, sizes (0..16 bytes) and values, biased towards
registers with side effects: MCU boots and disables, GPU soft/hard resets, AS commands,
power transitions, doorbells, IRQ clears; random bytes are also written into the GLB/CSG/CS
input blocks of the shared section before doorbells, and the firmware's scheduler runs a
bounded number of slices.

The Job Manager model (Mali-G52) has no MCU: its AS1 maps a job buffer (Mali LPAE, as
panfrost maps BOs) holding job chains, well-formed ones (NULL, WRITE_VALUE of every type)
with Next pointers that end, loop, leave the buffer or point into the middle of a job, and
garbage; the bursts are biased towards the job slots' registers (the _NEXT set, COMMAND
stops, JOB_INT), chains are submitted as panfrost does, and the slots run a bounded number
of jobs per case. Every access must return in bounded time without an exception or a
traceback.

    PYTHONPATH=tests python -m fuzz.fuzz_mmio [--seed N] [--cases N] [--seconds S]
"""

from __future__ import annotations

from support.pgtable_writer import IOMMU_READ, IOMMU_WRITE, LpaeWriter, TableRam

from fuzz.common import RAM_BASE, Campaign, campaign_from_argv, enable_as
from qemu_panthor.csf.iface import SHARED_SECTION_VA
from qemu_panthor.csf.mcu import CsfFirmware
from qemu_panthor.gpu.device import MaliGpu
from qemu_panthor.gpu.models import MODELS, Family
from qemu_panthor.gpu.pwr_regs import PWR_COMMAND, PWR_CONTROL_BASE, PwrCommand, PwrDomain
from qemu_panthor.gpu.regs import JOB_INT_BASE, MMU_BASE, WINDOW_SIZE
from qemu_panthor.jm import regs as JR
from qemu_panthor.mmu.regs import (
    AS_COMMAND,
    AS_TRANSCFG,
    AS_TRANSTAB,
    AsCommand,
    as_reg,
)

RAM_SIZE = 16 << 20
#: Registers with side effects, hit more often than uniform offsets would.
HOT = (0x20, 0x24, 0x28, 0x30, 0x88, 0x180, 0x190, 0x1A0, 0x1C0, 0x1E0, 0x304, 0x700, 0x704,
       0x1000, 0x1004, 0x1008, 0x2000, 0x2004, 0x2008, *(MMU_BASE + as_reg(n, r)
       for n in range(8) for r in (AS_COMMAND, AS_TRANSTAB, AS_TRANSCFG, 0x10, 0x28)),
       0x10000, *(0x80000 + d * 0x10000 for d in range(24)),
       # arch 14's PWR_CONTROL: PWR_INT, PWR_COMMAND and its argument, the domains' READY
       *(PWR_CONTROL_BASE + o for o in (0x0, 0x4, 0x8, 0x20, 0x28, 0x28, 0x28, 0x30, 0x34,
                                         0x108, 0x148, 0x208)))
SIZES = (0, 1, 2, 3, 4, 4, 4, 4, 5, 8, 8, 16)
#: JM: the job buffer's GPU VA and size, the AS that maps it, JS_CONFIG as panfrost sets it
JOB_VA = 0x100_0000
JOB_SIZE = 0x1_0000
JOB_AS = 1
JS_CONFIG = 0x0008_7300 | JOB_AS
#: JM registers with side effects: JOB_INT, each slot's _NEXT set, COMMAND, and the MMU's
HOT_JM = (0x0, 0x4, 0x8, 0x10, 0x20, 0x24, 0x28, 0x30, 0x88, 0x180, 0x190, 0x1A0,
          *(JOB_INT_BASE + r for r in (0x0, 0x4, 0x8, 0xC, 0x10)),
          *(JOB_INT_BASE + JR.JS_BASE + js * JR.JS_STRIDE + r for js in range(4)
            for r in (JR.JS_COMMAND, JR.JS_STATUS, JR.JS_HEAD_NEXT, JR.JS_CONFIG_NEXT,
                      JR.JS_COMMAND_NEXT, JR.JS_COMMAND_NEXT, JR.JS_HEAD, JR.JS_TAIL)),
          *(MMU_BASE + as_reg(n, r) for n in range(4)
            for r in (AS_COMMAND, AS_TRANSTAB, 0x10, 0x28)))


class Rig:
    """A CSF GPU whose AS0 maps a shared section, as panthor leaves it before booting the MCU;
    a JM GPU whose AS1 maps a job buffer, as panfrost leaves it before submitting."""

    def __init__(self, model: str) -> None:
        self.ram = TableRam(RAM_BASE, RAM_SIZE, tables=4 << 20)
        self.irqs = 0
        self.gpu = MaliGpu(MODELS[model], self.ram.mem, on_irq=self._irq)
        self.shared_pa = RAM_BASE + (1 << 20)
        self.fw: CsfFirmware | None = None
        if self.gpu.family == Family.JM:
            self.size = JOB_SIZE
            self.vm = LpaeWriter(self.ram, ias=self.gpu.model.va_bits, mali=True)
            self.vm.map(JOB_VA, self.shared_pa, JOB_SIZE, IOMMU_READ | IOMMU_WRITE)
        else:
            self.fw = CsfFirmware.attach(self.gpu)
            self.size = self.fw.layout.section_size
            self.vm = LpaeWriter(self.ram)
            self.vm.map(SHARED_SECTION_VA, self.shared_pa, self.size, IOMMU_READ | IOMMU_WRITE)
        self.program_as()

    def _irq(self, line: str, level: bool) -> None:
        self.irqs += 1

    def program_as(self) -> None:
        """The MCU's AS0 as panthor programs it, or the job buffer's AS as panfrost does."""
        jm = self.fw is None
        enable_as(lambda off, v: self.gpu.mmio_write(off, 4, v), JOB_AS if jm else 0,
                  self.vm.transtab, base=MMU_BASE, legacy=jm)

    # -- JM: job chains ----------------------------------------------------------------------
    def write_jobs(self, c: Campaign) -> None:
        """Fill part of the job buffer with jobs (64-byte slots) or garbage."""
        rng = c.rng
        mem = self.ram.mem
        for _ in range(rng.randrange(1, 8)):
            slot = rng.randrange(JOB_SIZE // 64)
            pa = self.shared_pa + slot * 64
            if rng.random() < 0.2:
                mem.write(pa, rng.randbytes(64))
                continue
            jtype = rng.choice((JR.JobType.NULL, JR.JobType.WRITE_VALUE, JR.JobType.WRITE_VALUE,
                                JR.JobType.CACHE_FLUSH, rng.randrange(16)))
            control = int(rng.random() < 0.95) | jtype << 1 | rng.randrange(1, 8) << 16
            r = rng.random()
            nxt = (0 if r < 0.4 else JOB_VA + rng.randrange(JOB_SIZE // 64) * 64 if r < 0.85
                   else JOB_VA + slot * 64 if r < 0.9  # itself: a job loop
                   else rng.getrandbits(rng.choice((16, 32, 48, 64))))
            status = 0 if rng.random() < 0.9 else rng.getrandbits(32)
            hdr = JR.JOB_HEADER.pack(status, 0, 0, control, 0, 0, nxt)
            target = (JOB_VA + rng.randrange(JOB_SIZE - 8) if rng.random() < 0.8
                      else rng.getrandbits(48))
            wtype = rng.choice((*JR.WRITE_VALUE_SIZE, rng.getrandbits(32)))
            mem.write(pa, hdr + JR.WRITE_VALUE_PAYLOAD.pack(target, wtype, 0,
                                                            rng.getrandbits(64)))

    def submit(self, c: Campaign) -> None:
        """panfrost_job_hw_submit on a random slot: the _NEXT set, then COMMAND_NEXT START."""
        rng = c.rng
        base = JOB_INT_BASE + JR.JS_BASE + rng.randrange(4) * JR.JS_STRIDE
        head = (JOB_VA + rng.randrange(JOB_SIZE // 64) * 64 if rng.random() < 0.9
                else rng.getrandbits(48))
        config = JS_CONFIG if rng.random() < 0.8 else rng.getrandbits(32)
        for off, v in ((JR.JS_HEAD_NEXT, head & 0xFFFF_FFFF), (JR.JS_HEAD_NEXT + 4, head >> 32),
                       (JR.JS_AFFINITY_NEXT, 1), (JR.JS_CONFIG_NEXT, config),
                       (JR.JS_COMMAND_NEXT, JR.JsCommand.START)):
            self.gpu.mmio_write(base + off, 4, v)


def _offset(c: Campaign, hot: tuple[int, ...]) -> int:
    rng = c.rng
    r = rng.random()
    if r < 0.6:
        return rng.choice(hot) + rng.choice((0, 0, 0, 0, 1, 2, 4, -1))
    if r < 0.95:
        return rng.randrange(WINDOW_SIZE)
    return rng.randrange(-16, WINDOW_SIZE + 16)


def _value(c: Campaign, off: int) -> int:
    rng = c.rng
    if off == 0x700:
        return rng.choice((0, 1, 2, 3, 1, 2))
    if off == PWR_CONTROL_BASE + PWR_COMMAND:  # mostly well-formed PWR_COMMAND_DEF values
        if rng.random() < 0.8:
            return (rng.choice((0, 0, 0, 1)) << 16 | rng.choice((*PwrDomain, 7)) << 8
                    | rng.choice(list(PwrCommand)))
        return rng.getrandbits(32)
    if off == 0x30:
        return rng.choice((0x101, 0x201, 0x4 | rng.getrandbits(12) << 8, 0x7, 0x3,
                           rng.getrandbits(32)))
    if (off - MMU_BASE - 0x400) % 0x40 == AS_COMMAND:
        return rng.choice((*AsCommand, rng.getrandbits(32)))
    if off > JOB_INT_BASE + JR.JS_BASE and (off - JOB_INT_BASE) % JR.JS_STRIDE in (
            JR.JS_COMMAND, JR.JS_COMMAND_NEXT):
        return rng.choice((*JR.JsCommand, rng.getrandbits(32)))
    return rng.getrandbits(64) if rng.random() < 0.3 else rng.choice((0, 1, 0xFFFFFFFF))


def main(argv: list[str] | None = None) -> int:
    c = campaign_from_argv("mmio", cases=200_000, seconds=300.0, hang_s=0.005, argv=argv)
    accesses = boots = booted = chains = jobs = 0
    models = sorted(MODELS)
    rig = Rig(models[0])
    for case in c.iterate():
        rng = c.rng
        if case % 500 == 0 and case:  # every model in turn, a fresh one every 500 cases
            booted += rig.fw.boots if rig.fw is not None else 0
            jobs += rig.gpu.jobs.totals()["jobs"] if rig.gpu.jobs is not None else 0
            rig = Rig(models[case // 500 % len(models)])
        hot = HOT if rig.fw is not None else HOT_JM
        for _k in range(rng.randrange(1, 40)):
            off = _offset(c, hot)
            size = rng.choice(SIZES)
            if rng.random() < 0.5:
                with c.guard(f"read {off:#x}/{size}"):
                    rig.gpu.mmio_read(off, size)
            else:
                value = _value(c, off)
                with c.guard(f"write {off:#x}/{size} = {value:#x}"):
                    rig.gpu.mmio_write(off, size, value)
            accesses += 1
        if rig.gpu.jobs is not None:
            if rng.random() < 0.5:
                rig.write_jobs(c)
            if rng.random() < 0.5:
                with c.guard("submit"):
                    rig.submit(c)
                chains += 1
            if rng.random() < 0.1:
                with c.guard("AS update"):
                    rig.program_as()
            with c.guard("job slots", hang_s=0.5):
                rig.gpu.jobs.pump(50)
            continue
        assert rig.fw is not None
        if rng.random() < 0.3:  # the host scribbles on the interface, then rings
            pa = rig.shared_pa + rng.randrange(rig.size - 64)
            rig.ram.mem.write(pa, rng.randbytes(rng.choice((4, 8, 64))))
            with c.guard("doorbell"):
                rig.gpu.mmio_write(0x80000 + 0x10000 * rng.randrange(24), 4, 1)
        if rng.random() < 0.2:
            with c.guard("MCU boot"):
                rig.program_as()
                rig.gpu.mmio_write(0x700, 4, 2)
            boots += 1
        with c.guard("scheduler slices", hang_s=0.5):
            rig.fw.sched.pump(max_slices=50)
    c.figures["accesses"] = accesses
    c.figures["boot requests"] = boots
    c.figures["firmware boots"] = booted + (rig.fw.boots if rig.fw is not None else 0)
    if rig.fw is not None:
        c.figures["CS instructions (last rig)"] = rig.fw.stats["cs_instructions"]
    c.figures["JM chains submitted"] = chains
    c.figures["JM jobs run"] = jobs + (rig.gpu.jobs.totals()["jobs"] if rig.gpu.jobs else 0)
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())

"""Fuzz campaign: random MMIO over the whole GPU window, with the firmware model attached.

The GPU (Mali-G610 or G720 model), its MMU and the CSF firmware model run over guest RAM that
holds a valid MCU address space (AS0 maps the shared section), so MCU boots succeed and the
firmware really processes requests. Each case is a burst of register accesses at random
offsets, sizes (0..16 bytes) and values, biased towards registers with side effects: MCU
boots and disables, GPU soft/hard resets, AS commands, power transitions, doorbells, IRQ
clears; random bytes are also written into the GLB/CSG/CS input blocks of the shared section
before doorbells, and the firmware's scheduler runs a bounded number of slices. Every access
must return in bounded time without an exception or a traceback.

    PYTHONPATH=tests python -m fuzz.fuzz_mmio [--seed N] [--cases N] [--seconds S]
"""

from __future__ import annotations

from support.pgtable_writer import IOMMU_READ, IOMMU_WRITE, LpaeWriter, TableRam

from fuzz.common import RAM_BASE, Campaign, campaign_from_argv, enable_as
from qemu_panthor.csf.iface import SHARED_SECTION_VA
from qemu_panthor.csf.mcu import CsfFirmware
from qemu_panthor.gpu.device import MaliGpu
from qemu_panthor.gpu.models import MODELS
from qemu_panthor.gpu.regs import MMU_BASE, WINDOW_SIZE
from qemu_panthor.mmu.regs import AS_COMMAND, AS_TRANSCFG, AS_TRANSTAB, AsCommand, as_reg

RAM_SIZE = 16 << 20
#: Registers with side effects, hit more often than uniform offsets would.
HOT = (0x20, 0x24, 0x28, 0x30, 0x88, 0x180, 0x190, 0x1A0, 0x1C0, 0x1E0, 0x304, 0x700, 0x704,
       0x1000, 0x1004, 0x1008, 0x2000, 0x2004, 0x2008, *(MMU_BASE + as_reg(n, r)
       for n in range(8) for r in (AS_COMMAND, AS_TRANSTAB, AS_TRANSCFG, 0x10, 0x28)),
       0x10000, *(0x80000 + d * 0x10000 for d in range(24)))
SIZES = (0, 1, 2, 3, 4, 4, 4, 4, 5, 8, 8, 16)


class Rig:
    """A GPU whose AS0 maps a shared section, as panthor leaves it before booting the MCU."""

    def __init__(self, model: str) -> None:
        self.ram = TableRam(RAM_BASE, RAM_SIZE, tables=4 << 20)
        self.irqs = 0
        self.gpu = MaliGpu(MODELS[model], self.ram.mem, on_irq=self._irq)
        self.fw = CsfFirmware.attach(self.gpu)
        self.size = self.fw.layout.section_size
        self.shared_pa = RAM_BASE + (1 << 20)
        self.vm = LpaeWriter(self.ram)
        self.vm.map(SHARED_SECTION_VA, self.shared_pa, self.size, IOMMU_READ | IOMMU_WRITE)
        self.program_as0()

    def _irq(self, line: str, level: bool) -> None:
        self.irqs += 1

    def program_as0(self) -> None:
        enable_as(lambda off, v: self.gpu.mmio_write(off, 4, v), 0, self.vm.transtab,
                  base=MMU_BASE)


def _offset(c: Campaign) -> int:
    rng = c.rng
    r = rng.random()
    if r < 0.6:
        return rng.choice(HOT) + rng.choice((0, 0, 0, 0, 1, 2, 4, -1))
    if r < 0.95:
        return rng.randrange(WINDOW_SIZE)
    return rng.randrange(-16, WINDOW_SIZE + 16)


def _value(c: Campaign, off: int) -> int:
    rng = c.rng
    if off == 0x700:
        return rng.choice((0, 1, 2, 3, 1, 2))
    if off == 0x30:
        return rng.choice((0x101, 0x201, 0x4 | rng.getrandbits(12) << 8, 0x7, 0x3,
                           rng.getrandbits(32)))
    if (off - MMU_BASE - 0x400) % 0x40 == AS_COMMAND:
        return rng.choice((*AsCommand, rng.getrandbits(32)))
    return rng.getrandbits(64) if rng.random() < 0.3 else rng.choice((0, 1, 0xFFFFFFFF))


def main(argv: list[str] | None = None) -> int:
    c = campaign_from_argv("mmio", cases=200_000, seconds=300.0, hang_s=0.005, argv=argv)
    accesses = boots = booted = 0
    rig = Rig("g610")
    for case in c.iterate():
        rng = c.rng
        if case % 500 == 0:
            booted += rig.fw.boots
            rig = Rig(rng.choice(sorted(MODELS)))
        for _k in range(rng.randrange(1, 40)):
            off = _offset(c)
            size = rng.choice(SIZES)
            if rng.random() < 0.5:
                with c.guard(f"read {off:#x}/{size}"):
                    rig.gpu.mmio_read(off, size)
            else:
                value = _value(c, off)
                with c.guard(f"write {off:#x}/{size} = {value:#x}"):
                    rig.gpu.mmio_write(off, size, value)
            accesses += 1
        if rng.random() < 0.3:  # the host scribbles on the interface, then rings
            pa = rig.shared_pa + rng.randrange(rig.size - 64)
            rig.ram.mem.write(pa, rng.randbytes(rng.choice((4, 8, 64))))
            with c.guard("doorbell"):
                rig.gpu.mmio_write(0x80000 + 0x10000 * rng.randrange(24), 4, 1)
        if rng.random() < 0.2:
            with c.guard("MCU boot"):
                rig.program_as0()
                rig.gpu.mmio_write(0x700, 4, 2)
            boots += 1
        with c.guard("scheduler slices", hang_s=0.5):
            rig.fw.sched.pump(max_slices=50)
    c.figures["accesses"] = accesses
    c.figures["boot requests"] = boots
    c.figures["firmware boots"] = booted + rig.fw.boots
    c.figures["CS instructions"] = rig.fw.stats["cs_instructions"]
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())

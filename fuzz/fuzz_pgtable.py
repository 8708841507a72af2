"""Fuzz campaign: hostile page tables against the MMU engine.

Each case writes a random, hostile table tree for one address space: table descriptors that
point back at themselves or their ancestors (loops), output and table addresses outside guest
RAM, reserved and ignored bits, blocks at every level, bad TRANSTAB/TRANSCFG values; then it
makes random GPU reads, writes and translations in that AS, changes descriptors between (and,
through a hostile memory, during) walks, issues AS commands and walks the tables for QMP.
Every access must end in data or an MMU fault with a defined exception code, in bounded time,
and never touch memory outside the DMA-mapped RAM (SparseRam raises on any such access; an
exception escaping the MMU is a crash).

    python -m fuzz.fuzz_pgtable [--seed N] [--cases N] [--seconds S]   (from the repo root)
"""

from __future__ import annotations

from fuzz.common import RAM_BASE, Campaign, campaign_from_argv, enable_as
from qemu_panthor.exceptions import ExceptionType
from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.memory import RamRegion, SparseRam
from qemu_panthor.mmu import Access, Mmu, MmuFault, introspect
from qemu_panthor.mmu.regs import AS_COMMAND, AS_LOCKADDR, AsCommand, as_reg, transcfg_for

RAM_SIZE = 4 << 20
TABLES = 16  # table pages the hostile tree is built from
_CODES = {int(e) for e in ExceptionType}
_PTE_AF = 1 << 10
_PTE_RW_USER = 1 << 6  # AP[1]: EL0 access, writable


class HostileRam(SparseRam):
    """RAM whose page-table descriptors may change while the MMU reads them."""

    def __init__(self, campaign: Campaign) -> None:
        super().__init__()
        self.c = campaign
        self.table_pas: list[int] = []
        self.churn = 0.0

    def read_u64(self, pa: int) -> int:
        v = super().read_u64(pa)
        if self.churn and self.c.rng.random() < self.churn and self.table_pas:
            super().write_u64(self.c.rng.choice(self.table_pas) + 8 * self.c.rng.randrange(512),
                              _descriptor(self.c, self.table_pas))
        return v


def _descriptor(c: Campaign, tables: list[int]) -> int:
    r = c.rng.random()
    rng = c.rng
    if r < 0.35:  # table/page descriptor to one of ours (loops included)
        return rng.choice(tables) | 0b11 | (rng.getrandbits(12) << 52 if rng.random() < 0.2 else 0)
    if r < 0.55:  # page/block into RAM, random attributes
        pa = RAM_BASE + rng.randrange(0, RAM_SIZE, 0x1000)
        return pa | rng.choice((0b01, 0b11)) | (rng.getrandbits(10) << 2) | (
            rng.getrandbits(12) << 52)
    if r < 0.7:  # outside RAM, anywhere below 2^48 (or beyond)
        return (rng.getrandbits(48 if rng.random() < 0.8 else 64) & ~0xFFF) | rng.choice(
            (0b01, 0b11))
    if r < 0.8:
        return 0  # invalid
    return rng.getrandbits(64)  # garbage: reserved bits, bad types


def _va(c: Campaign) -> int:
    rng = c.rng
    r = rng.random()
    if r < 0.6:
        return rng.randrange(0, 1 << 32)
    if r < 0.9:
        return rng.getrandbits(48)
    return rng.getrandbits(64)


def _valid_chain(c: Campaign, mem: SparseRam, tables: list[int], root: int) -> int:
    """Write a well-formed 4-level walk for a random VA over the hostile tree; its VA."""
    rng = c.rng
    va = rng.randrange(0, 1 << 32, 0x1000)
    table = root
    for lvl in range(3):
        idx = (va >> (39 - 9 * lvl)) & 0x1FF
        nxt = rng.choice(tables)
        mem.write_u64(table + 8 * idx, nxt | 0b11)
        table = nxt
    page = RAM_BASE + rng.randrange(0, RAM_SIZE // 2, 0x1000)
    mem.write_u64(table + 8 * ((va >> 12) & 0x1FF), page | 0b11 | _PTE_AF | _PTE_RW_USER)
    return va


def main(argv: list[str] | None = None) -> int:
    c = campaign_from_argv("pgtable", cases=10_000, seconds=300.0, hang_s=0.05, argv=argv)
    mem = HostileRam(c)
    buf = bytearray(RAM_SIZE)
    mem.add(RamRegion(RAM_BASE, buf))
    mmu = Mmu(mem, IrqBlock("mmu"), as_present=0xFF, va_bits=48, pa_bits=40)
    tables = [RAM_BASE + RAM_SIZE - (i + 1) * 0x1000 for i in range(TABLES)]
    mem.table_pas = tables
    accesses = faults = 0

    def w64(as_nr: int, reg: int, value: int) -> None:
        mmu.write32(as_reg(as_nr, reg), value & 0xFFFFFFFF)
        mmu.write32(as_reg(as_nr, reg) + 4, (value >> 32) & 0xFFFFFFFF)

    for _ in c.iterate():
        rng = c.rng
        as_nr = rng.randrange(8)
        for t in tables:  # a fresh hostile tree
            for i in range(0, 512, rng.choice((1, 1, 7, 64))):
                mem.write_u64(t + 8 * i, _descriptor(c, tables))
        root = rng.choice(tables)
        good = [_valid_chain(c, mem, tables, root) for _ in range(rng.randrange(5))]
        if rng.random() < 0.1:
            root = rng.getrandbits(64)  # TRANSTAB outside RAM, unaligned, reserved bits
        transcfg = transcfg_for(48) if rng.random() < 0.85 else rng.getrandbits(64)
        mem.churn = 0.02 if rng.random() < 0.3 else 0.0
        with c.guard("program AS"):
            enable_as(mmu.write32, as_nr, root, transcfg=transcfg)
        for _k in range(20):
            op = rng.random()
            va = rng.choice(good) + rng.randrange(0x1000) if good and rng.random() < 0.5 \
                else _va(c)
            access = Access(rng.randrange(4))
            report = rng.random() < 0.5
            r: object = None
            if op < 0.3:
                with c.guard("read"):
                    r = mmu.read(as_nr, va, rng.choice((1, 4, 8, 64, 5000)), access,
                                 report=report)
            elif op < 0.55:
                with c.guard("write"):
                    r = mmu.write(as_nr, va, bytes(rng.choice((4, 8, 300))), report=report)
            elif op < 0.8:
                with c.guard("translate"):
                    r = mmu.translate(as_nr, va, access)
            elif op < 0.9:  # change the tables under the TLB, maybe tell the MMU
                t = rng.choice(tables)
                mem.write_u64(t + 8 * rng.randrange(512), _descriptor(c, tables))
                if rng.random() < 0.5:
                    cmd = rng.choice([*AsCommand, 7, 15])
                    with c.guard("AS command"):
                        w64(as_nr, AS_LOCKADDR, (va & ~0xFFF) | rng.randrange(64))
                        mmu.write32(as_reg(as_nr, AS_COMMAND), cmd)
                continue
            else:
                with c.guard("mappings", hang_s=1.0):  # QMP introspection, not MMIO
                    introspect.mappings(mmu, as_nr, max_entries=4096)
                continue
            accesses += 1
            if isinstance(r, MmuFault):
                faults += 1
                if r.exception_type not in _CODES:
                    c.crashes.append(f"case {c.done}: undefined exception code "
                                     f"{r.exception_type:#x} for VA {va:#x}")
        if rng.random() < 0.1:
            with c.guard("MMU_INT clear"):
                mmu.write32(0x4, 0xFFFFFFFF)
    c.figures["accesses"] = accesses
    c.figures["faults"] = faults
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())

"""Fuzz campaign: hostile command streams in the CS interpreter.

Streams of random instruction words, and random *valid-looking* streams (real opcodes with
random operands: addresses into mapped, unmapped and read-only memory, CALL/JUMP chains,
branches that loop forever, syncobj waits that never resolve), run in the interpreter through
the real MMU, slice by slice with the firmware scheduler's budget (256 instructions). Each
stream must end in a CS fatal, an MMU fault, a blocked wait or completion, or keep spinning
legally; no slice may raise or take longer than the bound, because the backend answers MMIO
only between slices: the slowest slice is the longest a register access can wait behind a
hostile stream.

    PYTHONPATH=tests python -m fuzz.fuzz_cs [--seed N] [--cases N] [--seconds S]
"""

from __future__ import annotations

import statistics
import struct
import time

from support import cs_asm as A
from support.pgtable_writer import IOMMU_READ, IOMMU_WRITE, LpaeWriter, TableRam

from fuzz.common import RAM_BASE, Campaign, campaign_from_argv, enable_as
from qemu_panthor.csf.cs_state import RESULT_KINDS, CsExecState
from qemu_panthor.csf.interp import CsInterpreter
from qemu_panthor.csf.opcodes import Op
from qemu_panthor.irqblock import IrqBlock
from qemu_panthor.mmu import Mmu

RAM_SIZE = 16 << 20
AS_NR = 1
CODE_VA = 0x1000_0000  # 256 KiB of stream buffers, read-write
DATA_VA = 0x2000_0000  # 64 KiB of data (sync objects, load/store targets)
RO_VA = 0x3000_0000  # 4 KiB read-only
HOLE_VA = 0x4000_0000  # unmapped
CODE_SIZE = 256 << 10
BUDGET = 256  # the firmware scheduler's slice
SLICES = 64  # slices per stream before it is declared a (legal) spinner
_OPS = [int(o) for o in Op]


class Hooks:
    """GPU-wide services: cache flush, LATEST_FLUSH_ID, clocks."""

    latest_flush_id = 1

    def flush_caches(self) -> None:
        self.latest_flush_id += 1

    def timestamp(self) -> int:
        return time.monotonic_ns()

    def cycle_count(self) -> int:
        return time.monotonic_ns() * 8 // 10


def _addr(c: Campaign) -> int:
    rng = c.rng
    return rng.choice((CODE_VA + rng.randrange(CODE_SIZE), DATA_VA + rng.randrange(0x10000),
                       RO_VA + rng.randrange(0x1000), HOLE_VA + rng.randrange(1 << 20),
                       rng.getrandbits(64), 0))


def _valid_looking(c: Campaign, n: int) -> list[int]:
    """Real opcodes, random operands; registers pointed at interesting addresses first."""
    rng = c.rng
    words = [A.move48(r, _addr(c) & ((1 << 48) - 1)) for r in range(0, 16, 2)]
    words += [A.move32(r, rng.choice((0, 8, 64, 4096, rng.getrandbits(32))))
              for r in range(16, 24)]
    # a draw's staging registers: Tiler Context pointer, vertex and instance counts
    words += [A.move48(40, _addr(c) & ((1 << 48) - 1)),
              A.move32(33, rng.choice((1, 384, 1 << 16, rng.getrandbits(32)))),
              A.move32(34, rng.choice((0, 1, rng.getrandbits(32))))]
    makers = (
        lambda: A.load_multiple(rng.randrange(0, 96), rng.randrange(0, 16, 2), rng.getrandbits(16),
                                rng.randrange(-64, 64)),
        lambda: A.store_multiple(rng.randrange(24, 96), rng.randrange(0, 16, 2),
                                 rng.getrandbits(16), rng.randrange(-64, 64)),
        lambda: A.branch(rng.randrange(-8, 8), rng.randrange(7), rng.randrange(24)),
        lambda: A.call(rng.randrange(0, 16, 2), rng.randrange(16, 24)),
        lambda: A.jump(rng.randrange(0, 16, 2), rng.randrange(16, 24)),
        lambda: A.sync_add32(rng.randrange(0, 16, 2), rng.randrange(16, 24), False, 0, 0),
        lambda: A.sync_set64(rng.randrange(0, 16, 2), rng.randrange(16, 24), True, 2, 0),
        lambda: A.sync_wait32(rng.randrange(0, 16, 2), rng.randrange(16, 24), rng.randrange(2)),
        lambda: A.sync_wait64(rng.randrange(0, 16, 2), rng.randrange(16, 24), rng.randrange(2),
                              True),
        lambda: A.store_state(rng.randrange(0, 16, 2), rng.randrange(4), rng.randrange(-8, 8)),
        lambda: A.add_imm64(rng.randrange(0, 16, 2), rng.randrange(0, 16, 2),
                            rng.randrange(-4096, 4096)),
        lambda: A.flush_cache2(3, 3, 2, rng.randrange(24)),
        lambda: A.run_compute(progress=rng.random() < 0.5),
        lambda: A.error_barrier(),
        lambda: A.heap_set(rng.randrange(0, 16, 2)),
        lambda: A.heap_operation(rng.choice((0, 1, 3))),
        lambda: A.run_idvs(),
        lambda: A.run_tiling(),
        lambda: (A.finish_fragment(rng.randrange(0, 16, 2), rng.randrange(0, 16, 2))
                 | rng.randrange(2)),
        lambda: A.set_exception_handler(2, rng.randrange(0, 16, 2), rng.randrange(16, 24)),
        lambda: A.wait(rng.getrandbits(8)),
    )
    while len(words) < n:
        words.append(rng.choice(makers)())
    return words


def _heap_scene(c: Campaign, ram: TableRam) -> list[int]:
    """A heap context, Tiler Context and Tiler Heap descriptor in the data window (docs/
    firmware.md "Tiler heap") with chunk links that are sometimes sound and sometimes hostile
    (cycles, wild pointers, size 0): instructions to point a stream at them."""
    rng = c.rng
    data = RAM_BASE + CODE_SIZE
    ram.mem.write(data, bytes(0x300))
    chunk = rng.choice((0x1000, 0x2000, 0x4000))
    ram.mem.write(data + 0x204, struct.pack("<IQ", rng.choice((chunk, 0, 64)),
                                            DATA_VA + 0x1000))
    ram.mem.write(data + 0x118, struct.pack("<Q", DATA_VA + 0x200))
    for k in range(1, 0x10000 // chunk):
        nxt = DATA_VA + (k + 1) * chunk if (k + 1) * chunk < 0x10000 else 0
        link = rng.choice((nxt | chunk >> 12, 0, DATA_VA + chunk | chunk >> 12,
                           rng.getrandbits(64), nxt | chunk >> 12))
        ram.mem.write(data + k * chunk, struct.pack("<Q", link))
    return [A.move48(80, DATA_VA), A.heap_set(80), A.move48(40, DATA_VA + 0x100),
            A.move48(86, DATA_VA + 0x100), A.load_multiple(0, 86, 0xF, 0x28)]


def _random_words(c: Campaign, n: int) -> list[int]:
    rng = c.rng
    return [(rng.choice(_OPS) << 56 | rng.getrandbits(56)) if rng.random() < 0.7
            else rng.getrandbits(64) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    c = campaign_from_argv("cs", cases=20_000, seconds=300.0, hang_s=0.005, argv=argv)
    ram = TableRam(RAM_BASE, RAM_SIZE, tables=4 << 20)
    vm = LpaeWriter(ram)
    vm.map(CODE_VA, RAM_BASE, CODE_SIZE, IOMMU_READ | IOMMU_WRITE)
    vm.map(DATA_VA, RAM_BASE + CODE_SIZE, 0x10000, IOMMU_READ | IOMMU_WRITE)
    vm.map(RO_VA, RAM_BASE + CODE_SIZE + 0x10000, 0x1000, IOMMU_READ)
    mmu = Mmu(ram.mem, IrqBlock("mmu"), as_present=0xFF, va_bits=48, pa_bits=40)
    enable_as(mmu.write32, AS_NR, vm.transtab)
    interp = CsInterpreter(mmu, Hooks())
    ends = dict.fromkeys((*RESULT_KINDS, "spinning"), 0)
    slice_s: list[float] = []
    instructions = 0
    for _ in c.iterate():
        rng = c.rng
        n = rng.choice((8, 64, 512))
        words = _random_words(c, n) if rng.random() < 0.3 else _valid_looking(c, n)
        if rng.random() < 0.3:  # after the register set-up of a valid-looking stream
            words[19:19] = [*_heap_scene(c, ram), A.run_idvs(), A.run_idvs()]
        ring_size = 1 << rng.randrange(12, 17)  # 4..64 KiB
        base = CODE_VA + rng.randrange(0, CODE_SIZE - ring_size + 1, ring_size)
        ram.mem.write(RAM_BASE + (base - CODE_VA), A.assemble(words[: ring_size // 8]))
        if rng.random() < 0.2:  # hostile heap contexts, descriptors and chunk links
            ram.mem.write(RAM_BASE + CODE_SIZE + rng.randrange(0, 0x10000 - 256, 8),
                          rng.randbytes(256))
        st = CsExecState(96, 8)
        st.as_nr, st.ring_base, st.ring_size = AS_NR, base, ring_size
        st.insert = min(len(words), ring_size // 8) * 8
        if rng.random() < 0.05:
            st.insert = rng.getrandbits(64)  # a hostile insert pointer
        end = "spinning"
        for _s in range(SLICES):
            t = time.perf_counter()
            with c.guard("slice"):
                res = interp.run(st, BUDGET)
                instructions += res.instructions
                if res.kind != "budget":
                    end = res.kind
            slice_s.append(time.perf_counter() - t)
            if end != "spinning":
                break
        ends[end] += 1
        if rng.random() < 0.01:  # a fault report stays latched; clear it now and then
            mmu.write32(0x4, 0xFFFFFFFF)
    c.figures.update({f"ended {k}": v for k, v in ends.items()})
    c.figures["instructions"] = instructions
    if slice_s:
        c.figures["slice median us"] = round(statistics.median(slice_s) * 1e6, 1)
        c.figures["slice max ms"] = round(max(slice_s) * 1e3, 2)
    return c.finish()


if __name__ == "__main__":
    raise SystemExit(main())

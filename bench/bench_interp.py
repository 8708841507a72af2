"""Throughput of the CS interpreter on an ADD_IMMEDIATE32/BRANCH countdown loop.

Prints instructions/s for the interpreter next to a plain Python loop doing the same work (the
baseline of this machine, measured in the same run). Prints, does not assert.

    .venv/bin/python bench/bench_interp.py [iterations]
"""

from __future__ import annotations

import struct
import sys
import time

from qemu_panthor.csf.interp import CsInterpreter, new_state
from qemu_panthor.memory import RamRegion, SparseRam

RING = 0x10_0000
PAGE = 4096

# MOVE32 r0 <- N; loop: ADD_IMMEDIATE32 r0 <- r0 - 1; BRANCH GREATER r0, -2
# (encodings from docs/reference/cs-instructions.md: opcode[63:56], dst[48:8], src[40:8], imm[0:32];
#  BRANCH offset[0:16] signed, condition[28:3] (1 = GREATER), value register[40:8])
ADD_R0_M1 = (0x10 << 56) | (0 << 48) | (0 << 40) | 0xFFFFFFFF
BRANCH_GT_R0_M2 = (0x16 << 56) | (0 << 40) | (1 << 28) | (0x10000 - 2)


def move32(reg: int, imm: int) -> int:
    return (0x02 << 56) | (reg << 48) | imm


class IdentityMmu:
    """GPU VA == PA over one RAM page (no faults, no locked regions)."""

    locked_ases = 0

    def __init__(self, ram: SparseRam) -> None:
        self.ram = ram

    def lock_stalls(self, as_nr: int, va: int, size: int) -> bool:
        return False

    def read(self, as_nr: int, va: int, size: int, access: object = None) -> bytes:
        return self.ram.read(va, size)

    def write(self, as_nr: int, va: int, data: bytes) -> None:
        self.ram.write(va, data)


class Hooks:
    latest_flush_id = 1

    def flush_caches(self) -> None:
        pass

    def timestamp(self) -> int:
        return time.monotonic_ns()

    def cycle_count(self) -> int:
        return time.monotonic_ns()


def bench_interp(iterations: int, budget: int) -> tuple[int, float]:
    ram = SparseRam()
    ram.add(RamRegion(RING, bytearray(PAGE)))
    words = [move32(0, iterations), ADD_R0_M1, BRANCH_GT_R0_M2]
    ram.write(RING, struct.pack("<3Q", *words))
    st = new_state()
    st.ring_base, st.ring_size, st.insert = RING, PAGE, 24
    it = CsInterpreter(IdentityMmu(ram), Hooks())
    total = 0
    t0 = time.perf_counter()
    while True:
        res = it.run(st, budget)
        total += res.instructions
        if res.kind != "budget":
            break
    dt = time.perf_counter() - t0
    assert res.kind == "idle" and st.regs[0] == 0, res
    return total, dt


def bench_python(iterations: int) -> tuple[int, float]:
    """The same countdown as plain Python (2 operations per iteration)."""
    r0 = iterations
    n = 1
    t0 = time.perf_counter()
    while True:
        r0 = (r0 - 1) & 0xFFFFFFFF
        n += 2
        if not r0 > 0:
            break
    return n, time.perf_counter() - t0


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 500_000
    n_py, dt_py = bench_python(iterations)
    print(f"plain Python loop : {n_py / dt_py / 1e6:8.2f} M ops/s   ({n_py} ops in {dt_py:.3f} s)")
    for budget in (1 << 30, 4096, 256):
        n, dt = bench_interp(iterations, budget)
        print(
            f"CS interpreter    : {n / dt / 1e6:8.2f} M instr/s ({n} instr in {dt:.3f} s, "
            f"budget {budget}; {dt_py / n_py * 1e9:.0f} ns/op baseline vs {dt / n * 1e9:.0f} ns)"
        )


if __name__ == "__main__":
    main()

"""How a register is declared: name, offset, width and software access, as data.

Every block declares its registers as tuples of :class:`Reg` next to its behaviour
(``gpu/regs.py``, ``mmu/regs.py``); decoders, traces and write handling read them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class RegAccess(IntEnum):
    """What software may do with a register."""

    RO = 0  # writes ignored
    RW = 1
    WO = 2  # reads 0


@dataclass(frozen=True)
class Reg:
    """One register; a 64-bit one is two 32-bit words, LO at ``offset``, HI at ``offset+4``."""

    name: str
    offset: int
    width: int = 32  # 32 or 64
    access: RegAccess = RegAccess.RO

    def words(self) -> tuple[int, ...]:
        """Offsets of the 32-bit words this register spans."""
        return (self.offset, self.offset + 4) if self.width == 64 else (self.offset,)

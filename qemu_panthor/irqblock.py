"""The Mali interrupt register quartet (RAWSTAT, CLEAR, MASK, STAT).

GPU_CONTROL (0x20), JOB_CONTROL (0x1000) and MMU (0x2000) each have one. Hardware raises
bits in RAWSTAT; software clears them by writing 1s to CLEAR; STAT = RAWSTAT & MASK; the
block's interrupt line is level: asserted while STAT != 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .timeline import Timeline

IRQ_RAWSTAT = 0x0
IRQ_CLEAR = 0x4
IRQ_MASK = 0x8
IRQ_STAT = 0xC
IRQ_BLOCK_SIZE = 0x10
#: register name suffix -> offset within the block
IRQ_REGS = {"RAWSTAT": IRQ_RAWSTAT, "CLEAR": IRQ_CLEAR, "MASK": IRQ_MASK, "STAT": IRQ_STAT}


class IrqBlock:
    """One interrupt block feeding one level-triggered line (``on_level(bool)``)."""

    __slots__ = ("_level", "mask", "name", "on_level", "raised_count", "rawstat", "tl")

    def __init__(self, name: str, on_level: Callable[[bool], None] | None = None) -> None:
        self.name = name
        self.rawstat = 0
        self.mask = 0
        self._level = False
        self.raised_count = 0
        self.on_level = on_level
        #: --timeline: RAWSTAT bits raised and cleared (None: off)
        self.tl: Timeline | None = None

    @property
    def stat(self) -> int:
        return self.rawstat & self.mask

    @property
    def level(self) -> bool:
        return self._level

    def _update(self) -> None:
        level = (self.rawstat & self.mask) != 0
        if level != self._level:
            self._level = level
            if level:
                self.raised_count += 1
            if self.on_level is not None:
                self.on_level(level)

    def raise_bits(self, bits: int) -> None:
        """Hardware side: set RAWSTAT bits."""
        if self.tl is not None:
            self.tl.instant(f"IRQ {self.name}", "raise", bits=bits & 0xFFFFFFFF)
        self.rawstat |= bits & 0xFFFFFFFF
        self._update()

    def clear_bits(self, bits: int) -> None:
        self.rawstat &= ~bits & 0xFFFFFFFF
        self._update()

    def reset(self) -> None:
        self.rawstat = 0
        self.mask = 0
        self._update()

    # -- register interface (offset relative to the block base) ------------------------
    def read(self, off: int) -> int:
        if off == IRQ_RAWSTAT:
            return self.rawstat
        if off == IRQ_MASK:
            return self.mask
        if off == IRQ_STAT:
            return self.rawstat & self.mask
        return 0  # CLEAR is write-only

    def write(self, off: int, value: int) -> None:
        value &= 0xFFFFFFFF
        if off == IRQ_CLEAR:
            if self.tl is not None and value:
                self.tl.instant(f"IRQ {self.name}", "clear", bits=value)
            self.rawstat &= ~value & 0xFFFFFFFF
        elif off == IRQ_MASK:
            self.mask = value
        elif off == IRQ_RAWSTAT:
            # Writing RAWSTAT sets bits (test/debug facility on Mali); keep it.
            self.rawstat |= value
        else:
            return
        self._update()

"""The MCU's view of memory: address space 0 through the GPU MMU.

The firmware reaches the shared section, the rings' pointers and the suspend buffers only
through AS0 (the MCU's VM). An access there that faults is an MCU fault: the firmware stops
with MCU_STATUS = FATAL (reference §7), raised here as :class:`McuFault`.
"""

from __future__ import annotations

import struct

from ..mmu import Access, Mmu, MmuFault

MCU_AS = 0
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class McuFault(Exception):
    """An MCU access through AS0 faulted (the fault value is in ``fault``)."""

    def __init__(self, fault: MmuFault, what: str) -> None:
        super().__init__(f"MCU fault during {what}: {fault}")
        self.fault = fault


class McuBus:
    """Reads and writes of MCU virtual addresses; faults raise :class:`McuFault`."""

    __slots__ = ("mmu",)

    def __init__(self, mmu: Mmu) -> None:
        self.mmu = mmu

    def read(self, va: int, size: int, what: str = "read") -> bytes:
        r = self.mmu.read(MCU_AS, va, size, Access.READ)
        if isinstance(r, MmuFault):
            raise McuFault(r, f"{what} at {va:#x}")
        return bytes(r)

    def write(self, va: int, data: bytes | bytearray, what: str = "write") -> None:
        f = self.mmu.write(MCU_AS, va, bytes(data))
        if f is not None:
            raise McuFault(f, f"{what} at {va:#x}")

    def read32(self, va: int) -> int:
        value: int = _U32.unpack(self.read(va, 4))[0]
        return value

    def read64(self, va: int) -> int:
        value: int = _U64.unpack(self.read(va, 8))[0]
        return value

    def write32(self, va: int, value: int) -> None:
        self.write(va, _U32.pack(value & 0xFFFFFFFF))

    def write64(self, va: int, value: int) -> None:
        self.write(va, _U64.pack(value & 0xFFFFFFFFFFFFFFFF))

"""PWR_CONTROL (arch 14 and later): the power block that replaces GPU_CONTROL's power-domain
registers, as data. Offsets, bits and command encodings are panthor 7.2's panthor_pwr_regs.h
(docs/gpu.md "PWR_CONTROL"); the block sits at GPU_CONTROL + 0x800 and its interrupt block
shares the "gpu" interrupt line with GPU_INT.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from ..register import Reg, RegAccess

#: Offset of the block in the GPU window (inside GPU_CONTROL's 4 KiB).
PWR_CONTROL_BASE = 0x800
#: Bytes of the window the block decodes.
PWR_CONTROL_SIZE = 0x400
#: PWR_INT (RAWSTAT, CLEAR, MASK, STAT), relative to the block.
PWR_INT_BASE = 0x0
PWR_STATUS = 0x20
PWR_COMMAND = 0x28
PWR_CMDARG = 0x30


class PwrIrq(IntFlag):
    """PWR_INT_* bits."""

    POWER_CHANGED_SINGLE = 1 << 0
    POWER_CHANGED_ALL = 1 << 1
    DELEGATION_CHANGED = 1 << 2
    RESET_COMPLETED = 1 << 3
    RETRACT_COMPLETED = 1 << 4
    INSPECT_COMPLETED = 1 << 5
    COMMAND_NOT_ALLOWED = 1 << 30
    COMMAND_INVALID = 1 << 31


class PwrStatus(IntFlag):
    """PWR_STATUS bits besides the per-domain ALLOW (bit = domain) and DELEGATED
    (bit = 16 + domain) flags."""

    ALLOW_SOFT_RESET = 1 << 33
    ALLOW_FAST_RESET = 1 << 34
    POWER_PENDING = 1 << 41
    RESET_PENDING = 1 << 42
    RETRACT_PENDING = 1 << 43
    INSPECT_PENDING = 1 << 44


#: PWR_STATUS: DELEGATED(domain) = 1 << (DELEGATED_SHIFT + domain)
DELEGATED_SHIFT = 16


class PwrCommand(IntEnum):
    """PWR_COMMAND[7:0]; [15:8] is the domain, [23:16] the subdomain (PWR_COMMAND_DEF)."""

    POWER_UP = 0x10
    POWER_DOWN = 0x11
    DELEGATE = 0x20
    RETRACT = 0x21
    RESET_SOFT = 0x31
    RESET_FAST = 0x32
    INSPECT = 0xF0


class PwrDomain(IntEnum):
    """PWR_COMMAND domains; also the bit of the domain's ALLOW flag in PWR_STATUS."""

    L2 = 0
    TILER = 1
    SHADER = 8
    BASE = 14
    STACK = 15


@dataclass(frozen=True)
class DomainRegs:
    """One domain's 64-bit registers: PRESENT, READY, PWRTRANS, PWRACTIVE (+0, +8, +0x10,
    +0x18 from its base)."""

    domain: PwrDomain
    base: int

    @property
    def present(self) -> int:
        return self.base

    @property
    def ready(self) -> int:
        return self.base + 0x8

    @property
    def pwrtrans(self) -> int:
        return self.base + 0x10

    @property
    def pwractive(self) -> int:
        return self.base + 0x18


DOMAIN_REGS: dict[PwrDomain, DomainRegs] = {
    d: DomainRegs(d, base) for d, base in ((PwrDomain.L2, 0x100), (PwrDomain.TILER, 0x140),
                                          (PwrDomain.SHADER, 0x200), (PwrDomain.BASE, 0x380),
                                          (PwrDomain.STACK, 0x3C0))
}

#: The block's registers (relative to PWR_CONTROL_BASE), for names and the decode table.
PWR_REGS: tuple[Reg, ...] = (
    Reg("PWR_INT_RAWSTAT", 0x0, access=RegAccess.RW),
    Reg("PWR_INT_CLEAR", 0x4, access=RegAccess.WO),
    Reg("PWR_INT_MASK", 0x8, access=RegAccess.RW),
    Reg("PWR_INT_STAT", 0xC),
    Reg("PWR_STATUS", PWR_STATUS, 64),
    Reg("PWR_COMMAND", PWR_COMMAND, access=RegAccess.WO),
    Reg("PWR_CMDARG", PWR_CMDARG, 64, RegAccess.RW),
    *(Reg(f"PWR_{d.name}_{kind}", off, 64)
      for d, r in DOMAIN_REGS.items()
      for kind, off in (("PRESENT", r.present), ("READY", r.ready), ("PWRTRANS", r.pwrtrans),
                        ("PWRACTIVE", r.pwractive))),
)

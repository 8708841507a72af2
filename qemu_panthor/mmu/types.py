"""The values the MMU hands out: access types, translations, faults, an AS's binding.

Faults are values, never exceptions (docs/architecture.md): a GPU access through an AS
returns a :class:`MmuFault` with the AS_FAULTSTATUS fields hardware would latch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import final

from .. import exceptions as exc
from . import regs


class Access(IntEnum):
    """AS_FAULTSTATUS ACCESS_TYPE."""

    ATOMIC = 0
    EXECUTE = 1
    READ = 2
    WRITE = 3


@dataclass(frozen=True)
class Translation:
    """A successful translation: the PA and the leaf descriptor's permissions and attributes."""

    pa: int
    writable: bool
    executable: bool
    attr_index: int
    level: int
    readable: bool = True  # only the legacy Mali LPAE format has leaves without read access


#: Exception codes reported as bus faults (AS_FAULTSTATUS bit 10, "DECODER FAULT"): a table
#: walk or a GPU access that hit no RAM.
BUS_CODES = frozenset(range(exc.TRANSTAB_BUS_FAULT, exc.TRANSTAB_BUS_FAULT + 4)) | {
    exc.GPU_BUS_FAULT
}


@final  # the MMU's hot paths tell a fault from other results by ``__class__ is MmuFault``
@dataclass(frozen=True)
class MmuFault:
    """A fault as the MMU reports it. ``bus`` marks bus faults (AS_FAULTSTATUS bit 10)."""

    as_nr: int
    va: int
    access: Access
    exception_type: int
    bus: bool = False

    @property
    def faultstatus(self) -> int:
        """The AS_FAULTSTATUS value this fault latches (source id 0)."""
        return (
            self.exception_type
            | int(self.access) << regs.FAULTSTATUS_ACCESS_TYPE_SHIFT
            | (regs.FAULTSTATUS_DECODER_FAULT if self.bus else 0)
        )

    def __str__(self) -> str:
        kind = "bus fault" if self.bus else "fault"
        return (
            f"AS{self.as_nr} {kind} {exc.exception_name(self.exception_type)} "
            f"({self.exception_type:#x}) on {self.access.name} at VA {self.va:#x}"
        )


#: AS commands that restart transactions stalled on a fault (LOCK and NOP do not).
RESTART_COMMANDS = (regs.AsCommand.UPDATE, regs.AsCommand.UNLOCK, regs.AsCommand.FLUSH_PT,
                    regs.AsCommand.FLUSH_MEM)


@dataclass(frozen=True, slots=True)
class AsBinding:
    """What an AS slot translates with now, for the firmware's stalled-access retries."""

    enabled: bool  # the latched ADRMODE translates (not UNMAPPED)
    transtab: int  # the latched (UPDATE'd) AS_TRANSTAB
    restarts: int  # AS commands executed so far that restart stalled transactions


__all__ = ["BUS_CODES", "RESTART_COMMANDS", "Access", "AsBinding", "MmuFault", "Translation"]

"""The Mali GPU MMU: address-space slots, AS commands, LPAE stage-1 walker, TLB, faults.

See docs/mmu.md. Public API (docs/architecture.md): :class:`Mmu`, :class:`Access`,
:class:`Translation`, :class:`MmuFault`.
"""

from .engine import Access, AsBinding, MapAttrs, Mapping, MappingList, Mmu, MmuFault, Translation
from .regs import AdrMode, AsCommand

__all__ = [
    "Access",
    "AdrMode",
    "AsBinding",
    "AsCommand",
    "MapAttrs",
    "Mapping",
    "MappingList",
    "Mmu",
    "MmuFault",
    "Translation",
]

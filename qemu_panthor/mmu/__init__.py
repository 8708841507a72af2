"""The Mali GPU MMU: address-space slots, AS commands, LPAE stage-1 walker, TLB, faults.

See docs/mmu.md. Public API (docs/architecture.md): :class:`Mmu`, :class:`Access`,
:class:`Translation`, :class:`MmuFault`; :class:`AsBinding` for the firmware model;
:mod:`.introspect` (``as_state``, ``mappings``, ``walk``) for QMP and tests.
"""

from .engine import Mmu
from .introspect import MapAttrs, Mapping, MappingList
from .regs import AdrMode, AsCommand
from .types import Access, AsBinding, MmuFault, Translation

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

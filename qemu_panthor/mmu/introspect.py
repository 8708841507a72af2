"""Looking at the MMU from outside: an AS's state, its page tables, a side-effect-free walk.

For QMP and tests only. Nothing here touches a register, fills a TLB, latches a fault or
counts anything: it reads the model's state and the guest's page tables as they are now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple, TypedDict

from .. import exceptions as exc
from . import regs
from .types import Access, MmuFault, Translation
from .walker import NEED, PERM_R, PERM_W, PERM_X, collect_leaves
from .walker import walk as walk_tables

if TYPE_CHECKING:
    from .engine import Mmu

_M64 = 0xFFFF_FFFF_FFFF_FFFF


# -- as_state --------------------------------------------------------------------------------
class AsRegisters(TypedDict):
    """The AS registers as software reads them (STATUS: AS_ACTIVE)."""

    TRANSTAB: int
    MEMATTR: int
    LOCKADDR: int
    FAULTSTATUS: int
    FAULTADDRESS: int
    STATUS: int
    TRANSCFG: int
    FAULTEXTRA: int


class AsActive(TypedDict):
    """The configuration latched by the last UPDATE, which the walker uses."""

    TRANSTAB: int
    MEMATTR: int
    TRANSCFG: int
    adrmode: str
    va_bits: int
    pa_bits: int
    start_level: int


class AsFaultInfo(TypedDict):
    """AS_FAULTSTATUS / AS_FAULTADDRESS decoded."""

    exception: str
    access: str
    address: int


class TlbCounters(TypedDict):
    entries: int
    block_entries: int
    hits: int
    misses: int
    flushes: int
    invalidations: int
    evictions: int
    stale_hits: int
    walk_cache_entries: int


#: ``as_state`` of a slot in AS_PRESENT.
AsState = TypedDict("AsState", {
    "as": int,
    "present": Literal[True],
    "registers": AsRegisters,
    "active": AsActive,
    "locked": list[tuple[int, int]],
    "fault_pending": bool,
    "fault": AsFaultInfo,
    "faults": int,
    "faults_latched": int,
    "faults_dropped": int,
    "bus_faults": int,
    "commands": dict[str, int],
    "table_switches": int,
    "bad_commands": int,
    "tlb": TlbCounters,
})
#: ``as_state`` of a slot outside AS_PRESENT.
AbsentAs = TypedDict("AbsentAs", {"as": int, "present": Literal[False]})


def as_state(mmu: Mmu, as_nr: int) -> AsState | AbsentAs:
    """Registers, the latched configuration, fault state and TLB counters of one AS."""
    st = mmu.slot(as_nr)
    if st is None:
        return {"as": as_nr, "present": False}
    cfg = st.cfg
    mode = cfg.mode_name
    tlb = st.tlb
    return {
        "as": as_nr,
        "present": True,
        "registers": {
            "TRANSTAB": st.transtab,
            "MEMATTR": st.memattr,
            "LOCKADDR": st.lockaddr,
            "FAULTSTATUS": st.faultstatus,
            "FAULTADDRESS": st.faultaddress,
            "STATUS": mmu.as_active >> as_nr & 1,
            "TRANSCFG": st.transcfg,
            "FAULTEXTRA": st.faultextra,
        },
        "active": {
            "TRANSTAB": cfg.transtab,
            "MEMATTR": cfg.memattr,
            "TRANSCFG": cfg.transcfg,
            "adrmode": mode,
            "va_bits": cfg.va_bits,
            "pa_bits": cfg.pa_bits,
            "start_level": cfg.start_level,
        },
        "locked": list(st.locked),
        "fault_pending": mmu.fault_pending(as_nr),
        "fault": {
            "exception": exc.exception_name(st.faultstatus & 0xFF),
            "access": Access((st.faultstatus >> 8) & 3).name,
            "address": st.faultaddress,
        },
        "faults": st.faults,
        "faults_latched": st.faults_latched,
        "faults_dropped": st.faults_dropped,
        "bus_faults": st.bus_faults,
        "commands": {c.name: st.commands[c] for c in regs.AsCommand},
        "table_switches": st.table_switches,
        "bad_commands": st.bad_commands,
        "tlb": {
            "entries": len(tlb),
            "block_entries": len(tlb.blocks),
            "hits": tlb.hits,
            "misses": tlb.misses,
            "flushes": tlb.flushes,
            "invalidations": tlb.invalidations,
            "evictions": tlb.evictions,
            "stale_hits": tlb.stale_hits,
            "walk_cache_entries": len(tlb.walks),
        },
    }


# -- walk ------------------------------------------------------------------------------------
def walk(mmu: Mmu, as_nr: int, va: int, access: Access = Access.READ) -> Translation | MmuFault:
    """What the page tables say now (no TLB, no side effects, no fault counted)."""
    st = mmu.slot(as_nr)
    if st is None:
        return MmuFault(as_nr, va & _M64, Access(access), exc.TRANSLATION_FAULT)
    code, level, oa, size, perm, attr, _ = walk_tables(mmu.mem.read_u64, st.cfg, va)
    if not code:
        code = exc.PERM_FAULT + level if NEED[access] & ~perm else 0
    if code:
        return mmu.make_fault(as_nr, va, access, code)
    return Translation(oa + (va & (size - 1)), bool(perm & PERM_W), bool(perm & PERM_X),
                       attr, level, bool(perm & PERM_R))


# -- mappings --------------------------------------------------------------------------------
class MapAttrs(NamedTuple):
    writable: bool
    executable: bool
    attr_index: int
    af: bool
    readable: bool = True  # only the legacy Mali LPAE format has leaves without read access


class Mapping(NamedTuple):
    va: int
    pa: int
    size: int
    attrs: MapAttrs


class MappingList(list[Mapping]):
    """``mappings`` result; ``truncated`` is set when the entry cap cut the walk short."""

    truncated: bool = False


def mappings(mmu: Mmu, as_nr: int, max_entries: int = 1 << 20) -> MappingList:
    """The active page tables of ``as_nr`` as coalesced (va, pa, size, attrs) ranges.

    Reads at most ``max_entries`` descriptors (``.truncated`` says if it stopped early), so
    hostile tables cannot hang it; tables outside RAM and invalid descriptors are skipped.
    """
    out = MappingList()
    st = mmu.slot(as_nr)
    if st is None:
        return out
    cfg = st.cfg
    if (cfg.adrmode == regs.AdrMode.IDENTITY if cfg.lpae is None
            else cfg.lpae == regs.LpaeMode.IDENTITY):
        out.append(Mapping(0, 0, 1 << cfg.pa_bits, MapAttrs(True, True, 0, True)))
        return out
    leaves, out.truncated = collect_leaves(mmu.mem.read, cfg, max_entries)
    for lf in leaves:
        attrs = MapAttrs(bool(lf.perm & PERM_W), bool(lf.perm & PERM_X), lf.attr_index, lf.af,
                         bool(lf.perm & PERM_R))
        if out:
            last = out[-1]
            if (
                last.va + last.size == lf.va
                and last.pa + last.size == lf.oa
                and last.attrs == attrs
            ):
                out[-1] = Mapping(last.va, last.pa, last.size + lf.size, attrs)
                continue
        out.append(Mapping(lf.va, lf.oa, lf.size, attrs))
    return out


__all__ = ["AbsentAs", "AsActive", "AsFaultInfo", "AsRegisters", "AsState", "MapAttrs",
           "Mapping", "MappingList", "TlbCounters", "as_state", "mappings", "walk"]

"""The Mali MMU: MMU_INT, the AS slots and their commands, translation and fault reporting.

Models (reference §4, §5.3):
* per-AS registers for every slot in AS_PRESENT (absent slots read 0 and ignore writes);
* AS_COMMAND executed synchronously (AS_STATUS.AS_ACTIVE reads 0 unless the test port made a
  command hang, docs/test-port.md): UPDATE latches TRANSTAB/MEMATTR/TRANSCFG into the active
  configuration the walker uses and flushes the AS's TLB; LOCK records AS_LOCKADDR's region;
  UNLOCK, FLUSH_PT and FLUSH_MEM invalidate the locked region in the TLB and unlock (those
  two in :mod:`.as_regs`);
* GPU accesses through an AS: a TLB lookup, a table walk on a miss, then the guest-RAM access;
  faults come back as :class:`MmuFault` values and, for GPU accesses (``report=True``), are
  latched into AS_FAULTSTATUS/AS_FAULTADDRESS with MMU_INT bit ``as_nr`` raised; while that
  bit is pending the first fault's registers are kept.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import exceptions as exc
from ..irqblock import IrqBlock
from ..memory import BusError, PhysMem, SparseRam
from . import regs
from .as_regs import AsRegisters, AsSlot
from .tlb import DEFAULT_CAPACITY, Tlb, TlbEntry
from .types import BUS_CODES, RESTART_COMMANDS, Access, AsBinding, MmuFault, Translation
from .views import PageViews
from .walker import (
    NEED,
    PAGE_SHIFT,
    PAGE_SIZE,
    PERM_R,
    PERM_W,
    PERM_X,
    WALK_SHIFT,
    walk,
    walk_fast,
)

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger(__name__)

_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
_PAGE_MASK = PAGE_SIZE - 1
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_U32_UNPACK = _U32.unpack_from
_U64_UNPACK = _U64.unpack_from


class Mmu(AsRegisters):
    """MMU register block (relative to GPU offset 0x2000) plus GPU-VA access services."""

    def __init__(
        self,
        mem: PhysMem,
        irq: IrqBlock,
        *,
        as_present: int,
        va_bits: int,
        pa_bits: int,
        strict: bool = False,
        tlb_capacity: int = DEFAULT_CAPACITY,
        legacy_lpae: bool = False,
    ) -> None:
        self.mem = mem
        #: the GPU has the legacy Mali LPAE format (JM parts): ADRMODE 0 selects it
        self.legacy_lpae = legacy_lpae
        self.irq = irq
        self.as_present = as_present & ((1 << regs.MAX_AS) - 1)
        self.va_bits = va_bits
        self.pa_bits = pa_bits
        #: Called with the AS number after UPDATE / UNLOCK / FLUSH_PT / FLUSH_MEM and after an
        #: MMU_INT_CLEAR that cleared that AS's bit: waiters on a faulted access may retry.
        self.on_as_update: Callable[[int], None] | None = None
        #: Called with every fault a GPU access reports (``report=True``) and whether it was
        #: latched (False: an earlier fault of that AS is still pending). For introspection.
        self.on_fault: Callable[[MmuFault, bool], None] | None = None
        #: CSF parts: bus faults are GPU faults (GPU_FAULTSTATUS, GPU_INT FAULT), not AS
        #: faults: called with (as_nr, access, the PA or None for a page-table read) instead
        #: of latching AS_FAULTSTATUS and raising MMU_INT (docs/mmu.md "Bus faults").
        self.bus_fault_hook: Callable[[int, int, int | None], None] | None = None
        #: Test port (qemu_panthor.testport), None unless a fault is armed: called with the AS
        #: and command of each AS_COMMAND write; returns 0 (execute it) or makes the command
        #: hang: AS_ACTIVE reads 1 for that many AS_STATUS reads (-1: until the next reset).
        self.as_cmd_hook: Callable[[int, int], int] | None = None
        #: AS slots whose AS_STATUS.AS_ACTIVE is stuck (injected hang), and reads left per AS.
        self.as_active = 0
        self.as_hold = [0] * regs.MAX_AS
        #: AS slots with a region locked by AS_COMMAND LOCK (bit n: AS n), see lock_stalls().
        self.locked_ases = 0
        #: --timeline (qemu_panthor/timeline.py): AS commands, lock regions, faults (None: off)
        self.tl: Timeline | None = None
        self.stats = {"unknown_reads": 0, "unknown_writes": 0, "absent_as": 0, "stale_hits": 0}
        self._read_u64 = mem.read_u64
        self._slots: list[AsSlot | None] = [
            AsSlot(n, self._cfg(0, 0, 0), tlb_capacity) if self.as_present >> n & 1 else None
            for n in range(regs.MAX_AS)
        ]
        # Views of guest pages and page tables for the hot paths (mmu/views.py).
        self._pv = PageViews(mem)
        self._views = self._pv.pages
        self._tviews = self._pv.tables
        self._page_view = self._pv.page
        self._read_desc = self._pv.read_desc
        if isinstance(mem, SparseRam):
            mem.add_listener(self._drop_views)  # held weakly
        # The TLB-hit fast path of read/write: AS number -> Tlb, empty in strict mode.
        self._fast: dict[int, Tlb] = {}
        self.strict = strict

    @property
    def strict(self) -> bool:
        """Re-walk on every TLB hit and report translations the page tables no longer agree
        with (and walk-cache entries on a TLB miss)."""
        return self._strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._strict = bool(value)
        for st in self._slots:
            if st is not None:
                st.tlb.drop_views()
        self._fast = (
            {}
            if self._strict
            else {n: st.tlb for n, st in enumerate(self._slots) if st is not None}
        )

    def _drop_views(self) -> None:
        """The guest RAM regions changed (DMA map/unmap): forget every page view."""
        self._pv.clear()
        for st in self._slots:
            if st is not None:
                st.tlb.drop_views()

    # -- faults ---------------------------------------------------------------------------------
    def fault_pending(self, as_nr: int) -> bool:
        """MMU_INT page-fault bit of ``as_nr`` raised and not yet cleared by the driver."""
        return 0 <= as_nr < regs.MAX_AS and bool(self.irq.rawstat >> as_nr & 1)

    def make_fault(self, as_nr: int, va: int, access: int, code: int) -> MmuFault:
        """The fault a walk or an access with exception ``code`` reports. On CSF parts (a
        bus-fault hook) every bus fault is GPU_BUS_FAULT: CSF has no TRANSTAB_BUS_FAULT codes
        (kbase, panthor)."""
        bus = code in BUS_CODES
        if bus and self.bus_fault_hook is not None:
            code = exc.GPU_BUS_FAULT
        return MmuFault(as_nr, va & _M64, Access(access), code, bus)

    def _fault(
        self, st: AsSlot | None, as_nr: int, va: int, access: int, code: int, report: bool,
        pa: int | None = None,
    ) -> MmuFault:
        f = self.make_fault(as_nr, va, access, code)
        hook_bus = self.bus_fault_hook if f.bus else None
        if st is None:
            self.stats["absent_as"] += 1
            return f
        st.faults += 1
        if report and hook_bus is not None:
            st.bus_faults += 1
            if self.tl is not None:
                self.tl.instant("MMU faults", f"AS{st.nr} GPU_BUS_FAULT (GPU fault)", va=f.va,
                                access=f.access.name, latched=True)
            hook_bus(st.nr, int(access), pa)
        elif report:
            bit = 1 << st.nr
            latched = not self.irq.rawstat & bit
            if self.tl is not None:
                self.tl.instant("MMU faults", f"AS{st.nr} {exc.exception_name(code)}", va=f.va,
                                access=f.access.name, latched=latched)
            if not latched:
                st.faults_dropped += 1  # first fault wins until the driver clears it
            else:
                st.faultstatus = f.faultstatus
                st.faultaddress = f.va
                st.faults_latched += 1
                self.irq.raise_bits(bit)
            hook = self.on_fault
            if hook is not None:
                try:
                    hook(f, latched)
                except Exception:  # an observer's bug must not escape into a GPU access
                    log.exception("on_fault hook failed for %s", f)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s%s", f, "" if report else " (not reported)")
        return f

    # -- translation ----------------------------------------------------------------------------
    def slot(self, as_nr: int) -> AsSlot | None:
        """The AS slot ``as_nr``; None when it is not in AS_PRESENT (or out of range)."""
        if 0 <= as_nr < regs.MAX_AS:
            return self._slots[as_nr]
        return None

    def _lookup(self, st: AsSlot, va: int) -> TlbEntry | int:
        """TLB entry for ``va``'s page (walking and filling on a miss), or a fault code."""
        tlb = st.tlb
        e = tlb.entries.get(va >> PAGE_SHIFT)
        if e is not None:
            tlb.hits += 1
            if self.strict:
                self._check_stale(st, va, e)
            return e
        if tlb.blocks:
            e = tlb.block_hit(va)
            if e is not None:
                tlb.hits += 1
                if self.strict:
                    self._check_stale(st, va, e)
                return e
        tlb.misses += 1
        walks = tlb.walks
        if self._strict and walks and va >= 0 and (va >> WALK_SHIFT) in walks:
            r = walk(self._read_desc, st.cfg, va, walks, self._tviews)
            self._check_stale_walk(st, va, r)
        else:
            r = walk(self._read_desc, st.cfg, va, walks, self._tviews)
        if r[0]:
            return r[0]
        return tlb.insert(va, r[2], r[3], r[4], r[1], r[5])

    def _check_stale_walk(self, st: AsSlot, va: int, r: tuple[int, ...]) -> None:
        """Strict mode, TLB miss through a walk-cache entry: compare with a fresh walk."""
        now = walk(self._read_u64, st.cfg, va)
        if now[:6] != r[:6]:
            st.tlb.stale_hits += 1
            self.stats["stale_hits"] += 1
            log.warning(
                "AS%d: stale walk-cache entry for VA %#x: cached tables give %s, tables give %s "
                "(page tables changed without LOCK/UNLOCK or UPDATE)",
                st.nr, va,
                f"fault {r[0]:#x}" if r[0] else f"PA {r[2] + (va & (r[3] - 1)):#x} perm {r[4]}",
                f"fault {now[0]:#x}" if now[0] else f"PA {now[2] + (va & (now[3] - 1)):#x} "
                f"perm {now[4]}",
            )

    def _check_stale(self, st: AsSlot, va: int, e: tuple[int, ...]) -> None:
        r = walk(self._read_u64, st.cfg, va)
        now = None if r[0] else (r[2] + ((va & (r[3] - 1)) & ~_PAGE_MASK), r[4], r[1], r[3])
        if now != (e[0], e[1], e[2], e[4]):
            st.tlb.stale_hits += 1
            self.stats["stale_hits"] += 1
            log.warning(
                "AS%d: stale TLB entry for VA %#x: TLB gives PA %#x perm %d, tables give %s "
                "(page tables changed without LOCK/UNLOCK or UPDATE)",
                st.nr, va, e[0] | (va & _PAGE_MASK), e[1],
                "a fault" if now is None else f"PA {now[0] | (va & _PAGE_MASK):#x} perm {now[1]}",
            )

    def _page(self, st: AsSlot, va: int, access: int, report: bool) -> memoryview | int | MmuFault:
        """Translate ``va``'s page for a GPU access: the fault, else the view of the guest page
        it maps (indexed for the hit fast path), else (no view: not a SparseRam, or no RAM
        there) the PA of ``va``."""
        r = self._lookup(st, va)
        if r.__class__ is int:
            return self._fault(st, st.nr, va, access, r, report)
        e: TlbEntry = r  # type: ignore[assignment]  # int returned above; a class test narrows no non-final type
        perm = e[1]
        if NEED[access] & ~perm:
            return self._fault(st, st.nr, va, access, exc.PERM_FAULT + e[2], report)
        page = e[0]
        v = self._views.get(page)
        if v is None:
            v = self._page_view(page)
        if v:
            if not self._strict:
                vpn = va >> PAGE_SHIFT
                tlb = st.tlb
                if perm & PERM_R:
                    tlb.rviews[vpn] = v
                if perm & PERM_W:
                    tlb.wviews[vpn] = v
            return v
        return page | (va & _PAGE_MASK)

    def _fill(self, tlb: Tlb, as_nr: int, va: int, need: int) -> memoryview | None:
        """The fast path's TLB miss (non-strict MMU): :func:`walk_fast`, then the entry and
        the page's views, and the view; ``need`` is the PERM_* the access needs. None (nothing
        counted, nothing inserted) when the general path must decide: a cached block or an
        entry without a view, a walk walk_fast leaves to walk(), a permission fault, a page
        with no view."""
        vpn = va >> 12
        if tlb.blocks or vpn in tlb.entries:
            return None
        st = self._slots[as_nr]
        assert st is not None  # self._fast holds present slots only
        r = walk_fast(self._tviews.get, st.cfg, va, tlb.walks)
        if r is None:
            return None
        perm = r[4]
        if need & ~perm:
            return None
        page = r[2]
        v = self._views.get(page)
        if v is None:
            v = self._page_view(page)
        if not v:
            return None
        tlb.misses += 1
        entries = tlb.entries
        if len(entries) >= tlb.capacity:
            tlb.insert(va, page, 4096, perm, 3, r[5])  # evicts the oldest first
        else:  # Tlb.insert for a page, inline
            entries[vpn] = (page, perm, 3, va & ~0xFFF, 4096, r[5])
        tlb.rviews[vpn] = v  # walk_fast walks AArch64 tables only: every leaf is readable
        if perm & 1:  # PERM_W
            tlb.wviews[vpn] = v
        return v

    def translate(self, as_nr: int, va: int, access: Access) -> Translation | MmuFault:
        """What the GPU would use for ``va``: the TLB (filled on a miss, so possibly stale, as on
        hardware) else a walk. Never touches registers or MMU_INT."""
        st = self.slot(as_nr)
        if st is None:
            return self._fault(None, as_nr, va, access, exc.TRANSLATION_FAULT, False)
        r = self._lookup(st, va)
        if r.__class__ is int:
            return self._fault(st, as_nr, va, access, r, False)
        pa, perm, level, _, _, attr = r  # type: ignore[misc]  # int returned above; a class test narrows no non-final type
        if NEED[access] & ~perm:
            return self._fault(st, as_nr, va, access, exc.PERM_FAULT + level, False)
        return Translation(pa | (va & _PAGE_MASK), bool(perm & PERM_W), bool(perm & PERM_X),
                           attr, level, bool(perm & PERM_R))

    # -- accesses -------------------------------------------------------------------------------
    # The public accessors start with a TLB-hit fast path: a non-strict MMU, an access inside one
    # page whose TLB entry allows it and whose guest page has a cached view. It does exactly what
    # the general path does in that case (count the hit, copy the bytes) without building
    # anything. Everything else (misses, faults, page-crossing, strict mode) takes the general
    # path. Literal 12 / 0xFFF / 4096 are PAGE_SHIFT / _PAGE_MASK / PAGE_SIZE.
    def read(
        self, as_nr: int, va: int, size: int, access: Access = Access.READ, *, report: bool = True
    ) -> bytes | MmuFault:
        """A GPU read of ``size`` bytes at ``va``; split per page, each page translated."""
        if access == 2:  # READ
            tlb = self._fast.get(as_nr)
            if tlb is not None:
                off = va & 0xFFF
                if 0 < size <= 4096 - off:
                    v = tlb.rviews.get(va >> 12)
                    if v is not None:
                        tlb.hits += 1
                        return v[off : off + size].tobytes()
                    v = self._fill(tlb, as_nr, va, 4)  # PERM_R
                    if v is not None:
                        return v[off : off + size].tobytes()
        return self._read(as_nr, va, size, access, report)

    def _read(
        self, as_nr: int, va: int, size: int, access: Access, report: bool
    ) -> bytes | MmuFault:
        st = self._slots[as_nr] if 0 <= as_nr < 16 else None  # regs.MAX_AS
        if st is None:
            return self._fault(None, as_nr, va, access, exc.TRANSLATION_FAULT, report)
        if size <= 0:
            return b""
        off = va & _PAGE_MASK
        if off + size <= PAGE_SIZE:
            p = self._page(st, va, access, report)
            if type(p) is memoryview:
                return p[off : off + size].tobytes()
            if type(p) is MmuFault:
                return p
            try:
                return self.mem.read(p, size)
            except BusError:
                return self._fault(st, as_nr, va, access, exc.GPU_BUS_FAULT, report, p)
        out = bytearray()
        end = va + size
        cur = va
        while cur < end:
            off = cur & _PAGE_MASK
            n = min(PAGE_SIZE - off, end - cur)
            p = self._page(st, cur, access, report)
            if type(p) is memoryview:
                out += p[off : off + n]
            elif type(p) is MmuFault:
                return p
            else:
                try:
                    out += self.mem.read(p, n)
                except BusError:
                    return self._fault(st, as_nr, cur, access, exc.GPU_BUS_FAULT, report, p)
            cur += n
        return bytes(out)

    def write(
        self, as_nr: int, va: int, data: bytes | bytearray | memoryview, *, report: bool = True
    ) -> MmuFault | None:
        """A GPU write. Every page is translated before any byte is stored, so a translation
        fault writes nothing; a bus error part-way leaves the earlier pages written."""
        tlb = self._fast.get(as_nr)
        if tlb is not None:
            off = va & 0xFFF
            n = len(data)
            if 0 < n <= 4096 - off:
                v = tlb.wviews.get(va >> 12)
                if v is not None:
                    tlb.hits += 1
                    v[off : off + n] = data
                    return None
                v = self._fill(tlb, as_nr, va, 1)  # PERM_W
                if v is not None:
                    v[off : off + n] = data
                    return None
        return self._write(as_nr, va, data, report)

    def _write(
        self, as_nr: int, va: int, data: bytes | bytearray | memoryview, report: bool
    ) -> MmuFault | None:
        st = self._slots[as_nr] if 0 <= as_nr < 16 else None  # regs.MAX_AS
        w = Access.WRITE
        if st is None:
            return self._fault(None, as_nr, va, w, exc.TRANSLATION_FAULT, report)
        size = len(data)
        if size == 0:
            return None
        off = va & _PAGE_MASK
        if off + size <= PAGE_SIZE:
            p = self._page(st, va, w, report)
            if type(p) is memoryview:
                p[off : off + size] = data
                return None
            if type(p) is MmuFault:
                return p
            try:
                self.mem.write(p, data)
            except BusError:
                return self._fault(st, as_nr, va, w, exc.GPU_BUS_FAULT, report, p)
            return None
        chunks: list[tuple[int, memoryview | int, int]] = []
        end = va + size
        cur = va
        while cur < end:
            n = min(PAGE_SIZE - (cur & _PAGE_MASK), end - cur)
            p = self._page(st, cur, w, report)
            if type(p) is MmuFault:
                return p
            chunks.append((cur, p, n))
            cur += n
        view = memoryview(data).cast("B")
        for cva, p, n in chunks:
            off = cva - va
            if type(p) is memoryview:
                poff = cva & _PAGE_MASK
                p[poff : poff + n] = view[off : off + n]
                continue
            try:
                self.mem.write(p, view[off : off + n])
            except BusError:
                return self._fault(st, as_nr, cva, w, exc.GPU_BUS_FAULT, report, p)
        return None

    def read_u32(
        self, as_nr: int, va: int, access: Access = Access.READ, *, report: bool = True
    ) -> int | MmuFault:
        if access == 2:  # READ
            tlb = self._fast.get(as_nr)
            if tlb is not None:
                off = va & 0xFFF
                if off <= 4092:
                    v = tlb.rviews.get(va >> 12)
                    if v is not None:
                        tlb.hits += 1
                        return _U32_UNPACK(v, off)[0]
                    v = self._fill(tlb, as_nr, va, 4)  # PERM_R
                    if v is not None:
                        return _U32_UNPACK(v, off)[0]
        r = self._read(as_nr, va, 4, access, report)
        if type(r) is MmuFault:
            return r
        return _U32.unpack(r)[0]

    def read_u64(
        self, as_nr: int, va: int, access: Access = Access.READ, *, report: bool = True
    ) -> int | MmuFault:
        if access == 2:  # READ
            tlb = self._fast.get(as_nr)
            if tlb is not None:
                off = va & 0xFFF
                if off <= 4088:
                    v = tlb.rviews.get(va >> 12)
                    if v is not None:
                        tlb.hits += 1
                        return _U64_UNPACK(v, off)[0]
                    v = self._fill(tlb, as_nr, va, 4)  # PERM_R
                    if v is not None:
                        return _U64_UNPACK(v, off)[0]
        r = self._read(as_nr, va, 8, access, report)
        if type(r) is MmuFault:
            return r
        return _U64.unpack(r)[0]

    def write_u32(self, as_nr: int, va: int, value: int, *, report: bool = True) -> MmuFault | None:
        return self.write(as_nr, va, _U32.pack(value & _M32), report=report)

    def write_u64(self, as_nr: int, va: int, value: int, *, report: bool = True) -> MmuFault | None:
        return self.write(as_nr, va, _U64.pack(value & _M64), report=report)

    def lock_stalls(self, as_nr: int, va: int, size: int) -> bool:
        """A GPU access to [va, va+size) in ``as_nr`` overlaps a region locked by AS_COMMAND
        LOCK: on hardware it stalls until UNLOCK (or FLUSH_PT/FLUSH_MEM) ends the lock, so
        the driver can rewrite those page tables atomically (docs/mmu.md, "Lock regions")."""
        if not self.locked_ases >> as_nr & 1:
            return False
        st = self._slots[as_nr]
        if st is None:
            return False
        end = va + size
        return any(base < end and va < base + rsize for base, rsize in st.locked)

    def binding(self, as_nr: int) -> AsBinding:
        """The slot's latched configuration and restart count (an absent slot is disabled)."""
        st = self.slot(as_nr)
        if st is None:
            return AsBinding(False, 0, 0)
        cfg = st.cfg
        return AsBinding(cfg.enabled, cfg.transtab,
                         sum(st.commands[c] for c in RESTART_COMMANDS))

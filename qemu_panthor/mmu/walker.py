"""ARM VMSAv8-64 stage-1 translation-table walk, 4 KiB granule (reference §5.3).

Models what the Mali MMU does on a TLB miss: starting at the latched AS_TRANSTAB, read one
64-bit little-endian descriptor per level through the bus (:class:`~qemu_panthor.memory.PhysMem`)
and either reach a page/block or stop with the fault code the hardware reports.

Fault priority follows the ARM ARM: input-address size, then per level (bus error on the
descriptor read, translation fault, output-address size of a next-table address), then at
the leaf: output-address size, access flag. Permission checks depend on the access type and
are done by the caller (:func:`perm_fault`), so a successful walk can be cached.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from .. import exceptions as exc
from ..memory import BusError
from . import regs

OA_MASK = 0x0000_FFFF_FFFF_F000  # descriptor output address [47:12]
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
MAX_HW_BITS = 48  # 4 KiB granule without LPA2: at most 48-bit VA and OA

# Descriptor bits (§5.2).
DESC_VALID = 1 << 0
DESC_TABLE = 1 << 1  # table (L0-L2) / page (L3) when set; block (L1, L2) when clear
ATTR_INDX_SHIFT = 2
AP_UNPRIV = 1 << 6  # AP[1]: no effect for the GPU
AP_RDONLY = 1 << 7  # AP[2]
AF = 1 << 10
NG = 1 << 11
XN_BITS = (1 << 53) | (1 << 54)  # PXN | UXN: either forbids execution
# Hierarchical attributes in table descriptors (panthor writes none of them).
PXN_TABLE = 1 << 59
UXN_TABLE = 1 << 60
AP_TABLE_RDONLY = 1 << 62  # APTable[1]

# Mali LPAE (legacy mode) leaf bits: HAP read / write permissions, execute-never.
LPAE_HAP_READ = 1 << 6
LPAE_HAP_WRITE = 1 << 7
LPAE_XN = 1 << 54

#: perm bits of a successful walk (an AArch64 leaf always allows reads)
PERM_W = 1
PERM_X = 2
PERM_R = 4

#: perm bits an access needs, indexed by Access (ATOMIC, EXECUTE, READ, WRITE)
NEED = (PERM_R | PERM_W, PERM_X, PERM_R, PERM_W)

_TABLE_READ = struct.Struct("<512Q")
_AARCH64_4K = int(regs.AdrMode.AARCH64_4K)
_IDENTITY = int(regs.AdrMode.IDENTITY)
_LEGACY = regs.ADRMODE_LEGACY
#: walk cache (``Tlb.walks``): one entry per L2 descriptor (2 MiB of VA), at most this many
WALK_SHIFT = 21
WALK_CACHE_CAPACITY = 1 << 12
_WALK_SHIFT = WALK_SHIFT
_WALK_CAP = WALK_CACHE_CAPACITY
#: In a page-view cache: "this page is not wholly inside one RAM region" (falsy, like None).
NO_VIEW = memoryview(b"")
#: output-address mask of a leaf at each level (block/page aligned)
_OA_MASK_AT = tuple(OA_MASK & ~((1 << (PAGE_SHIFT + 9 * (3 - lvl))) - 1) for lvl in range(4))
# hierarchical table bits as kept in the walk's ``tattr`` (descriptor bits [63:59])
_T_XN = (PXN_TABLE | UXN_TABLE) >> 59
_T_AP_RDONLY = AP_TABLE_RDONLY >> 59


class WalkConfig:
    """The translation configuration an AS_COMMAND UPDATE latched (TRANSTAB/TRANSCFG/MEMATTR),
    pre-decoded for the walk."""

    __slots__ = (
        "adrmode",
        "check_af",
        "fast",
        "hier_ap",
        "lpae",
        "memattr",
        "oa_over",
        "pa_bits",
        "start_level",
        "start_mask",
        "start_shift",
        "table",
        "transcfg",
        "transtab",
        "va_bits",
        "wxn",
    )

    def __init__(
        self, transtab: int, transcfg: int, memattr: int, *, hw_va_bits: int, hw_pa_bits: int,
        legacy: bool = False,
    ) -> None:
        self.transtab = transtab
        self.transcfg = transcfg
        self.memattr = memattr
        self.adrmode = transcfg & regs.TRANSCFG_ADRMODE_MASK
        #: the Mali LPAE mode from TRANSTAB[1:0] when this GPU has the legacy format (JM parts)
        #: and TRANSCFG selects it; None otherwise (ADRMODE 0 is then reserved: unmapped)
        self.lpae: int | None = (
            transtab & regs.TRANSTAB_LPAE_MODE_MASK
            if legacy and self.adrmode == _LEGACY else None
        )
        # INA_BITS larger than the hardware supports is clamped to the hardware VA size. The
        # legacy format has no INA_BITS and its tables always have four levels: a 48-bit VA
        # is walked whatever MMU_FEATURES says (inferred; see docs/mmu.md).
        self.va_bits = (MAX_HW_BITS if self.lpae is not None
                        else min(regs.transcfg_va_bits(transcfg), hw_va_bits, MAX_HW_BITS))
        self.pa_bits = min(hw_pa_bits, MAX_HW_BITS)
        levels = 4 if self.lpae is not None else -(-(self.va_bits - PAGE_SHIFT) // 9)
        self.start_level = 4 - levels
        self.start_shift = PAGE_SHIFT + 9 * (3 - self.start_level)
        self.start_mask = (0x1FF if self.lpae is not None
                           else (1 << (self.va_bits - self.start_shift)) - 1)
        self.table = transtab & ~(PAGE_SIZE - 1) & 0xFFFF_FFFF_FFFF_FFFF
        self.check_af = not transcfg & regs.TRANSCFG_DISABLE_AF_FAULT
        self.hier_ap = not transcfg & regs.TRANSCFG_DISABLE_HIER_AP
        self.wxn = bool(transcfg & regs.TRANSCFG_WXN)
        #: descriptor bits [47:pa_bits]: an output or next-table address too large (OA size)
        self.oa_over = OA_MASK & ~((1 << self.pa_bits) - 1)
        #: walk_fast() applies: 4 KiB granule, 48-bit VA (a walk from L0), a TRANSTAB inside
        #: the output-address size
        self.fast = (self.adrmode == _AARCH64_4K and self.va_bits == 48
                     and not self.table >> self.pa_bits)

    @property
    def mode_name(self) -> str:
        """The latched mode for introspection: an AdrMode name, LEGACY_<LpaeMode> on a JM
        part, RESERVED_<n> otherwise."""
        if self.lpae is not None:
            try:
                return f"LEGACY_{regs.LpaeMode(self.lpae).name}"
            except ValueError:
                return f"LEGACY_RESERVED_{self.lpae}"
        try:
            return regs.AdrMode(self.adrmode).name
        except ValueError:
            return f"RESERVED_{self.adrmode}"

    @property
    def enabled(self) -> bool:
        """The configuration is not UNMAPPED (a reserved CSF mode counts as enabled: it
        faults every access, as a translating mode that maps nothing would)."""
        if self.lpae is not None:
            return self.lpae in (regs.LpaeMode.TABLE, regs.LpaeMode.IDENTITY)
        return self.adrmode != regs.AdrMode.UNMAPPED

    @property
    def start_entries(self) -> int:
        return self.start_mask + 1


#: walk() result: (code, level, oa, size, perm, attr_index, desc). code 0 is success, otherwise
#: the exception type raised at ``level``. ``oa`` is the output address of the page/block
#: containing the VA (size-aligned), ``size`` 4 KiB / 2 MiB / 1 GiB, ``desc`` the leaf
#: descriptor. A plain tuple: this is the TLB-miss path.
WalkResult = tuple[int, int, int, int, int, int, int]


def _fault(code: int, level: int) -> WalkResult:
    return (code, level, 0, 0, 0, 0, 0)


def walk(
    read_u64: Callable[[int], int],
    cfg: WalkConfig,
    va: int,
    wc: dict[int, tuple[int, int]] | None = None,
    tviews: dict[int, memoryview] | None = None,
) -> WalkResult:
    """Translate ``va`` with ``cfg``, reading descriptors with ``read_u64`` (raises BusError
    outside RAM). Never raises; hostile tables terminate within 4 descriptor reads.

    ``wc`` is the AS's walk cache (``Tlb.walks``): if it holds ``va``'s 2 MiB region the walk
    starts at that L3 table; a walk that reaches an L3 table through an L2 table descriptor
    records it there if the walk succeeds (like the TLB, the walk cache never holds anything a
    faulting walk read), bounded by WALK_CACHE_CAPACITY, oldest first.
    ``tviews`` maps a 4 KiB-aligned PA to that page as 512 native 64-bit words (the MMU's
    table-view cache, filled by its ``read_u64`` on little-endian hosts only): a table found
    there is indexed directly (:data:`NO_VIEW`: none), any other read through ``read_u64``."""
    # A walk-cache entry exists only for a 2 MiB region a successful AARCH64_4K walk with this
    # configuration went through (UPDATE empties the cache), so the mode and VA-size checks
    # below already passed for every VA of it.
    hit = None if wc is None else wc.get(va >> _WALK_SHIFT)
    if hit is not None:
        pa_bits = cfg.pa_bits
        table, tattr = hit
        lvl = 3
        shift = PAGE_SHIFT
        idx = (va >> PAGE_SHIFT) & 0x1FF
        wc = None  # nothing to record
    else:
        mode = cfg.adrmode
        if mode != _AARCH64_4K:
            if cfg.lpae is not None:
                return _walk_lpae(read_u64, cfg, va)
            if mode == _IDENTITY:
                if va < 0 or va >> cfg.pa_bits:
                    return _fault(exc.ADDR_SIZE_FAULT_OUT, 0)
                return (0, 0, va & ~(PAGE_SIZE - 1), PAGE_SIZE, PERM_R | PERM_W | PERM_X, 0, 0)
            # UNMAPPED, the reset value 0, AARCH64_64K (not modelled) and reserved modes.
            return _fault(exc.TRANSLATION_FAULT, 0)
        if va < 0 or va >> cfg.va_bits:
            return _fault(exc.ADDR_SIZE_FAULT_IN, 0)
        pa_bits = cfg.pa_bits
        table = cfg.table
        if table >> pa_bits:
            return _fault(exc.ADDR_SIZE_FAULT_OUT, 0)  # TTBR address size: level 0
        lvl = cfg.start_level
        shift = cfg.start_shift
        idx = (va >> shift) & cfg.start_mask
        tattr = 0  # table descriptor bits [63:59], OR-ed down the walk
    # The loop is the TLB-miss hot path: bit values are literals (DESC_VALID | DESC_TABLE = 3,
    # OA_MASK = 0xFFFF_FFFF_F000), checked against the named constants in the unit tests.
    get_view = _no_views if tviews is None else tviews.get
    while True:
        v = get_view(table)
        if v:
            desc = v[idx]
        else:
            try:
                desc = read_u64(table + (idx << 3))
            except BusError:
                return _fault(exc.TRANSTAB_BUS_FAULT + lvl, lvl)
        if desc & 3 == 3:
            if lvl == 3:
                break  # page
            table = desc & 0xFFFF_FFFF_F000
            if table >> pa_bits:
                return _fault(exc.ADDR_SIZE_FAULT_OUT + lvl, lvl)
            tattr |= desc >> 59
            lvl += 1
            shift -= 9
            idx = (va >> shift) & 0x1FF
            continue
        if not desc & 1:
            return _fault(exc.TRANSLATION_FAULT + lvl, lvl)
        if lvl == 0 or lvl == 3:
            # Block at L0 (4 KiB granule) / reserved encoding at L3.
            return _fault(exc.TRANSLATION_FAULT + lvl, lvl)
        break  # block at L1 (1 GiB) or L2 (2 MiB)
    oa = desc & _OA_MASK_AT[lvl]
    if oa >> pa_bits:
        return _fault(exc.ADDR_SIZE_FAULT_OUT + lvl, lvl)
    if not desc & 0x400 and cfg.check_af:  # AF
        return _fault(exc.ACCESS_FLAG + lvl, lvl)
    if tattr or desc & 0x0060_0000_0000_0080 or cfg.wxn:  # any of AP[2], PXN, UXN
        perm = _leaf_perm(desc, tattr, cfg)
    else:
        perm = 7  # PERM_R | PERM_W | PERM_X
    if wc is not None and lvl == 3 and cfg.start_level < 3:
        # reached L3 through an L2 table descriptor: ``table`` is that L3 table
        if len(wc) >= _WALK_CAP:
            del wc[next(iter(wc))]
        wc[va >> _WALK_SHIFT] = (table, tattr)
    return (0, lvl, oa, 1 << shift, perm, (desc & 0x1C) >> ATTR_INDX_SHIFT, desc)


def walk_fast(
    get: Callable[[int], memoryview | None],
    cfg: WalkConfig,
    va: int,
    wc: dict[int, tuple[int, int]],
) -> WalkResult | None:
    """The common TLB miss in one pass: a 48-bit VA walked from L0 to a 4 KiB page through
    tables whose table views ``get`` has (``Mmu._tviews.get``), none of them with hierarchical
    attribute bits, every descriptor valid and inside the output-address size, the leaf's
    access flag set. The result is what :func:`walk` gives for it, walk cache included (the
    unit tests compare the two on hostile tables). Anything else: None, and the caller walks
    with :func:`walk`, which reports the fault or resolves the block."""
    if not cfg.fast or va >> 48 or va < 0:
        return None
    over = cfg.oa_over
    hit = wc.get(va >> 21)
    if hit is None:
        t = get(cfg.table)
        if not t:
            return None
        d0 = t[(va >> 39) & 0x1FF]
        if d0 & 3 != 3:
            return None
        t = get(d0 & 0xFFFF_FFFF_F000)
        if not t:
            return None
        d1 = t[(va >> 30) & 0x1FF]
        if d1 & 3 != 3:
            return None
        t = get(d1 & 0xFFFF_FFFF_F000)
        if not t:
            return None
        d = t[(va >> 21) & 0x1FF]
        # table descriptors: valid tables inside the OA size, no hierarchical attributes
        # (a view found for a too-large address is RAM above PA_BITS: walk() faults it)
        tds = d0 | d1 | d
        if d & 3 != 3 or tds & over or tds >> 59:
            return None
        table = d & 0xFFFF_FFFF_F000
    else:
        table, tattr = hit
        if tattr:
            return None
    t = get(table)
    if not t:
        return None
    d = t[(va >> 12) & 0x1FF]
    if d & 3 != 3 or d & over or not (d & 0x400 or not cfg.check_af):
        return None
    perm = _leaf_perm(d, 0, cfg) if d & 0x0060_0000_0000_0080 or cfg.wxn else 7
    if hit is None:
        if len(wc) >= _WALK_CAP:
            del wc[next(iter(wc))]
        wc[va >> 21] = (table, 0)
    return (0, 3, d & 0xFFFF_FFFF_F000, 4096, perm, (d & 0x1C) >> 2, d)


def _walk_lpae(read_u64: Callable[[int], int], cfg: WalkConfig, va: int) -> WalkResult:
    """The legacy Mali LPAE format (ADRMODE LEGACY; docs/mmu.md "Legacy LPAE format"):
    TRANSTAB[1:0] selects unmapped / identity / table. Tables: always four levels from L0
    (panfrost's io-pgtable builds a full 4-level table whatever the VA size), ``[1:0]`` 3 a
    next-level table at L0-L2, 1 a leaf at L1-L3 (a 4 KiB page at L3 is type 1, not 3),
    anything else a translation fault (type 3 at L3 and type 1 at L0 inferred as such).
    Permissions from HAP (bit 6 read, bit 7 write) and XN (bit 54); no access flag and no
    hierarchical table attributes."""
    mode = cfg.lpae
    if mode != regs.LpaeMode.TABLE:
        if mode == regs.LpaeMode.IDENTITY:
            if va < 0 or va >> cfg.pa_bits:
                return _fault(exc.ADDR_SIZE_FAULT_OUT, 0)
            return (0, 0, va & ~(PAGE_SIZE - 1), PAGE_SIZE, PERM_R | PERM_W | PERM_X, 0, 0)
        return _fault(exc.TRANSLATION_FAULT, 0)  # UNMAPPED and the reserved mode 1
    if va < 0 or va >> cfg.va_bits:
        return _fault(exc.ADDR_SIZE_FAULT_IN, 0)
    pa_bits = cfg.pa_bits
    table = cfg.table
    if table >> pa_bits:
        return _fault(exc.ADDR_SIZE_FAULT_OUT, 0)
    shift = 39
    for lvl in range(4):
        idx = (va >> shift) & 0x1FF
        try:
            desc = read_u64(table + (idx << 3))
        except BusError:
            return _fault(exc.TRANSTAB_BUS_FAULT + lvl, lvl)
        kind = desc & 3
        if kind == 3 and lvl < 3:
            table = desc & OA_MASK
            if table >> pa_bits:
                return _fault(exc.ADDR_SIZE_FAULT_OUT + lvl, lvl)
            shift -= 9
            continue
        if kind != 1 or lvl == 0:
            return _fault(exc.TRANSLATION_FAULT + lvl, lvl)
        oa = desc & _OA_MASK_AT[lvl]
        if oa >> pa_bits:
            return _fault(exc.ADDR_SIZE_FAULT_OUT + lvl, lvl)
        return (0, lvl, oa, 1 << shift, _lpae_perm(desc), (desc & 0x1C) >> ATTR_INDX_SHIFT,
                desc)
    raise AssertionError("unreachable: level 3 returns")


def _lpae_perm(desc: int) -> int:
    """PERM_* of a Mali LPAE leaf: HAP read / write, XN."""
    return ((PERM_R if desc & LPAE_HAP_READ else 0) | (PERM_W if desc & LPAE_HAP_WRITE else 0)
            | (0 if desc & LPAE_XN else PERM_X))


def _leaf_perm(desc: int, tattr: int, cfg: WalkConfig) -> int:
    """PERM_* of a leaf with read-only or execute-never bits, here or in the tables above."""
    perm = PERM_R | PERM_W | PERM_X
    if desc & AP_RDONLY or (tattr & _T_AP_RDONLY and cfg.hier_ap):
        perm = PERM_R | PERM_X
    if desc & XN_BITS or (tattr & _T_XN and cfg.hier_ap) or (cfg.wxn and perm & PERM_W):
        perm &= ~PERM_X
    return perm


def _no_views(_pa: int) -> None:
    return None


def perm_fault(perm: int, level: int, access: int) -> int:
    """Exception code for ``access`` against a translation with ``perm``; 0 if allowed."""
    if NEED[access] & ~perm:
        return exc.PERM_FAULT + level
    return 0


class Leaf(NamedTuple):
    va: int
    oa: int
    size: int
    perm: int
    attr_index: int
    af: bool
    level: int


def collect_leaves(
    read: Callable[[int, int], bytes], cfg: WalkConfig, max_entries: int
) -> tuple[list[Leaf], bool]:
    """Every valid leaf of the table tree in VA order, and whether the walk was cut short after
    reading ``max_entries`` descriptors (hostile or huge tables). Tables outside RAM and
    invalid descriptors are skipped; recursion depth is bounded by the 4 levels, so a table
    pointing at itself cannot loop."""
    leaves: list[Leaf] = []
    lpae = cfg.lpae is not None
    if lpae and cfg.lpae != regs.LpaeMode.TABLE:
        return leaves, False
    if (cfg.adrmode != regs.AdrMode.AARCH64_4K and not lpae) or cfg.table >> cfg.pa_bits:
        return leaves, False
    budget = max_entries
    truncated = False
    pa_bits = cfg.pa_bits

    def visit(table: int, lvl: int, va_base: int, n: int, tattr: int) -> None:
        nonlocal budget, truncated
        if budget < n:
            truncated = True
            return
        try:
            raw = read(table, n * 8)
        except BusError:
            return
        budget -= n
        descs = _TABLE_READ.unpack(raw) if n == 512 else struct.unpack(f"<{n}Q", raw)
        shift = PAGE_SHIFT + 9 * (3 - lvl)
        size = 1 << shift
        for i, desc in enumerate(descs):
            if not desc & DESC_VALID:
                continue
            va = va_base + (i << shift)
            if lpae:
                _lpae_leaf(desc, lvl, va, size, pa_bits, leaves, visit)
                if truncated:
                    return
                continue
            if desc & DESC_TABLE and lvl < 3:
                nxt = desc & OA_MASK
                if not nxt >> pa_bits:
                    visit(nxt, lvl + 1, va, 512, tattr | desc)
                    if truncated:
                        return
                continue
            if not desc & DESC_TABLE and lvl in (0, 3):
                continue
            oa = desc & OA_MASK & ~(size - 1)
            if oa >> pa_bits:
                continue
            perm = _leaf_perm(desc, tattr >> 59, cfg)
            leaves.append(
                Leaf(va, oa, size, perm, (desc >> ATTR_INDX_SHIFT) & 7, bool(desc & AF), lvl)
            )

    visit(cfg.table, cfg.start_level, 0, cfg.start_entries, 0)
    return leaves, truncated


def _lpae_leaf(desc: int, lvl: int, va: int, size: int, pa_bits: int, leaves: list[Leaf],
               visit: Callable[[int, int, int, int, int], None]) -> None:
    """collect_leaves() for one valid Mali LPAE descriptor: a table (visited) or a leaf, with
    the decode of :func:`_walk_lpae` (no access flag in this format: reported as set)."""
    if desc & 3 == 3 and lvl < 3:
        nxt = desc & OA_MASK
        if not nxt >> pa_bits:
            visit(nxt, lvl + 1, va, 512, 0)
        return
    if desc & 3 != 1 or lvl == 0:
        return
    oa = desc & OA_MASK & ~(size - 1)
    if oa >> pa_bits:
        return
    leaves.append(Leaf(va, oa, size, _lpae_perm(desc), (desc >> ATTR_INDX_SHIFT) & 7, True, lvl))

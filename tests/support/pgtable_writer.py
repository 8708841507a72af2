"""An independent ARM LPAE stage-1 page-table writer for tests (no qemu_panthor.mmu import).

Lays tables out the way Linux io-pgtable ``ARM_64_LPAE_S1`` does for panthor's configuration
(reference §5.1/§5.2): 4 KiB granule, ``levels = ceil((ias-12)/9)``, start level ``4-levels``,
leaf bits from ``arm_lpae_prot_to_pte`` (AttrIndx, AP[1] always 1, AP[2] for read-only, SH,
AF and nG always 1, XN = 3<<53 for NOEXEC), tables ``[1:0]=0b11``, blocks ``0b01``, pages
``0b11``; entries zeroed on unmap. ``pgsize_bitmap`` is 4K|2M by default (1G optional, for
walker tests). Partial unmap of a block either splits it like the pre-6.14 io-pgtable
``arm_lpae_split_blk_unmap`` (``split_blocks=True``) or is refused like 7.2's io-pgtable;
:meth:`LpaeWriter.unmap_widened` reproduces what panthor 7.2 does instead (unmap the whole
block, remap the parts that stay).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from qemu_panthor.memory import RamRegion, SparseRam

SZ_4K = 1 << 12
SZ_2M = 1 << 21
SZ_1G = 1 << 30

# IOMMU_* prot flags (include/linux/iommu.h)
IOMMU_READ = 1 << 0
IOMMU_WRITE = 1 << 1
IOMMU_CACHE = 1 << 2
IOMMU_NOEXEC = 1 << 3
IOMMU_MMIO = 1 << 4
IOMMU_PRIV = 1 << 5

# Descriptor fields, written from the reference table §5.2.
PTE_TYPE_TABLE = 0b11
PTE_TYPE_PAGE = 0b11
PTE_TYPE_BLOCK = 0b01
PTE_ATTRINDX_SHIFT = 2
ATTRINDX_NC, ATTRINDX_CACHE, ATTRINDX_DEV = 0, 1, 2
PTE_AP_UNPRIV = 1 << 6
PTE_AP_RDONLY = 1 << 7
PTE_SH_OS = 2 << 8
PTE_SH_IS = 3 << 8
PTE_AF = 1 << 10
PTE_NG = 1 << 11
PTE_XN = 3 << 53
PTE_ADDR_MASK = ((1 << 48) - 1) & ~(SZ_4K - 1)
# iopte_prot(): the attribute bits a block split carries over to the new entries.
PTE_ATTR_MASK = (0x3FF << 2) | PTE_XN | (1 << 51)

_Q = struct.Struct("<Q")


class WriterError(Exception):
    """An io-pgtable error return (-EEXIST, -ERANGE, -EINVAL...)."""


# ARM_MALI_LPAE (the legacy Mali format panfrost uses on Midgard/Bifrost): HAP permissions,
# no AF, leaves of block type at every level, a full 4-level table, the mode in TRANSTAB.
MALI_HAP_READ = 1 << 6
MALI_HAP_WRITE = 2 << 6
MALI_TTBR_ADRMODE_TABLE = 3
MALI_TTBR_READ_INNER = 1 << 2


def mali_prot_to_pte(prot: int) -> int:
    """arm_lpae_prot_to_pte() for ARM_MALI_LPAE: HAP bits, AttrIndx, SH_OS always (Mali's own
    shareability), XN for NOEXEC, no AF and no nG."""
    pte = 0
    if prot & IOMMU_READ:
        pte |= MALI_HAP_READ
    if prot & IOMMU_WRITE:
        pte |= MALI_HAP_WRITE
    if prot & IOMMU_MMIO:
        pte |= ATTRINDX_DEV << PTE_ATTRINDX_SHIFT
    elif prot & IOMMU_CACHE:
        pte |= ATTRINDX_CACHE << PTE_ATTRINDX_SHIFT
    pte |= PTE_SH_OS
    if prot & IOMMU_NOEXEC:
        pte |= PTE_XN
    return pte


def prot_to_pte(prot: int) -> int:
    """arm_lpae_prot_to_pte() for ARM_64_LPAE_S1, no quirks."""
    pte = PTE_NG
    if not prot & IOMMU_WRITE and prot & IOMMU_READ:
        pte |= PTE_AP_RDONLY
    if not prot & IOMMU_PRIV:
        pte |= PTE_AP_UNPRIV
    if prot & IOMMU_MMIO:
        pte |= ATTRINDX_DEV << PTE_ATTRINDX_SHIFT
    elif prot & IOMMU_CACHE:
        pte |= ATTRINDX_CACHE << PTE_ATTRINDX_SHIFT
    pte |= PTE_SH_IS if prot & IOMMU_CACHE else PTE_SH_OS
    if prot & IOMMU_NOEXEC:
        pte |= PTE_XN
    return pte | PTE_AF


class TableRam:
    """Guest RAM for tests: a SparseRam with one bytearray region and a table-page allocator."""

    def __init__(self, base: int = 0x8000_0000, size: int = 16 << 20, tables: int = 1 << 20):
        self.base = base
        self.size = size
        self.buf = bytearray(size)
        self.mem = SparseRam()
        self.mem.add(RamRegion(base, self.buf))
        # Table pages are allocated downward from the top `tables` bytes.
        self._next = base + size
        self._floor = base + size - tables
        self._free: list[int] = []

    def alloc_table(self) -> int:
        if self._free:
            pa = self._free.pop()
        else:
            if self._next - SZ_4K < self._floor:
                raise WriterError("out of page-table memory")
            self._next -= SZ_4K
            pa = self._next
        self.mem.write(pa, bytes(SZ_4K))  # tables are zeroed before use
        return pa

    def free_table(self, pa: int) -> None:
        self._free.append(pa)


@dataclass
class LpaeWriter:
    """The page tables of one VM, written into ``ram`` like io-pgtable does."""

    ram: TableRam
    ias: int = 48
    oas: int = 40
    pgsizes: tuple[int, ...] = (SZ_4K, SZ_2M)
    split_blocks: bool = True
    mali: bool = False  # ARM_MALI_LPAE instead of ARM_64_LPAE_S1

    def __post_init__(self) -> None:
        self.ias = min(self.ias, 48)  # arm_lpae_restrict_pgsizes clamps to 48 for 4K
        self.oas = min(self.oas, 48)
        # arm_mali_lpae_alloc_pgtable: "Mali seems to need a full 4-level table regardless
        # of IAS"
        self.levels = 4 if self.mali else -(-(self.ias - 12) // 9)
        self.start_level = 4 - self.levels
        self.pgd = self.ram.alloc_table()

    # -- geometry ---------------------------------------------------------------------------------
    @staticmethod
    def block_size(lvl: int) -> int:
        return 1 << (12 + 9 * (3 - lvl))

    def lvl_idx(self, va: int, lvl: int) -> int:
        shift = 12 + 9 * (3 - lvl)
        bits = 9 if lvl > self.start_level or self.mali else self.ias - shift
        return (va >> shift) & ((1 << bits) - 1)

    def _rd(self, pa: int) -> int:
        return self.ram.mem.read_u64(pa)

    def _wr(self, pa: int, v: int) -> None:
        self.ram.mem.write_u64(pa, v)

    @property
    def transtab(self) -> int:
        """AS_TRANSTAB: the pgd; for Mali LPAE with ADRMODE_TABLE and READ_INNER as panfrost
        writes it (arm_mali_lpae_alloc_pgtable's transtab)."""
        if self.mali:
            return self.pgd | MALI_TTBR_READ_INNER | MALI_TTBR_ADRMODE_TABLE
        return self.pgd

    # -- map ---------------------------------------------------------------------------------
    def _pgsize(self, va: int, pa: int, size: int) -> int:
        """iommu_pgsize(): the largest supported size that fits alignment and length."""
        for sz in sorted(self.pgsizes, reverse=True):
            if sz <= size and not (va | pa) & (sz - 1):
                return sz
        raise WriterError(f"no page size fits va={va:#x} pa={pa:#x} size={size:#x}")

    def map(self, va: int, pa: int, size: int, prot: int) -> None:
        """iommu_map(): map [va, va+size) -> pa with ``prot``; all-or-nothing."""
        if size <= 0 or (va | pa | size) & (SZ_4K - 1):
            raise WriterError("unaligned map")
        if va >> self.ias or (va + size - 1) >> self.ias:
            raise WriterError("-ERANGE: VA beyond ias")
        if pa >> self.oas or (pa + size - 1) >> self.oas:
            raise WriterError("-ERANGE: PA beyond oas")
        if not prot & (IOMMU_READ | IOMMU_WRITE):
            return  # io-pgtable: no access => nothing mapped
        done = 0
        try:
            while done < size:
                sz = self._pgsize(va + done, pa + done, size - done)
                self._map_one(va + done, pa + done, sz, prot)
                done += sz
        except WriterError:
            if done:
                self.unmap(va, done)  # iommu_map unwinds a partial map
            raise

    def _map_one(self, va: int, pa: int, size: int, prot: int) -> None:
        lvl = self.start_level
        table = self.pgd
        while True:
            ptep = table + 8 * self.lvl_idx(va, lvl)
            pte = self._rd(ptep)
            if size == self.block_size(lvl):
                if pte & 1 and (lvl == 3 or not pte & 2):
                    raise WriterError(f"-EEXIST: VA {va:#x} already mapped")
                if pte & 1:
                    # A table where a block goes: io-pgtable unmaps and frees it. This writer
                    # only does that for a table with nothing mapped below (what remains after
                    # unmapping every page of the range) and rejects a real overlap.
                    if self._tree_has_leaf(pte & PTE_ADDR_MASK, lvl + 1):
                        raise WriterError(f"-EEXIST: VA {va:#x} overlaps existing mappings")
                    self._free_tree(pte & PTE_ADDR_MASK, lvl + 1)
                if self.mali:  # arm_lpae_init_pte: block type at every level for Mali
                    self._wr(ptep, pa | mali_prot_to_pte(prot) | PTE_TYPE_BLOCK)
                    return
                typ = PTE_TYPE_PAGE if lvl == 3 else PTE_TYPE_BLOCK
                self._wr(ptep, pa | prot_to_pte(prot) | typ)
                return
            if lvl == 3:
                raise WriterError("size does not match any level")
            if not pte & 1:
                nxt = self.ram.alloc_table()
                self._wr(ptep, nxt | PTE_TYPE_TABLE)
                table = nxt
            elif pte & 2:
                table = pte & PTE_ADDR_MASK
            else:
                raise WriterError(f"-EEXIST: VA {va:#x} inside a block")
            lvl += 1

    def _tree_has_leaf(self, table: int, lvl: int) -> bool:
        for i in range(512):
            pte = self._rd(table + 8 * i)
            if pte & 1 and (lvl == 3 or not pte & 2 or self._tree_has_leaf(pte & PTE_ADDR_MASK,
                                                                           lvl + 1)):
                return True
        return False

    def _free_tree(self, table: int, lvl: int) -> None:
        if lvl < 3:
            for i in range(512):
                pte = self._rd(table + 8 * i)
                if pte & 3 == 3:
                    self._free_tree(pte & PTE_ADDR_MASK, lvl + 1)
        self.ram.free_table(table)

    # -- unmap -------------------------------------------------------------------------------
    def unmap(self, va: int, size: int) -> int:
        """iommu_unmap(): returns the number of bytes unmapped (stops at a hole)."""
        done = 0
        while done < size:
            cur = va + done
            n = self._unmap_one(cur, size - done)
            if n == 0:
                break
            done += n
        return done

    def _leaf_at(self, va: int) -> tuple[int, int, int] | None:
        """(ptep, pte, level) of the leaf mapping va, or None."""
        lvl, table = self.start_level, self.pgd
        while True:
            ptep = table + 8 * self.lvl_idx(va, lvl)
            pte = self._rd(ptep)
            if not pte & 1:
                return None
            if lvl == 3 or not pte & 2:
                return ptep, pte, lvl
            table, lvl = pte & PTE_ADDR_MASK, lvl + 1

    def _unmap_one(self, va: int, remaining: int) -> int:
        """__arm_lpae_unmap() of one iommu_pgsize() chunk."""
        sz = self._pgsize(va, 0, remaining)
        lvl, table = self.start_level, self.pgd
        while True:
            ptep = table + 8 * self.lvl_idx(va, lvl)
            pte = self._rd(ptep)
            if not pte & 1:
                return 0
            if self.block_size(lvl) == sz:
                self._wr(ptep, 0)  # zero the entry; free a table hanging off it
                if lvl < 3 and pte & 2:
                    self._free_tree(pte & PTE_ADDR_MASK, lvl + 1)
                return sz
            if lvl < 3 and not pte & 2:  # partial unmap of a block
                if not self.split_blocks:
                    raise WriterError("partial unmap of a block (io-pgtable >= 6.14 refuses)")
                self._split_block(ptep, pte, lvl + 1)
                pte = self._rd(ptep)
            table, lvl = pte & PTE_ADDR_MASK, lvl + 1

    def _split_block(self, ptep: int, blk_pte: int, lvl: int) -> None:
        """arm_lpae_split_blk_unmap(): replace a block with a table of next-level entries
        covering the same range with the same attributes (the caller then unmaps inside it)."""
        split_sz = self.block_size(lvl)
        blk_pa = blk_pte & PTE_ADDR_MASK & ~(self.block_size(lvl - 1) - 1)
        prot = blk_pte & PTE_ATTR_MASK
        typ = PTE_TYPE_PAGE if lvl == 3 and not self.mali else PTE_TYPE_BLOCK
        tbl = self.ram.alloc_table()
        for i in range(512):
            self._wr(tbl + 8 * i, (blk_pa + i * split_sz) | prot | typ)
        self._wr(ptep, tbl | PTE_TYPE_TABLE)

    def unmap_widened(self, va: int, size: int) -> None:
        """What panthor 7.2 does for an unmap that cuts a 2 MiB block: unmap whole blocks and
        map back the parts outside [va, va+size) with the same attributes."""
        end = va + size
        keep: list[tuple[int, int, int, int]] = []
        blocks: dict[int, tuple[int, int, int]] = {}
        for edge in (va, end - 1):
            leaf = self._leaf_at(edge)
            if leaf is not None and leaf[2] < 3:
                bsz = self.block_size(leaf[2])
                blocks[edge & ~(bsz - 1)] = leaf
        for bva, leaf in blocks.items():
            bsz = self.block_size(leaf[2])
            bpa = leaf[1] & PTE_ADDR_MASK & ~(bsz - 1)
            if bva < va:
                keep.append((bva, bpa, va - bva, leaf[1]))
            if bva + bsz > end:
                keep.append((end, bpa + (end - bva), bva + bsz - end, leaf[1]))
        lo = min([va] + [k[0] for k in keep])
        hi = max([end] + [k[0] + k[2] for k in keep])
        self.unmap(lo, hi - lo)
        for kva, kpa, ksz, pte in keep:
            self.map(kva, kpa, ksz, mali_pte_to_prot(pte) if self.mali else pte_to_prot(pte))

    # -- inspection (used by tests as an oracle) -----------------------------------------------
    def lookup(self, va: int) -> tuple[int, int, int] | None:
        """(pa, pte, level) the tables map va to, or None."""
        leaf = self._leaf_at(va)
        if leaf is None:
            return None
        _, pte, lvl = leaf
        bsz = self.block_size(lvl)
        return (pte & PTE_ADDR_MASK & ~(bsz - 1)) | (va & (bsz - 1)), pte, lvl

    def missing_level(self, va: int) -> int | None:
        """Level of the first invalid entry on va's walk (None if va is mapped)."""
        lvl, table = self.start_level, self.pgd
        while True:
            pte = self._rd(table + 8 * self.lvl_idx(va, lvl))
            if not pte & 1:
                return lvl
            if lvl == 3 or not pte & 2:
                return None
            table, lvl = pte & PTE_ADDR_MASK, lvl + 1

    def pte_addr(self, va: int) -> int:
        """PA of the leaf descriptor that maps va (for hand edits in tests)."""
        leaf = self._leaf_at(va)
        if leaf is None:
            raise WriterError(f"VA {va:#x} not mapped")
        return leaf[0]

    def table_entry_addr(self, va: int, lvl: int) -> int:
        """PA of va's descriptor at level ``lvl`` (the tables above must exist)."""
        cur, table = self.start_level, self.pgd
        while cur < lvl:
            pte = self._rd(table + 8 * self.lvl_idx(va, cur))
            if pte & 3 != 3:
                raise WriterError(f"no table at level {cur + 1} for {va:#x}")
            table, cur = pte & PTE_ADDR_MASK, cur + 1
        return table + 8 * self.lvl_idx(va, lvl)


def mali_pte_to_prot(pte: int) -> int:
    """Inverse of mali_prot_to_pte."""
    prot = (IOMMU_READ if pte & MALI_HAP_READ else 0) | (IOMMU_WRITE if pte & MALI_HAP_WRITE else 0)
    return prot | _attr_prot(pte)


def pte_to_prot(pte: int) -> int:
    """Inverse of prot_to_pte for the bits panthor uses."""
    prot = IOMMU_READ
    if not pte & PTE_AP_RDONLY:
        prot |= IOMMU_WRITE
    return prot | _attr_prot(pte)


def _attr_prot(pte: int) -> int:
    """The prot flags of a leaf's AttrIndx and XN (both formats)."""
    prot = 0
    idx = (pte >> PTE_ATTRINDX_SHIFT) & 7
    if idx == ATTRINDX_CACHE:
        prot |= IOMMU_CACHE
    elif idx == ATTRINDX_DEV:
        prot |= IOMMU_MMIO
    if pte & PTE_XN:
        prot |= IOMMU_NOEXEC
    return prot

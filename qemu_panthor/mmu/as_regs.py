"""The MMU's per-AS register block (reference §5.3): AS_TRANSTAB / AS_MEMATTR / AS_TRANSCFG /
AS_LOCKADDR, the fault registers, AS_STATUS, and AS_COMMAND executed synchronously (UPDATE
latches the configuration the walker uses and flushes the TLB; LOCK records a region;
UNLOCK / FLUSH_PT / FLUSH_MEM invalidate it). MMU_INT is the shared IRQ block.

:class:`AsRegisters` is the register side of :class:`~.engine.Mmu` (which adds the GPU's
accesses through the slots and fault reporting); the attributes it names are the Mmu's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..irqblock import IRQ_BLOCK_SIZE, IRQ_CLEAR, IrqBlock
from . import regs
from .tlb import Tlb
from .walker import WalkConfig

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger(__name__)

_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF


class AsSlot:
    """One address space: its registers, the latched (UPDATE'd) walk config, lock and TLB."""

    __slots__ = (
        "bad_commands",
        "bus_faults",
        "cfg",
        "commands",
        "faultaddress",
        "faultextra",
        "faults",
        "faults_dropped",
        "faults_latched",
        "faultstatus",
        "last_table",
        "lockaddr",
        "locked",
        "memattr",
        "nr",
        "table_switches",
        "tlb",
        "transcfg",
        "transtab",
    )

    def __init__(self, nr: int, cfg: WalkConfig, tlb_capacity: int) -> None:
        self.nr = nr
        self.tlb = Tlb(tlb_capacity)
        self.commands = [0] * len(regs.AsCommand)
        self.bad_commands = 0
        self.faults = 0
        self.faults_latched = 0
        self.faults_dropped = 0
        self.bus_faults = 0  # CSF: reported as GPU faults, not latched in the AS
        #: UPDATEs latching a page table other than the last one served (kept across resets)
        self.table_switches = self.last_table = 0
        self.reset(cfg)

    def reset(self, cfg: WalkConfig) -> None:
        self.transtab = 0
        self.memattr = 0
        self.lockaddr = 0
        self.transcfg = 0
        self.faultstatus = 0
        self.faultaddress = 0
        self.faultextra = 0
        self.cfg = cfg
        self.locked: list[tuple[int, int]] = []
        self.tlb.flush()


class AsRegisters:
    """MMU_INT and the AS slots' registers and commands (mixed into :class:`~.engine.Mmu`)."""

    irq: IrqBlock
    as_present: int
    va_bits: int
    pa_bits: int
    legacy_lpae: bool
    on_as_update: Callable[[int], None] | None
    as_cmd_hook: Callable[[int, int], int] | None
    as_active: int
    as_hold: list[int]
    locked_ases: int
    tl: Timeline | None
    stats: dict[str, int]
    _slots: list[AsSlot | None]

    def _cfg(self, transtab: int, transcfg: int, memattr: int) -> WalkConfig:
        return WalkConfig(
            transtab, transcfg, memattr, hw_va_bits=self.va_bits, hw_pa_bits=self.pa_bits,
            legacy=self.legacy_lpae,
        )

    # -- registers ----------------------------------------------------------------------------
    def read32(self, off: int) -> int:
        if off < IRQ_BLOCK_SIZE and not off & 3 and off >= 0:
            return self.irq.read(off)
        st = self._reg_slot(off)
        if st is None:
            self.stats["unknown_reads"] += 1
            return 0
        reg = off & (regs.AS_STRIDE - 1)
        sh = (reg & 4) << 3
        base = reg & ~4
        if base == regs.AS_TRANSTAB:
            return (st.transtab >> sh) & _M32
        if base == regs.AS_MEMATTR:
            return (st.memattr >> sh) & _M32
        if base == regs.AS_LOCKADDR:
            return (st.lockaddr >> sh) & _M32
        if reg == regs.AS_FAULTSTATUS:
            return st.faultstatus
        if base == regs.AS_FAULTADDRESS:
            return (st.faultaddress >> sh) & _M32
        if base == regs.AS_TRANSCFG:
            return (st.transcfg >> sh) & _M32
        if base == regs.AS_FAULTEXTRA:
            return (st.faultextra >> sh) & _M32
        # AS_COMMAND is write-only; AS_STATUS: commands complete synchronously, never ACTIVE
        # (unless the test port made a command hang).
        if reg == regs.AS_STATUS:
            if not self.as_active >> st.nr & 1:
                return 0
            left = self.as_hold[st.nr]
            if left > 0:  # a hang that lasts a number of reads (one driver poll)
                self.as_hold[st.nr] = left - 1
                if left == 1:
                    self.as_active &= ~(1 << st.nr)
            return regs.AS_STATUS_AS_ACTIVE
        return 0

    def write32(self, off: int, value: int) -> None:
        value &= _M32
        if off < IRQ_BLOCK_SIZE and not off & 3 and off >= 0:
            before = self.irq.rawstat
            self.irq.write(off, value)
            if off == IRQ_CLEAR:
                cleared = before & ~self.irq.rawstat
                cleared = (cleared | cleared >> regs.MMU_INT_BUS_FAULT_SHIFT) & self.as_present
                for n in range(regs.MAX_AS):
                    if cleared >> n & 1:
                        self._notify(n)
            return
        st = self._reg_slot(off)
        if st is None:
            self.stats["unknown_writes"] += 1
            return
        reg = off & (regs.AS_STRIDE - 1)
        sh = (reg & 4) << 3
        base = reg & ~4
        keep = ~(_M32 << sh) & _M64
        if base == regs.AS_TRANSTAB:
            st.transtab = (st.transtab & keep) | value << sh
        elif base == regs.AS_MEMATTR:
            st.memattr = (st.memattr & keep) | value << sh
        elif base == regs.AS_LOCKADDR:
            st.lockaddr = (st.lockaddr & keep) | value << sh
        elif base == regs.AS_TRANSCFG:
            st.transcfg = (st.transcfg & keep) | value << sh
        elif reg == regs.AS_COMMAND:
            self._command(st, value)
        # FAULTSTATUS / FAULTADDRESS / STATUS / FAULTEXTRA are read-only.

    def _reg_slot(self, off: int) -> AsSlot | None:
        if off & 3 or not regs.AS_BASE <= off < regs.AS_END:
            return None
        return self._slots[(off - regs.AS_BASE) // regs.AS_STRIDE]

    def _command(self, st: AsSlot, cmd: int) -> None:
        if cmd >= len(regs.AsCommand):
            st.bad_commands += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("AS%d: unknown AS_COMMAND %#x ignored", st.nr, cmd)
            return
        if self.as_active or self.as_cmd_hook is not None:  # test port only
            if self.as_active >> st.nr & 1:
                return  # written while AS_ACTIVE: the MMU is wedged, the command is lost
            hold = self.as_cmd_hook(st.nr, cmd) if self.as_cmd_hook is not None else 0
            if hold:
                self.as_active |= 1 << st.nr  # hung: never executed, AS_ACTIVE stays set
                self.as_hold[st.nr] = hold
                return
        st.commands[cmd] += 1
        tl = self.tl
        if tl is not None:
            track = f"AS{st.nr}"
            if cmd == regs.AsCommand.LOCK:
                base, size = regs.decode_lock_region(st.lockaddr)
                tl.begin(track, "locked", base=base, size=size)
            elif cmd != regs.AsCommand.NOP and cmd != regs.AsCommand.UPDATE and st.locked:
                tl.end(track)
            tl.instant(track, regs.AsCommand(cmd).name)
        if cmd == regs.AsCommand.UPDATE:
            st.cfg = self._cfg(st.transtab, st.transcfg, st.memattr)
            st.tlb.flush()
            table = st.cfg.transtab if st.cfg.enabled else 0
            if table and table != st.last_table:
                st.table_switches += bool(st.last_table)  # the slot changed hands
                st.last_table = table
        elif cmd == regs.AsCommand.LOCK:
            st.locked.append(regs.decode_lock_region(st.lockaddr))
            self.locked_ases |= 1 << st.nr
            return
        elif cmd != regs.AsCommand.NOP:  # UNLOCK, FLUSH_PT, FLUSH_MEM
            # Invalidate what was locked and what AS_LOCKADDR names now (a driver may issue
            # UNLOCK with only LOCKADDR programmed); over-invalidating is always allowed.
            regions = [*st.locked, regs.decode_lock_region(st.lockaddr)]
            st.locked = []
            self.locked_ases &= ~(1 << st.nr)
            for base, size in regions:
                st.tlb.invalidate(base, size)
        else:
            return
        self._notify(st.nr)

    def _notify(self, as_nr: int) -> None:
        hook = self.on_as_update
        if hook is not None:
            try:
                hook(as_nr)
            except Exception:  # a waiter's bug must not escape into an MMIO write
                log.exception("on_as_update hook failed for AS%d", as_nr)

    def reset(self) -> None:
        """GPU reset: every AS register 0 (ADRMODE 0 behaves as UNMAPPED), TLBs and locks
        dropped, MMU_INT RAWSTAT and MASK cleared, hung commands (test port) abandoned."""
        self.as_active = 0
        self.locked_ases = 0
        for st in self._slots:
            if st is not None:
                st.reset(self._cfg(0, 0, 0))
        self.irq.reset()

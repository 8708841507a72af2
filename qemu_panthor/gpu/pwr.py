"""PWR_CONTROL of an arch 14 GPU (registers in :mod:`.pwr_regs`, behaviour as panthor 7.2's
panthor_pwr.c relies on it; inferences marked in docs/gpu.md "PWR_CONTROL"):

* per domain (L2, TILER, SHADER, BASE, STACK) PRESENT, READY, PWRTRANS and PWRACTIVE;
  commands complete inside the PWR_COMMAND write, so PWRTRANS and the PENDING flags of
  PWR_STATUS always read 0;
* a domain is under the host's control (its ALLOW flag) or delegated to the MCU (its
  DELEGATED flag): POWER_UP / POWER_DOWN act on host-controlled domains only (READY |= or
  &= ~ PWR_CMDARG & PRESENT, POWER_CHANGED_SINGLE when READY changed, POWER_CHANGED_ALL);
  DELEGATE hands a domain to the MCU (DELEGATION_CHANGED) and RETRACT takes it back
  (RETRACT_COMPLETED, DELEGATION_CHANGED); L2 is never delegated;
* a delegated domain's cores are powered by the firmware: READY is PRESENT while the MCU
  runs and 0 otherwise (an MCU that halts powers its domains down); a retracted domain keeps
  what the MCU left powered, for the host to power down;
* RESET_SOFT / RESET_FAST reset the GPU like GPU_CMD SOFT_RESET (every domain off, back
  under the host's control) and raise RESET_COMPLETED; INSPECT raises INSPECT_COMPLETED;
* a command on a domain the host does not control, or L2 delegated or retracted, raises
  COMMAND_NOT_ALLOWED and does nothing; an unknown command or domain COMMAND_INVALID.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Protocol

from ..irqblock import IRQ_BLOCK_SIZE, IrqBlock
from .models import GpuModel
from .pwr_regs import (
    DELEGATED_SHIFT,
    DOMAIN_REGS,
    PWR_CMDARG,
    PWR_COMMAND,
    PWR_INT_BASE,
    PWR_REGS,
    PWR_STATUS,
    PwrCommand,
    PwrDomain,
    PwrIrq,
    PwrStatus,
)

if TYPE_CHECKING:
    from ..timeline import Timeline

_M32 = 0xFFFF_FFFF
#: word offset -> (domain, register kind, high word)
_DOMAIN_WORDS: dict[int, tuple[PwrDomain, str, bool]] = {
    off + hi * 4: (d, kind, bool(hi))
    for d, r in DOMAIN_REGS.items()
    for kind, off in (("present", r.present), ("ready", r.ready), ("pwrtrans", r.pwrtrans),
                      ("pwractive", r.pwractive))
    for hi in (0, 1)
}
_KNOWN = frozenset(w for r in PWR_REGS for w in r.words())
_DOMAINS_OFF_WITH_L2 = (PwrDomain.TILER, PwrDomain.SHADER, PwrDomain.STACK)


class PwrOwner(Protocol):
    """What PWR_CONTROL needs from the GPU around it."""

    def pwr_reset_command(self, fast: bool) -> None: ...  # reset every block but PWR_CONTROL
    def mcu_running(self) -> bool: ...  # MCU_STATUS ENABLED: delegated domains are powered


class PwrControl:
    """PWR_CONTROL registers, relative to the block (GPU window offset 0x800)."""

    def __init__(self, model: GpuModel, irq: IrqBlock, owner: PwrOwner,
                 stats: Counter[str] | None = None) -> None:
        self.irq = irq
        self.owner = owner
        self.stats: Counter[str] = stats if stats is not None else Counter()
        #: --timeline: PWR commands on the ``PWR`` track (None: off)
        self.tl: Timeline | None = None
        #: PRESENT per domain (BASE: one top-level domain; inferred)
        self.present: dict[PwrDomain, int] = {
            PwrDomain.L2: model.l2_present, PwrDomain.TILER: model.tiler_present,
            PwrDomain.SHADER: model.shader_present, PwrDomain.BASE: 0x1,
            PwrDomain.STACK: model.stack_present,
        }
        self.reset_state()

    def reset_state(self) -> None:
        """Every domain off and under the host's control (power-on and GPU reset)."""
        self.ready: dict[PwrDomain, int] = dict.fromkeys(PwrDomain, 0)
        self.delegated = 0  # bit d: domain d is the MCU's
        self.cmdarg = 0

    # -- state ------------------------------------------------------------------------------
    def domain_ready(self, d: PwrDomain) -> int:
        """READY: the host's setting, or for a delegated domain what the firmware powers."""
        if self.delegated >> d & 1:
            return self.present[d] if self.owner.mcu_running() else 0
        return self.ready[d]

    def status(self) -> int:
        allow = 0
        for d in PwrDomain:
            if not self.delegated >> d & 1:
                allow |= 1 << d
        return (allow | self.delegated << DELEGATED_SHIFT
                | PwrStatus.ALLOW_SOFT_RESET | PwrStatus.ALLOW_FAST_RESET)

    # -- registers --------------------------------------------------------------------------
    def known(self, off: int) -> bool:
        return off in _KNOWN

    def read32(self, off: int) -> int:
        if off < IRQ_BLOCK_SIZE:
            return self.irq.read(off - PWR_INT_BASE)
        if off in (PWR_STATUS, PWR_STATUS + 4):
            return (self.status() >> (32 if off & 4 else 0)) & _M32
        if off in (PWR_CMDARG, PWR_CMDARG + 4):
            return (self.cmdarg >> (32 if off & 4 else 0)) & _M32
        word = _DOMAIN_WORDS.get(off)
        if word is None:
            return 0  # PWR_COMMAND is write-only
        d, kind, hi = word
        if kind == "present":
            value = self.present[d]
        elif kind == "ready":
            value = self.domain_ready(d)
        elif kind == "pwractive":  # cores doing work: the delegated cores while the MCU runs
            value = self.domain_ready(d) if self.delegated >> d & 1 else 0
        else:
            value = 0  # PWRTRANS: transitions complete inside the command write
        return (value >> (32 if hi else 0)) & _M32

    def write32(self, off: int, value: int) -> None:
        value &= _M32
        if off < IRQ_BLOCK_SIZE:
            self.irq.write(off - PWR_INT_BASE, value)
            return
        if off == PWR_CMDARG:
            self.cmdarg = (self.cmdarg & ~_M32) | value
        elif off == PWR_CMDARG + 4:
            self.cmdarg = (self.cmdarg & _M32) | value << 32
        elif off == PWR_COMMAND:
            self._command(value)
        # everything else is read-only

    # -- commands ---------------------------------------------------------------------------
    def _command(self, value: int) -> None:
        cmd = value & 0xFF
        raw_domain = value >> 8 & 0xFF
        self.stats["pwr_commands"] += 1
        if self.tl is not None:
            self.tl.instant("PWR", _command_name(cmd, raw_domain), command=value,
                            arg=self.cmdarg)
        try:
            command = PwrCommand(cmd)
        except ValueError:
            self._refuse(PwrIrq.COMMAND_INVALID)
            return
        if command in (PwrCommand.RESET_SOFT, PwrCommand.RESET_FAST):
            self.owner.pwr_reset_command(command == PwrCommand.RESET_FAST)
            self.reset_state()
            # PWR_INT_MASK survives; RAWSTAT becomes exactly RESET_COMPLETED in one step
            self.irq.rawstat = 0
            self.irq.raise_bits(PwrIrq.RESET_COMPLETED)
            return
        if command == PwrCommand.INSPECT:
            self.irq.raise_bits(PwrIrq.INSPECT_COMPLETED)
            return
        try:
            d = PwrDomain(raw_domain)
        except ValueError:
            self._refuse(PwrIrq.COMMAND_INVALID)
            return
        delegated = bool(self.delegated >> d & 1)
        if command in (PwrCommand.POWER_UP, PwrCommand.POWER_DOWN):
            if delegated:
                self._refuse(PwrIrq.COMMAND_NOT_ALLOWED)
                return
            self._power(d, self.cmdarg & self.present[d], command == PwrCommand.POWER_UP)
        elif command == PwrCommand.DELEGATE:
            if d == PwrDomain.L2 or delegated:
                self._refuse(PwrIrq.COMMAND_NOT_ALLOWED)
                return
            self.delegated |= 1 << d
            self.irq.raise_bits(PwrIrq.DELEGATION_CHANGED)
        else:  # RETRACT
            if d == PwrDomain.L2 or not delegated:
                self._refuse(PwrIrq.COMMAND_NOT_ALLOWED)
                return
            self.ready[d] = self.domain_ready(d)  # the host takes over what is powered
            self.delegated &= ~(1 << d)
            self.irq.raise_bits(PwrIrq.RETRACT_COMPLETED | PwrIrq.DELEGATION_CHANGED)

    def _power(self, d: PwrDomain, mask: int, up: bool) -> None:
        old = dict(self.ready)
        if up:
            self.ready[d] |= mask
        else:
            self.ready[d] &= ~mask
            if d == PwrDomain.L2 and not self.ready[d]:
                for dep in _DOMAINS_OFF_WITH_L2:  # cores cannot stay up without their L2
                    if not self.delegated >> dep & 1:
                        self.ready[dep] = 0
        bits = PwrIrq.POWER_CHANGED_ALL
        if self.ready != old:
            bits |= PwrIrq.POWER_CHANGED_SINGLE
        self.irq.raise_bits(bits)

    def _refuse(self, bit: PwrIrq) -> None:
        self.stats["pwr_commands_refused"] += 1
        self.irq.raise_bits(bit)


def _command_name(cmd: int, domain: int) -> str:
    """``POWER_UP SHADER``, ``RESET_SOFT``, or the raw values of an invalid command."""
    try:
        name = PwrCommand(cmd).name
    except ValueError:
        return f"command {cmd:#x}"
    if cmd in (PwrCommand.RESET_SOFT, PwrCommand.RESET_FAST, PwrCommand.INSPECT):
        return name
    try:
        return f"{name} {PwrDomain(domain).name}"
    except ValueError:
        return f"{name} domain {domain}"


__all__ = ["PwrControl", "PwrOwner"]

"""The shared section as the firmware sees it: block addresses, events, JOB_INT.

Every interface block (GLB, CSG i, CS i.j control/input/output) sits at a fixed offset of the
shared section mapped at MCU VA ``SHARED_SECTION_VA`` (:class:`~.iface.SharedLayout`). Events
the firmware raises are toggles: an output bit is made to differ from the host's input bit,
and JOB_INT tells the host which interface has news (reference §7.6).
"""

from __future__ import annotations

import logging
import time

from ..gpu.regs import JOB_INT_GLOBAL_IF
from ..irqblock import IrqBlock
from . import iface as I
from .bus import McuBus
from .iface import FwConfig, SharedLayout

#: Firmware events with microsecond timestamps (``--trace``): doorbells, CSG requests, CS
#: slices, events raised. For latency analysis; off (and not formatted) unless DEBUG.
evlog = logging.getLogger("qemu_panthor.csf.events")


def ev(fmt: str, *args: object) -> None:
    """Log one firmware event (callers check ``evlog.isEnabledFor(DEBUG)`` first)."""
    evlog.debug("t=%.3fms " + fmt, time.monotonic() * 1e3, *args)


class SharedSection:
    """Addresses of the interface blocks in MCU VA, and event/interrupt raising."""

    def __init__(self, config: FwConfig, bus: McuBus, job_irq: IrqBlock) -> None:
        self.config = config
        self.layout = SharedLayout(config.group_num, config.stream_num)
        self.layout.check()
        self.bus = bus
        self.job_irq = job_irq

    # -- addresses ---------------------------------------------------------------------------
    @staticmethod
    def va(off: int) -> int:
        return I.SHARED_SECTION_VA + off

    def glb_in(self) -> int:
        return self.va(self.layout.GLB_INPUT_OFF)

    def glb_out(self) -> int:
        return self.va(self.layout.GLB_OUTPUT_OFF)

    def csg_in(self, i: int) -> int:
        return self.va(self.layout.csg_input(i))

    def csg_out(self, i: int) -> int:
        return self.va(self.layout.csg_output(i))

    def cs_in(self, i: int, j: int) -> int:
        return self.va(self.layout.cs_input(i, j))

    def cs_out(self, i: int, j: int) -> int:
        return self.va(self.layout.cs_output(i, j))

    def control_image(self) -> list[tuple[int, bytes]]:
        """The read-only control blocks our firmware publishes (reference §7.2-7.4), as
        (section offset, bytes) runs merged into as few MMU writes as possible."""
        c, lay = self.config, self.layout
        blocks = [(0, I.GLB_CONTROL.pack(
            version=c.version, features=c.features, input_va=self.glb_in(),
            output_va=self.glb_out(), group_num=c.group_num, group_stride=lay.group_stride,
            perfcnt_size=0, instr_features=c.instr_features))]
        for i in range(c.group_num):
            blocks.append((lay.csg_control(i), I.CSG_CONTROL.pack(
                features=c.csg_features, input_va=self.csg_in(i), output_va=self.csg_out(i),
                suspend_size=c.suspend_size, protm_suspend_size=c.protm_suspend_size,
                stream_num=c.stream_num, stream_stride=lay.STREAM_STRIDE)))
            for j in range(c.stream_num):
                blocks.append((lay.cs_control(i, j), I.CS_CONTROL.pack(
                    features=c.cs_features, input_va=self.cs_in(i, j),
                    output_va=self.cs_out(i, j))))
        merged: list[tuple[int, bytes]] = []
        for off, data in sorted(blocks):
            if merged and merged[-1][0] + len(merged[-1][1]) <= off <= merged[-1][0] + 0x40:
                poff, pdata = merged[-1]
                merged[-1] = (poff, pdata + bytes(off - poff - len(pdata)) + data)
            else:
                merged.append((off, data))
        return merged

    # -- events ------------------------------------------------------------------------------
    def irq(self, bits: int) -> None:
        """Raise JOB_INT bits: CSG slot n (bit n) or the global interface (bit 31)."""
        if evlog.isEnabledFor(logging.DEBUG):
            ev("JOB_INT raise %#x", bits)
        self.job_irq.raise_bits(bits)

    def glb_irq(self, changed: int) -> None:
        """The global interface's interrupt (JOB_INT bit 31) for GLB_ACK bits that changed:
        raised only if one of them is in GLB_ACK_IRQ_MASK (panthor unmasks ALLOC_EN, PING,
        the timers, IDLE_EN and IDLE)."""
        if changed & self.bus.read32(self.glb_in() + I.GLB_INPUT.off["ack_irq_mask"]):
            self.irq(JOB_INT_GLOBAL_IF)

    def raise_event(self, out_va: int, in_va: int, bit: int) -> None:
        """Raise a toggle-style event: output bit := NOT input bit (pending while they differ).

        Idempotent while the host has not acknowledged the event: toggling again would make
        the bits equal and cancel an event the host has not seen yet (a lost SYNC_UPDATE
        leaves a finished job's fence unsignalled forever)."""
        req = self.bus.read32(in_va)
        cur = self.bus.read32(out_va)
        self.bus.write32(out_va, (cur & ~bit) | (~req & bit))

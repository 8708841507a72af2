"""DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS: what interrupts the function has, and how the
client wants them delivered (eventfds per vector, mask/unmask, client-side triggers).

The delivery semantics live in :class:`~.irq.IrqRouter`; this module decodes and checks the
messages. SET_IRQS with count 0, start 0 and DATA_NONE|TRIGGER disables an index; EVENTFD with
no fds de-assigns the vectors (QEMU sends runs of -1 that way). Trigger fds must be eventfds
(anything else is refused with EINVAL) and are made non-blocking (``eventfd``).
"""

from __future__ import annotations

import errno
import logging

from . import protocol as P
from .errors import ProtocolError
from .eventfd import check_trigger
from .irq import IrqRouter

tlog = logging.getLogger("qemu_panthor.vfio_user.trace")


class IrqCommands:
    """GET_IRQ_INFO/SET_IRQS handlers over one connection's :class:`IrqRouter`."""

    def __init__(self, router: IrqRouter, *, trace: bool = False) -> None:
        self.router = router
        self.trace = trace

    def get_irq_info(self, payload: bytes, fds: list[int]) -> bytes:
        if fds:
            raise ProtocolError(errno.EINVAL, "GET_IRQ_INFO carries no fds")
        if len(payload) < P.IrqInfo.sizeof():
            raise ProtocolError(errno.EINVAL, "short GET_IRQ_INFO")
        q = P.IrqInfo.parse(payload)
        if q.argsz < P.IrqInfo.sizeof():
            raise ProtocolError(errno.EINVAL, "GET_IRQ_INFO argsz too small")
        if q.index >= P.NUM_PCI_IRQS:
            raise ProtocolError(errno.EINVAL, f"no IRQ index {q.index}")
        I = P.IrqInfoFlags  # noqa: E741
        flags, count = I.EVENTFD, 0
        if q.index == P.PciIrq.INTX:
            count = self.router.intx_count
            flags |= I.MASKABLE | I.AUTOMASKED
        elif q.index == P.PciIrq.MSIX:
            count = self.router.msix_count  # no NORESIZE: QEMU enables vectors one by one
        elif q.index == P.PciIrq.ERR:
            count = self.router.err_count
        info: bytes = P.IrqInfo.build({"argsz": 16, "flags": flags, "index": q.index,
                                       "count": count})
        return info

    def set_irqs(self, payload: bytes, fds: list[int]) -> bytes:
        if len(payload) < P.IRQ_SET_FIXED:
            raise ProtocolError(errno.EINVAL, "short SET_IRQS")
        q = P.IrqSet.parse(payload)
        F = P.IrqSetFlags
        data, action = q.flags & P.DATA_MASK, q.flags & P.ACTION_MASK
        if (
            q.argsz < P.IRQ_SET_FIXED
            or q.flags & ~(P.DATA_MASK | P.ACTION_MASK)
            or data.bit_count() != 1
            or action.bit_count() != 1
        ):
            raise ProtocolError(errno.EINVAL, f"bad SET_IRQS argsz/flags {q.argsz}/{q.flags:#x}")
        if q.index >= P.NUM_PCI_IRQS:
            raise ProtocolError(errno.EINVAL, f"no IRQ index {q.index}")
        r = self.router
        n = {P.PciIrq.INTX: r.intx_count, P.PciIrq.MSIX: r.msix_count,
             P.PciIrq.ERR: r.err_count}.get(q.index, 0)
        if data != F.DATA_EVENTFD and fds:
            raise ProtocolError(errno.EINVAL, "fds without DATA_EVENTFD")
        if q.count == 0:
            if fds or q.start:
                raise ProtocolError(errno.EINVAL, "SET_IRQS count 0 with start or fds")
            if action == F.ACTION_TRIGGER and data in (F.DATA_NONE, F.DATA_EVENTFD):
                if q.index == P.PciIrq.INTX:
                    r.intx_disable()
                elif q.index == P.PciIrq.MSIX:
                    r.msix_disable()
                elif q.index == P.PciIrq.ERR:
                    r.err_set_trigger(None)
                self._trace(q)
            return b""
        if q.start + q.count > n:
            raise ProtocolError(
                errno.EINVAL, f"IRQ {q.index}: {q.start}+{q.count} exceeds count {n}"
            )
        if data == F.DATA_EVENTFD:
            if action != F.ACTION_TRIGGER:
                raise ProtocolError(errno.ENOTSUP, "only trigger eventfds are supported")
            if fds and len(fds) != q.count:
                raise ProtocolError(errno.EINVAL, f"{len(fds)} fds for count {q.count}")
            for trigger in fds:
                if (why := check_trigger(trigger)) is not None:
                    raise ProtocolError(errno.EINVAL, f"SET_IRQS trigger: {why}")
            for i in range(q.count):
                fd = fds[i] if fds else None
                if q.index == P.PciIrq.INTX:
                    r.intx_set_trigger(fd)
                elif q.index == P.PciIrq.ERR:
                    r.err_set_trigger(fd)
                else:
                    r.msix_set_trigger(q.start + i, fd)
            fds.clear()  # the router owns them now
            self._trace(q)
            return b""
        if data == F.DATA_BOOL:
            if len(q.data) < q.count:
                raise ProtocolError(errno.EINVAL, "SET_IRQS bool array too short")
            selected = [q.start + i for i in range(q.count) if q.data[i]]
        else:
            selected = list(range(q.start, q.start + q.count))
        if q.index == P.PciIrq.ERR:
            if action == F.ACTION_TRIGGER and selected:
                r.err_trigger()
            self._trace(q)
            return b""
        intx = q.index == P.PciIrq.INTX
        for v in selected:
            if action == F.ACTION_MASK:
                r.intx_mask() if intx else r.msix_mask(v)
            elif action == F.ACTION_UNMASK:
                r.intx_unmask() if intx else r.msix_unmask(v)
            else:
                r.intx_trigger() if intx else r.msix_trigger(v)
        self._trace(q)
        return b""

    def _trace(self, q: object) -> None:
        if self.trace:
            tlog.debug("SET_IRQS %s", q)

"""Device interrupt levels -> the client's eventfds (INTx or MSI-X), losslessly.

INTx (VFIO index 0) is the OR of all device vectors and behaves like VFIO's automasked
level interrupt: the server writes the trigger eventfd once and masks; it does not write it
again until the client sends SET_IRQS UNMASK (QEMU does so after the guest's EOI), and on that
UNMASK it writes again if the line is still asserted.

MSI-X (VFIO index 2) is edge: one eventfd per vector, written on a rising level. A vector that
rises while it has no eventfd or is masked is written when it gets one / is unmasked, if it is
still asserted and not yet delivered. Exactly one message per assertion episode.

A trigger eventfd whose write fails (saturated counter, or anything else) is reported once,
closed and forgotten: that interrupt is disabled until the client sets a trigger again.
"""

from __future__ import annotations

import logging

from .eventfd import close as _close
from .eventfd import signal as _signal
from .pci import IrqSink, PciFunction

log = logging.getLogger(__name__)
tlog = logging.getLogger("qemu_panthor.vfio_user.trace")


def _report_dead(what: str, fd: int, e: OSError) -> None:
    log.warning("%s eventfd %d write failed: %s; disabled until the client sets it again",
                what, fd, e.strerror or e)


class IrqRouter(IrqSink):
    """Per-connection interrupt routing state for one :class:`PciFunction`."""

    def __init__(self, device: PciFunction, *, trace: bool = False) -> None:
        self.device = device
        self.trace = trace
        self.msix_count = device.msix.vectors if device.msix else 0
        self.intx_count = 1 if device.intx else 0
        self.intx_fd: int | None = None
        self.intx_masked = False
        self.msix_enabled = False
        self.msix_fds: list[int | None] = [None] * self.msix_count
        self.msix_masked = [False] * self.msix_count
        self.msix_delivered = [False] * self.msix_count
        self.fired_intx = 0
        self.fired_msix = [0] * self.msix_count
        # The ERR (AER) interrupt: one vector, so QEMU enables its error recovery path.
        # Our function never reports an uncorrectable error; the eventfd is held until
        # replaced or the client goes.
        self.err_count = 1
        self.err_fd: int | None = None

    # -- device side -------------------------------------------------------------------
    def level_changed(self, vector: int, level: bool, old_mask: int, new_mask: int) -> None:
        if self.trace:
            tlog.debug("irq vector %d -> %d", vector, level)
        if self.msix_enabled:
            if vector < self.msix_count:
                if level:
                    self._msix_try(vector)
                else:
                    self.msix_delivered[vector] = False
        elif new_mask and not old_mask:
            self._intx_try()

    # -- delivery ----------------------------------------------------------------------
    def _intx_try(self) -> None:
        fd = self.intx_fd
        if fd is None or self.intx_masked or self.msix_enabled or not self.device.irq_levels:
            return
        self._fire_intx(fd)

    def _fire_intx(self, fd: int) -> None:
        self.intx_masked = True  # automasked until the client's UNMASK
        self.fired_intx += 1
        if self.trace:
            tlog.debug("INTx fire (eventfd %d)", fd)
        if (e := _signal(fd)) is not None:
            _report_dead("INTx", fd, e)
            self.intx_fd = None
            _close(fd)

    def _msix_try(self, v: int) -> None:
        fd = self.msix_fds[v]
        if (
            fd is None
            or self.msix_masked[v]
            or self.msix_delivered[v]
            or not self.device.irq_level(v)
        ):
            return
        self._fire_msix(v, fd)

    def _fire_msix(self, v: int, fd: int) -> None:
        self.msix_delivered[v] = True
        self.fired_msix[v] += 1
        if self.trace:
            tlog.debug("MSI-X vector %d fire (eventfd %d)", v, fd)
        if (e := _signal(fd)) is not None:
            _report_dead(f"MSI-X vector {v}", fd, e)
            self.msix_fds[v] = None
            self.msix_delivered[v] = False  # not delivered: a new trigger gets it
            _close(fd)

    # -- client side (SET_IRQS) ------------------------------------------------------------
    def intx_set_trigger(self, fd: int | None) -> None:
        """Assign (or with None de-assign) the INTx trigger eventfd; a new one starts unmasked."""
        _close(self.intx_fd)
        self.intx_fd = fd
        self.intx_masked = False
        self._intx_try()

    def intx_disable(self) -> None:
        self.intx_set_trigger(None)

    def intx_mask(self) -> None:
        self.intx_masked = True

    def intx_unmask(self) -> None:
        self.intx_masked = False
        self._intx_try()

    def intx_trigger(self) -> None:
        """Client-requested trigger (DATA_NONE/BOOL|TRIGGER)."""
        if self.intx_fd is not None:
            self._fire_intx(self.intx_fd)

    def msix_set_trigger(self, vector: int, fd: int | None) -> None:
        """Assign (None: de-assign) a vector's eventfd; enables MSI-X mode (INTx goes quiet)."""
        self.msix_enabled = True
        _close(self.msix_fds[vector])
        self.msix_fds[vector] = fd
        if fd is not None:
            self._msix_try(vector)

    def msix_disable(self) -> None:
        for v, fd in enumerate(self.msix_fds):
            _close(fd)
            self.msix_fds[v] = None
            self.msix_masked[v] = False
            self.msix_delivered[v] = False
        self.msix_enabled = False
        self._intx_try()

    def msix_mask(self, vector: int) -> None:
        self.msix_masked[vector] = True

    def msix_unmask(self, vector: int) -> None:
        self.msix_masked[vector] = False
        self._msix_try(vector)

    def msix_trigger(self, vector: int) -> None:
        fd = self.msix_fds[vector]
        if fd is not None:
            self._fire_msix(vector, fd)

    def err_set_trigger(self, fd: int | None) -> None:
        _close(self.err_fd)
        self.err_fd = fd

    def err_trigger(self) -> None:
        fd = self.err_fd
        if fd is not None and (e := _signal(fd)) is not None:
            _report_dead("ERR", fd, e)
            self.err_fd = None
            _close(fd)

    # -- lifetime ----------------------------------------------------------------------------
    def detach(self) -> None:
        """Close every eventfd the client passed (client disconnect)."""
        _close(self.intx_fd)
        self.intx_fd = None
        _close(self.err_fd)
        self.err_fd = None
        for fd in self.msix_fds:
            _close(fd)
        self.msix_fds = [None] * self.msix_count
        self.msix_enabled = False

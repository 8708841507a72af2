"""Interrupt delivery: INTx level semantics (automask/UNMASK) and MSI-X per-vector eventfds.

Every delivery happens synchronously in the server (inside set_irq or while handling the
SET_IRQS message), so after a request/reply round trip the eventfd counters are final.
"""

from __future__ import annotations

import errno
import os

from support.vfio_user_client import (
    IRQ_ACTION_MASK,
    IRQ_ACTION_TRIGGER,
    IRQ_ACTION_UNMASK,
    IRQ_DATA_BOOL,
    IRQ_DATA_EVENTFD,
    IRQ_DATA_NONE,
    eventfd,
    eventfd_count,
    served,
)

INTX, MSI, MSIX, ERR, REQ = 0, 1, 2, 3, 4
EVENTFD, MASKABLE, AUTOMASKED, NORESIZE = 1, 2, 4, 8


async def test_irq_info() -> None:
    async with served() as (_, _s, c):
        assert await c.irq_info(INTX) == (16, EVENTFD | MASKABLE | AUTOMASKED, INTX, 1)
        assert await c.irq_info(MSI) == (16, EVENTFD, MSI, 0)
        assert await c.irq_info(MSIX) == (16, EVENTFD, MSIX, 3)
        # One ERR vector: with count == 1 QEMU's vfio-pci enables its error-recovery
        # notifier instead of warning "Could not enable error recovery for the device".
        assert await c.irq_info(ERR) == (16, EVENTFD, ERR, 1)
        assert (await c.irq_info(REQ))[3] == 0
        msg = await c.request(7, (16).to_bytes(4, "little") + bytes(4)
                              + (5).to_bytes(4, "little") + bytes(4), check=False)
        assert msg.is_error and msg.error == errno.EINVAL


async def test_err_irq_eventfd_held_and_released() -> None:
    async with served() as (_, server, c):
        efd = eventfd()
        await c.set_irqs(ERR, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 1, fds=[efd])
        await c.set_irqs(ERR, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 1)  # client test trigger
        assert os.eventfd_read(efd) == 1
        await c.set_irqs(ERR, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 0)  # disable
        assert server.connection.router.err_fd is None
        os.close(efd)


async def arm_intx(c) -> int:  # type: ignore[no-untyped-def]
    efd = eventfd()
    await c.set_irqs(INTX, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 1, fds=[efd])
    return efd


async def unmask_intx(c) -> None:  # type: ignore[no-untyped-def]
    await c.set_irqs(INTX, IRQ_DATA_NONE | IRQ_ACTION_UNMASK, 0, 1)


async def test_intx_level_semantics() -> None:
    async with served() as (dev, _s, c):
        efd = await arm_intx(c)
        try:
            assert eventfd_count(efd) == 0
            dev.set_irq(0, True)  # assert -> one event
            assert eventfd_count(efd) == 1
            dev.set_irq(1, True)  # line already high: nothing
            dev.set_irq(0, False)
            dev.set_irq(1, False)
            dev.set_irq(2, True)  # re-assert without UNMASK: still masked, nothing
            assert eventfd_count(efd) == 0
            await unmask_intx(c)  # UNMASK while asserted -> one more
            assert eventfd_count(efd) == 1
            dev.set_irq(2, False)
            await unmask_intx(c)  # deassert + UNMASK -> none
            assert eventfd_count(efd) == 0
            dev.set_irq(1, True)  # unmasked and low -> next assertion fires at once
            assert eventfd_count(efd) == 1
            dev.set_irq(1, False)
            await unmask_intx(c)
            await unmask_intx(c)  # repeated UNMASK with the line low: nothing
            assert eventfd_count(efd) == 0
        finally:
            os.close(efd)


async def test_intx_mask_and_trigger_and_rearm() -> None:
    async with served() as (dev, _s, c):
        efd = await arm_intx(c)
        try:
            await c.set_irqs(INTX, IRQ_DATA_NONE | IRQ_ACTION_MASK, 0, 1)
            dev.set_irq(0, True)
            assert eventfd_count(efd) == 0  # masked by the client
            await c.set_irqs(INTX, IRQ_DATA_BOOL | IRQ_ACTION_UNMASK, 0, 1, data=b"\0")
            assert eventfd_count(efd) == 0  # bool false: no action
            await c.set_irqs(INTX, IRQ_DATA_BOOL | IRQ_ACTION_UNMASK, 0, 1, data=b"\1")
            assert eventfd_count(efd) == 1
            # Disable (machine reset path), then re-arm with a new eventfd while asserted:
            await c.set_irqs(INTX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 0)
            dev.set_irq(0, False)
            dev.set_irq(0, True)
            assert eventfd_count(efd) == 0  # no eventfd: nothing delivered
            efd2 = await arm_intx(c)
            assert eventfd_count(efd2) == 1  # a fresh arm starts unmasked: asserted -> fire
            await c.set_irqs(INTX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 1)  # client trigger
            assert eventfd_count(efd2) == 1
            os.close(efd2)
        finally:
            os.close(efd)


async def test_msix_per_vector_eventfds() -> None:
    async with served() as (dev, _s, c):
        intx = await arm_intx(c)
        await c.set_irqs(INTX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 0)  # QEMU disables INTx
        # QEMU enables MSI-X with no vectors (count 1, fd -1 => no fds), then one by one.
        await c.set_irqs(MSIX, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 1)
        dev.set_irq(2, True)  # asserted before vector 2 has an eventfd
        fds = [eventfd() for _ in range(3)]
        try:
            await c.set_irqs(MSIX, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 2, fds=fds[:2])
            assert [eventfd_count(f) for f in fds] == [0, 0, 0]
            await c.set_irqs(MSIX, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 2, 1, fds=fds[2:])
            assert [eventfd_count(f) for f in fds] == [0, 0, 1]  # delivered on assignment
            dev.set_irq(1, True)
            assert [eventfd_count(f) for f in fds] == [0, 1, 0]
            dev.set_irq(1, True)  # no change in level: no message
            dev.set_irq(1, False)
            dev.set_irq(1, True)  # a new rising edge: one message
            assert [eventfd_count(f) for f in fds] == [0, 1, 0]
            # Mask vector 0; an assertion while masked is delivered on UNMASK, once.
            await c.set_irqs(MSIX, IRQ_DATA_NONE | IRQ_ACTION_MASK, 0, 1)
            dev.set_irq(0, True)
            assert eventfd_count(fds[0]) == 0
            await c.set_irqs(MSIX, IRQ_DATA_NONE | IRQ_ACTION_UNMASK, 0, 1)
            await c.set_irqs(MSIX, IRQ_DATA_NONE | IRQ_ACTION_UNMASK, 0, 1)
            assert eventfd_count(fds[0]) == 1
            # Masked and deasserted before UNMASK: nothing.
            await c.set_irqs(MSIX, IRQ_DATA_NONE | IRQ_ACTION_MASK, 0, 1)
            dev.set_irq(0, False)
            dev.set_irq(0, True)
            dev.set_irq(0, False)
            await c.set_irqs(MSIX, IRQ_DATA_NONE | IRQ_ACTION_UNMASK, 0, 1)
            assert eventfd_count(fds[0]) == 0
            assert eventfd_count(intx) == 0  # INTx silent throughout
            # Client trigger of vector 1 by bool array.
            await c.set_irqs(MSIX, IRQ_DATA_BOOL | IRQ_ACTION_TRIGGER, 0, 3, data=b"\0\1\0")
            assert [eventfd_count(f) for f in fds] == [0, 1, 0]
            # Disable MSI-X: the server closes its copies; nothing is delivered any more.
            await c.set_irqs(MSIX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 0)
            dev.set_irq(1, False)
            dev.set_irq(1, True)
            assert [eventfd_count(f) for f in fds] == [0, 0, 0]
        finally:
            for f in [*fds, intx]:
                os.close(f)


async def test_set_irqs_errors() -> None:
    async with served() as (dev, _server, c):
        efd = eventfd()
        try:
            cases = [
                (5, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 1, []),  # bad index
                (MSIX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 2, 2, []),  # beyond 3 vectors
                (INTX, IRQ_DATA_NONE | IRQ_ACTION_UNMASK, 1, 1, []),
                (MSI, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 1, []),  # no MSI vectors
                (MSIX, IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER, 0, 2, [efd]),  # fd count
                (INTX, IRQ_DATA_NONE | IRQ_DATA_BOOL | IRQ_ACTION_MASK, 0, 1, []),
                (INTX, IRQ_DATA_NONE | IRQ_ACTION_MASK | IRQ_ACTION_UNMASK, 0, 1, []),
                (INTX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER | 0x100, 0, 1, []),
                (INTX, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 1, [efd]),  # fd without EVENTFD
                (INTX, IRQ_DATA_BOOL | IRQ_ACTION_TRIGGER, 0, 1, []),  # bool array missing
            ]
            for index, flags, start, count, fds in cases:
                msg = await c.set_irqs(index, flags, start, count, fds=fds, check=False)
                assert msg.is_error and msg.error == errno.EINVAL, (index, flags, start, count)
            msg = await c.set_irqs(INTX, IRQ_DATA_EVENTFD | IRQ_ACTION_UNMASK, 0, 1, fds=[efd],
                                   check=False)
            assert msg.is_error and msg.error == errno.ENOTSUP
            # None of the rejected eventfds was kept: an assertion signals nothing.
            dev.set_irq(0, True)
            assert eventfd_count(efd) == 0
        finally:
            os.close(efd)

"""CSG IDLE event hysteresis (docs/firmware.md "Idle"): status_state.IS_IDLE is current at
once, the IDLE event (CSG ack bit 29, optional per reference §7.6) follows only after the
group stayed idle for ``idle_hysteresis``; work arriving first cancels it."""

from __future__ import annotations

import asyncio
import time

import pytest
from support import panthor_fw as pf
from support.csf_host import SYNCOBJ_VA, USER_VA, Host, kernel_job

STATUS_STATE = pf.CsgOutput.off("status_state")


@pytest.fixture
def host() -> Host:
    h = Host()
    h.boot()
    h.glb_init()
    h.job_irq()
    return h


def idle_pending(host: Host, i: int = 0) -> bool:
    """The host's view: an IDLE event is pending while req and ack bit 29 differ."""
    req = host.r32(host.csg[i]["input_va"])
    ack = host.r32(host.csg[i]["output_va"])
    return bool((req ^ ack) & pf.CSG_IDLE)


def ack_idle(host: Host, i: int = 0) -> None:
    """What panthor's event handler does: copy ack bit 29 into req (no doorbell)."""
    ci, co = host.csg[i]["input_va"], host.csg[i]["output_va"]
    host.update(ci, host.r32(co), pf.CSG_IDLE)


def is_idle(host: Host, i: int = 0) -> bool:
    return bool(host.r32(host.csg[i]["output_va"] + STATUS_STATE) & pf.CSG_STATUS_STATE_IS_IDLE)


def write_user_stream(host: Host) -> None:
    # 0x10800 += 0x2A (reference §9.4)
    for k, wd in enumerate([0x0100000000010800, 0x010200000000002A, 0x3300000200000000]):
        host.ram.write_u64(host.user_pa + 8 * k, wd)


async def wait_for(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


async def run_job(host: Host, seq: int) -> None:
    host.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))
    await wait_for(lambda: host.ram.read_u64(host.sync_pa) == seq)


async def test_idle_event_follows_after_the_hysteresis(host: Host) -> None:
    host.fw.idle_hysteresis = 0.05
    write_user_stream(host)
    host.start_group(0)
    await run_job(host, 1)
    t_done = time.monotonic()
    assert is_idle(host)  # the status is current at once ...
    assert not idle_pending(host)  # ... the event is not raised yet
    host.job_irq()
    await wait_for(lambda: idle_pending(host))
    assert time.monotonic() - t_done >= 0.04
    assert host.job_irq() & 1  # raised with JOB_INT bit 0 (CSG 0)
    host.fw.sched.stop()


async def test_work_within_the_hysteresis_cancels_the_idle_event(host: Host) -> None:
    host.fw.idle_hysteresis = 0.3
    write_user_stream(host)
    host.start_group(0)
    t0 = time.monotonic()
    for seq in range(1, 6):  # back-to-back jobs, each queued as the previous one finished
        await run_job(host, seq)
        assert is_idle(host)
    assert time.monotonic() - t0 < 0.3, "host too slow for this test's timing"
    assert not idle_pending(host)
    assert host.ram.read_u64(host.user_pa + 0x800) == 5 * 0x2A
    await wait_for(lambda: idle_pending(host))  # one event for the final idle period
    ack_idle(host)
    await asyncio.sleep(0.4)
    assert not idle_pending(host)  # raised once per idle period, not again
    host.fw.sched.stop()


async def test_terminate_and_suspend_drop_a_pending_idle_event(host: Host) -> None:
    host.fw.idle_hysteresis = 0.05
    host.start_group(0)  # empty ring: idle at once, event deferred
    assert is_idle(host) and not idle_pending(host)
    host.csg_req(0, pf.CSG_STATE_TERMINATE)
    assert host.csg_acked(0, pf.CSG_STATE_MASK)
    await asyncio.sleep(0.15)
    assert not idle_pending(host)
    host.start_group(0)
    host.csg_req(0, pf.CSG_STATE_SUSPEND)
    assert host.csg_acked(0, pf.CSG_STATE_MASK)
    await asyncio.sleep(0.15)
    assert not idle_pending(host)
    host.fw.sched.stop()


def test_without_an_event_loop_the_idle_event_is_raised_at_once(host: Host) -> None:
    write_user_stream(host)
    host.start_group(0)
    assert idle_pending(host)  # empty ring at START
    ack_idle(host)
    host.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))
    assert not is_idle(host)
    host.fw.sched.pump()
    assert host.ram.read_u64(host.sync_pa) == 1
    assert is_idle(host) and idle_pending(host)

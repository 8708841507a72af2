"""GLB IDLE (docs/firmware.md "Idle hysteresis"; reference GLB ack bit 26): with GLB_REQ
IDLE_EN set the firmware toggles GLB ack bit 26 and raises JOB_INT bit 31 once per idle
period of the whole GPU (no resident group busy) after the idle hysteresis; panthor copies
the bit into req and runs a tick (sched_process_idle_event_locked)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from support import panthor_fw as pf
from support.csf_host import SYNCOBJ_VA, USER_VA, Host, doorbell_off, kernel_job

JOB_INT_GLOBAL_IF = 1 << 31


def glb_idle_pending(h: Host) -> bool:
    return bool((h.r32(h.glb["input_va"]) ^ h.r32(h.glb["output_va"])) & pf.GLB_IDLE)


def ack_glb_idle(h: Host) -> None:
    """panthor: panthor_fw_update_reqs(glb_iface, req, ack, GLB_IDLE)."""
    h.update(h.glb["input_va"], h.r32(h.glb["output_va"]), pf.GLB_IDLE)


def user_stream(h: Host) -> None:
    # 0x10800 += 0x2A (reference §9.4)
    for k, wd in enumerate([0x0100000000010800, 0x010200000000002A, 0x3300000200000000]):
        h.ram.write_u64(h.user_pa + 8 * k, wd)


def test_raised_once_the_gpu_is_idle_and_again_after_each_busy_period() -> None:
    h = Host.booted()
    assert glb_idle_pending(h), "nothing resident after boot: the GPU is idle"
    ack_glb_idle(h)
    user_stream(h)
    h.start_group(0)
    h.push(kernel_job(USER_VA, 24, SYNCOBJ_VA), doorbell=None)
    assert not glb_idle_pending(h)
    h.w(doorbell_off(1), 1)  # CS doorbell 1 (ring work arrives: the group is busy)
    h.job_irq()
    h.fw.sched.pump()
    assert h.ram.read_u64(h.sync_pa) == 1
    assert glb_idle_pending(h), "the job finished: a new idle period"
    assert h.job_irq() & JOB_INT_GLOBAL_IF
    ack_glb_idle(h)
    h.fw.sched.pump()
    h.fw.events.update_glb_idle()
    assert not glb_idle_pending(h), "once per idle period"


def test_not_raised_without_idle_en() -> None:
    h = Host()
    h.boot()
    h.glb_init()
    h.job_irq()
    assert glb_idle_pending(h)
    ack_glb_idle(h)
    h.update(h.glb["input_va"], 0, pf.GLB_IDLE_EN)  # the host turns idle reporting off
    h.w(doorbell_off(0), 1)
    user_stream(h)
    h.start_group(0)
    h.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))
    h.fw.sched.pump()
    assert h.ram.read_u64(h.sync_pa) == 1
    assert not glb_idle_pending(h)


async def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``cond`` with short awaits until it holds; asyncio.TimeoutError after ``timeout``."""
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
def host() -> Host:
    return Host.booted()


async def test_work_arriving_within_the_hysteresis_cancels_it(host: Host) -> None:
    h = host
    h.fw.idle_hysteresis = 0.2
    ack_glb_idle(h)
    user_stream(h)
    h.start_group(0)
    h.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))
    for seq in (1, 2, 3):
        async def done(n: int = seq) -> None:
            while h.ram.read_u64(h.sync_pa) != n:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(done(), 5)
        assert not glb_idle_pending(h), "raised before the hysteresis ran out"
        await asyncio.sleep(0.05)
        busy_at = time.monotonic()  # the GPU is busy from here: no idle period starts earlier
        h.push(kernel_job(USER_VA, 24, SYNCOBJ_VA))

    def last_job_done() -> bool:
        nonlocal busy_at
        now = time.monotonic()
        if h.ram.read_u64(h.sync_pa) == 4:
            return True
        busy_at = now  # still running when this read was made
        return False

    await wait_for(last_job_done)
    await wait_for(lambda: glb_idle_pending(h))  # "idle past the hysteresis: raised"
    assert time.monotonic() - busy_at >= h.fw.idle_hysteresis, "raised before the hysteresis"

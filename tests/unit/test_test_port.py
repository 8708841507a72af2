"""The qemu-panthor test port (docs/test-port.md): BAR2 registers, one-shot AS_ACTIVE hangs
seen through the MMU registers the way panthor polls them (reference §4.3: AS_STATUS bit 0
AS_ACTIVE, polled before and after each AS_COMMAND), dropped GLB PING acks, and QMP
``x-mali-inject`` argument validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from qemu.qmp import ExecuteError, QMPClient
from support import csf_host
from support import panthor_fw as pf

from qemu_panthor.device import MaliPciFunction
from qemu_panthor.gpu.models import MODELS
from qemu_panthor.mmu import introspect
from qemu_panthor.qmp import build_server
from qemu_panthor.testport import ANY_AS, POLL_READS, FaultInjector, InjectOp, encode

BAR2 = 2
TP = 0xF00
TP_MAGIC, TP_VERSION, TP_INJECT, TP_RESULT, TP_FIRED = 0x00, 0x04, 0x08, 0x0C, 0x10
TP_AS_ARMED, TP_AS_ACTIVE, TP_PING_ARMED, TP_GPU_RESETS = 0x14, 0x18, 0x1C, 0x20
MMU = 0x2000
AS_LOCKADDR, AS_COMMAND, AS_STATUS = 0x10, 0x18, 0x28
CMD_UPDATE, CMD_LOCK, CMD_UNLOCK = 1, 2, 3
GPU_COMMAND, GPU_SOFT_RESET = 0x30, 0x101  # reference §3: GPU_CMD_DEF(RESET, SOFT)


def as_reg(n: int, reg: int) -> int:
    return MMU + 0x400 + n * 0x40 + reg


@pytest.fixture
def dev() -> MaliPciFunction:
    return MaliPciFunction(MODELS["g610"])


def tp_r(d: MaliPciFunction, off: int) -> int:
    return d.bar_read(BAR2, TP + off, 4)


def tp_w(d: MaliPciFunction, off: int, v: int) -> None:
    d.bar_write(BAR2, TP + off, 4, v)


def status(d: MaliPciFunction, n: int) -> int:
    return d.gpu.mmio_read(as_reg(n, AS_STATUS), 4)


def test_port_identity_and_location(dev: MaliPciFunction) -> None:
    assert tp_r(dev, TP_MAGIC) == int.from_bytes(b"QPTP", "little")
    assert tp_r(dev, TP_VERSION) == 1
    assert tp_r(dev, TP_FIRED) == 0 and tp_r(dev, TP_AS_ACTIVE) == 0
    # outside the port (MSI-X table / PBA are QEMU's; other BAR2 offsets read 0)
    assert dev.bar_read(BAR2, 0x0, 4) == 0 and dev.bar_read(BAR2, 0xEFC, 4) == 0
    assert dev.bar_read(BAR2, TP + 0xFC, 4) == 0  # unknown port register
    tp_w(dev, 0x00, 0x1234)  # read-only registers ignore writes
    assert tp_r(dev, TP_MAGIC) == 0x50545051


def test_as_stuck_hangs_one_command_for_one_driver_poll(dev: MaliPciFunction) -> None:
    tp_w(dev, TP_INJECT, encode(InjectOp.AS_STUCK, 3, 1))
    assert tp_r(dev, TP_RESULT) == 0 and tp_r(dev, TP_AS_ARMED) == 1
    assert status(dev, 3) == 0  # armed, nothing fired: the poll before the command passes
    dev.gpu.mmio_write(as_reg(3, AS_LOCKADDR), 8, 0x8000_0000_000E)
    dev.gpu.mmio_write(as_reg(3, AS_COMMAND), 4, CMD_LOCK)
    assert tp_r(dev, TP_FIRED) == 1 and tp_r(dev, TP_AS_ARMED) == 0
    assert tp_r(dev, TP_AS_ACTIVE) == 1 << 3
    st = introspect.as_state(dev.gpu.mmu, 3)
    assert st["commands"]["LOCK"] == 0 and st["locked"] == []  # never executed
    assert st["registers"]["STATUS"] == 1 and status(dev, 2) == 0  # only AS3 is stuck
    # panthor's poll: 10 us x 100 ms -> every read of one poll sees AS_ACTIVE
    assert all(status(dev, 3) == 1 for _ in range(POLL_READS))
    assert status(dev, 3) == 0 and tp_r(dev, TP_AS_ACTIVE) == 0  # the next command's poll
    # one-shot: the next LOCK executes normally
    dev.gpu.mmio_write(as_reg(3, AS_COMMAND), 4, CMD_LOCK)
    assert status(dev, 3) == 0 and introspect.as_state(dev.gpu.mmu, 3)["commands"]["LOCK"] == 1
    assert tp_r(dev, TP_FIRED) == 1


def test_any_as_count_and_commands_while_active_are_lost(dev: MaliPciFunction) -> None:
    tp_w(dev, TP_INJECT, encode(InjectOp.AS_STUCK, ANY_AS, 2))
    dev.gpu.mmio_write(as_reg(1, AS_COMMAND), 4, CMD_UPDATE)
    dev.gpu.mmio_write(as_reg(1, AS_COMMAND), 4, CMD_UNLOCK)  # written while ACTIVE: lost
    assert tp_r(dev, TP_FIRED) == 1 and tp_r(dev, TP_AS_ARMED) == 1
    dev.gpu.mmio_write(as_reg(5, AS_COMMAND), 4, CMD_UPDATE)
    assert tp_r(dev, TP_AS_ACTIVE) == (1 << 1) | (1 << 5) and tp_r(dev, TP_FIRED) == 2
    assert introspect.as_state(dev.gpu.mmu, 1)["commands"]["UNLOCK"] == 0
    dev.gpu.mmio_write(as_reg(6, AS_COMMAND), 4, CMD_UPDATE)  # count exhausted
    assert status(dev, 6) == 0 and introspect.as_state(dev.gpu.mmu, 6)["commands"]["UPDATE"] == 1


def test_as_wedged_lasts_until_gpu_soft_reset(dev: MaliPciFunction) -> None:
    tp_w(dev, TP_INJECT, encode(InjectOp.AS_WEDGED, 2))
    dev.gpu.mmio_write(as_reg(2, AS_COMMAND), 4, CMD_UPDATE)
    assert all(status(dev, 2) == 1 for _ in range(3 * POLL_READS))
    resets = tp_r(dev, TP_GPU_RESETS)
    dev.gpu.mmio_write(GPU_COMMAND, 4, GPU_SOFT_RESET)
    assert tp_r(dev, TP_GPU_RESETS) == resets + 1
    assert status(dev, 2) == 0 and tp_r(dev, TP_AS_ACTIVE) == 0
    dev.gpu.mmio_write(as_reg(2, AS_COMMAND), 4, CMD_UPDATE)
    assert status(dev, 2) == 0


def test_device_reset_ends_a_hang_and_disarm_clears(dev: MaliPciFunction) -> None:
    tp_w(dev, TP_INJECT, encode(InjectOp.AS_STUCK, ANY_AS, 5))
    dev.gpu.mmio_write(as_reg(0, AS_COMMAND), 4, CMD_UPDATE)
    dev.reset()
    assert status(dev, 0) == 0
    assert tp_r(dev, TP_AS_ARMED) == 4  # arms survive a reset
    tp_w(dev, TP_INJECT, encode(InjectOp.DISARM))
    assert tp_r(dev, TP_AS_ARMED) == 0 and dev.gpu.mmu.as_cmd_hook is None
    dev.gpu.mmio_write(as_reg(0, AS_COMMAND), 4, CMD_UPDATE)
    assert status(dev, 0) == 0 and tp_r(dev, TP_FIRED) == 1


def test_bad_inject_codes_are_rejected(dev: MaliPciFunction) -> None:
    absent = next(n for n in range(16) if not MODELS["g610"].as_present >> n & 1)
    tp_w(dev, TP_INJECT, encode(InjectOp.AS_STUCK, absent))
    assert tp_r(dev, TP_RESULT) == 2 and tp_r(dev, TP_AS_ARMED) == 0
    tp_w(dev, TP_INJECT, 0x77)
    assert tp_r(dev, TP_RESULT) == 1 and dev.gpu.mmu.as_cmd_hook is None
    tp_w(dev, TP_INJECT, encode(InjectOp.AS_STUCK, 1, 0))  # count 0 means 1
    assert tp_r(dev, TP_RESULT) == 0 and tp_r(dev, TP_AS_ARMED) == 1


def test_ping_drop_leaves_one_ping_unacknowledged_until_reset() -> None:
    host = csf_host.Host()
    host.boot()
    host.glb_init()
    host.job_irq()
    port = FaultInjector(host.gpu, host.fw)
    gi, go = host.glb["input_va"], host.glb["output_va"]

    def ping_acked() -> bool:
        host.toggle(gi, go, pf.GLB_PING)
        host.w(csf_host.doorbell_off(0), 1)
        return host.r32(gi) & pf.GLB_PING == host.r32(go) & pf.GLB_PING

    assert port.inject(encode(InjectOp.PING_DROP)) == 0
    assert ping_acked() is False and port.fired == 1
    host.w(csf_host.doorbell_off(0), 1)  # another doorbell: still no ack (firmware is stuck)
    assert host.r32(gi) & pf.GLB_PING != host.r32(go) & pf.GLB_PING
    host.gpu.mmio_write(GPU_COMMAND, 4, GPU_SOFT_RESET)
    assert port.ping_holding is False and host.fw.ping_hook is None
    assert port.fired == 1  # with no hook the firmware acks PINGs as before (test_mcu)


def test_fw_boot_fail_fails_the_next_boot_only() -> None:
    """FW_BOOT_FAIL: the next firmware boot faults before its boot interrupt (MCU_STATUS
    FATAL = 3, JOB_INT bit 31 never raised: what panthor_fw_start waits for, then reports
    "Failed to boot MCU (status=fatal)"); the boot after it works."""
    host = csf_host.Host()
    port = FaultInjector(host.gpu, host.fw)
    assert port.inject(encode(InjectOp.FW_BOOT_FAIL)) == 0
    assert port.read32(0x30) == 1  # TP_BOOT_ARMED
    host.w(csf_host.JOB_INT_CLEAR, 0xFFFFFFFF)
    host.w(csf_host.JOB_INT_MASK, 0xFFFFFFFF)
    host.w(csf_host.MCU_CONTROL, csf_host.MCU_CONTROL_AUTO)
    assert host.r(csf_host.MCU_STATUS) == 3  # FATAL
    assert host.r(csf_host.JOB_INT_RAWSTAT) == 0
    assert port.fired == 1 and port.fired_log[-1] == "firmware boot failed"
    # the next attempt boots normally
    host.w(csf_host.MCU_CONTROL, 0)
    host.boot()
    assert host.fw.boot_hook is None and port.read32(0x30) == 0


# -- QMP -----------------------------------------------------------------------------------
@pytest.fixture
async def qmp_dev(tmp_path: Path):
    d = MaliPciFunction(MODELS["g610"])
    srv, events = build_server(d)
    await srv.start(tmp_path / "qmp.sock")
    qmp = QMPClient("test")
    await qmp.connect(srv.path)
    yield d, qmp
    await qmp.disconnect()
    events.detach()
    await srv.close()


async def test_qmp_x_mali_inject_arms_the_port(qmp_dev) -> None:
    d, qmp = qmp_dev
    r = await qmp.execute("x-mali-inject", {"fault": "as-stuck", "as": 4, "count": 2})
    assert r["as-armed"] == 2 and r["as-filter"] == 4 and r["fired"] == 0
    assert tp_r(d, TP_AS_ARMED) == 2
    d.gpu.mmio_write(as_reg(4, AS_COMMAND), 4, CMD_UPDATE)
    r = await qmp.execute("x-mali-inject", {"fault": "disarm"})
    assert r["fired"] == 1 and r["as-active"] == 1 << 4 and r["as-armed"] == 0
    assert r["fired-log"] == ["AS4 command 1 stuck"]
    (m,) = await qmp.execute("query-mali-mmu", {"as": 4})
    assert m["registers"]["STATUS"] == 1


@pytest.mark.parametrize(("args", "desc"), [
    ({}, "Parameter 'fault' is missing"),
    ({"fault": "boom"}, "does not accept value 'boom'"),
    ({"fault": "as-stuck", "as": 16}, "Parameter 'as' expects a value in 0x0..0xf"),
    ({"fault": "as-stuck", "count": 0}, "Parameter 'count' expects a value in 0x1..0xffff"),
    ({"fault": "as-stuck", "as": "1"}, "Invalid parameter type for 'as', expected: integer"),
    ({"fault": "ping-drop", "as": 1}, "Parameter 'as' is not valid with fault 'ping-drop'"),
    ({"fault": "as-stuck", "as": 15}, "Address space 15 is not present"),
    ({"fault": "as-stuck", "bogus": 1}, "Parameter 'bogus' is unexpected"),
])
async def test_qmp_x_mali_inject_validation(qmp_dev, args: dict, desc: str) -> None:
    d, qmp = qmp_dev
    with pytest.raises(ExecuteError) as ei:
        await qmp.execute("x-mali-inject", args)
    assert ei.value.error_class == "GenericError"
    assert desc in ei.value.error.error.desc
    assert tp_r(d, TP_AS_ARMED) == 0 and tp_r(d, TP_PING_ARMED) == 0

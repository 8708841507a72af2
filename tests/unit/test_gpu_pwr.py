"""PWR_CONTROL of an arch 14 GPU, driven the way panthor 7.2's panthor_pwr.c drives it.

Offsets, bits and command encodings are written out here from panthor_pwr_regs.h, not
imported from the model.
"""

from __future__ import annotations

import pytest

from qemu_panthor.gpu.device import MaliGpu
from qemu_panthor.gpu.models import MODELS
from qemu_panthor.memory import SparseRam

PWR = 0x800
INT_RAWSTAT, INT_CLEAR, INT_MASK, INT_STAT = PWR + 0x0, PWR + 0x4, PWR + 0x8, PWR + 0xC
STATUS, COMMAND, CMDARG = PWR + 0x20, PWR + 0x28, PWR + 0x30
L2, TILER, SHADER, BASE, STACK = 0, 1, 8, 14, 15
DOMAIN_BASE = {L2: PWR + 0x100, TILER: PWR + 0x140, SHADER: PWR + 0x200, BASE: PWR + 0x380,
               STACK: PWR + 0x3C0}
READY, PWRTRANS = 0x8, 0x10
POWER_UP, POWER_DOWN, DELEGATE, RETRACT, RESET_SOFT, INSPECT = 0x10, 0x11, 0x20, 0x21, 0x31, 0xF0
# PWR_INT bits
CHANGED_SINGLE, CHANGED_ALL, DELEGATION_CHANGED, RESET_COMPLETED = 1, 2, 4, 8
RETRACT_COMPLETED, INSPECT_COMPLETED = 0x10, 0x20
NOT_ALLOWED, INVALID = 1 << 30, 1 << 31
ALL_PWR_IRQS = 0xC000003F  # PWR_INTERRUPTS_MASK
ALLOW_SOFT_RESET, ALLOW_FAST_RESET = 1 << 33, 1 << 34
# GPU_CONTROL
GPU_INT_RAWSTAT, GPU_INT_MASK = 0x20, 0x28
SHADER_PRESENT, TILER_PRESENT, L2_PRESENT = 0x100, 0x110, 0x120
MCU_STATUS_ENABLED, MCU_STATUS_HALT = 1, 2


def cmd(command: int, domain: int, subdomain: int = 0) -> int:
    """PWR_COMMAND_DEF."""
    return subdomain << 16 | domain << 8 | command


class G1:
    def __init__(self) -> None:
        self.line: list[bool] = []
        self.gpu = MaliGpu(MODELS["g1-pro"], SparseRam(),
                           on_irq=lambda name, level: self.line.append(level)
                           if name == "gpu" else None)
        self.w(INT_MASK, ALL_PWR_IRQS)  # panthor_pwr_irq_enable_events + resume

    def r(self, off: int) -> int:
        return self.gpu.mmio_read(off, 4)

    def r64(self, off: int) -> int:
        return self.gpu.mmio_read(off, 8)

    def w(self, off: int, value: int) -> None:
        self.gpu.mmio_write(off, 4, value)

    def command(self, value: int, arg: int = 0) -> int:
        """panthor_pwr_write_command, then what the IRQ handler reads (and clears)."""
        if arg:
            self.gpu.mmio_write(CMDARG, 4, arg & 0xFFFF_FFFF)
            self.gpu.mmio_write(CMDARG + 4, 4, arg >> 32)
        self.w(COMMAND, value)
        raw = self.r(INT_RAWSTAT)
        self.w(INT_CLEAR, raw)
        return raw

    def ready(self, domain: int) -> int:
        return self.r64(DOMAIN_BASE[domain] + READY)

    def l2_power_on(self) -> None:
        """panthor_pwr_l2_power_on: L2 up, then shader and tiler delegated to the MCU."""
        assert self.r64(STATUS) & 1 << L2
        assert self.r64(DOMAIN_BASE[L2] + PWRTRANS) == 0
        assert self.command(cmd(POWER_UP, L2), arg=0x1) == CHANGED_SINGLE | CHANGED_ALL
        assert self.ready(L2) == 0x1
        for d in (SHADER, TILER):
            assert self.command(cmd(DELEGATE, d)) == DELEGATION_CHANGED
            st = self.r64(STATUS)
            assert st & (1 << (16 + d) | 1 << d) == 1 << (16 + d)


def test_identity_lives_in_pwr_control() -> None:
    """panthor_gpu_info_init on arch 14 reads the PRESENT masks from PWR_CONTROL."""
    g = G1()
    assert g.r(0x0) >> 28 == 14
    assert g.r64(DOMAIN_BASE[L2]) == 0x1
    assert g.r64(DOMAIN_BASE[TILER]) == 0x1
    assert g.r64(DOMAIN_BASE[SHADER]) == 0x30003
    assert g.r64(SHADER_PRESENT) == g.r64(TILER_PRESENT) == g.r64(L2_PRESENT) == 0
    st = g.r64(STATUS)
    for d in (L2, TILER, SHADER, BASE, STACK):  # everything under the host's control
        assert st & 1 << d and not st & 1 << (16 + d)
    assert st & ALLOW_SOFT_RESET and st & ALLOW_FAST_RESET
    assert all(g.ready(d) == 0 for d in DOMAIN_BASE)
    assert g.gpu.stats["unknown_reads"] == 0


def test_l2_on_delegation_and_mcu_powered_domains() -> None:
    g = G1()
    g.l2_power_on()
    # delegated domains are the firmware's: powered while the MCU runs, down when it halts
    assert g.ready(SHADER) == g.ready(TILER) == 0
    g.gpu.mcu_status = MCU_STATUS_ENABLED
    assert (g.ready(SHADER), g.ready(TILER)) == (0x30003, 0x1)
    g.gpu.mcu_status = MCU_STATUS_HALT
    assert g.ready(SHADER) == g.ready(TILER) == 0
    # delegating again is not a change the host may ask for; L2 is never delegated
    assert g.command(cmd(DELEGATE, SHADER)) == NOT_ALLOWED
    assert g.command(cmd(DELEGATE, L2)) == NOT_ALLOWED
    # nor may the host power a delegated domain
    assert g.command(cmd(POWER_UP, TILER), arg=1) == NOT_ALLOWED


def test_force_off_retracts_what_a_hung_mcu_left_powered() -> None:
    """panthor_pwr_l2_power_off with an MCU still running: retract, power down, L2 last."""
    g = G1()
    g.l2_power_on()
    g.gpu.mcu_status = MCU_STATUS_ENABLED  # never halted
    for d, mask in ((TILER, 0x1), (SHADER, 0x30003)):
        ready = g.ready(d)
        assert ready == mask
        assert g.command(cmd(RETRACT, d)) == RETRACT_COMPLETED | DELEGATION_CHANGED
        st = g.r64(STATUS)
        assert st & (1 << (16 + d) | 1 << d) == 1 << d  # allowed, not delegated
        assert g.ready(d) == mask  # the host inherits the powered cores
        assert g.command(cmd(POWER_DOWN, d), arg=ready) == CHANGED_SINGLE | CHANGED_ALL
        assert g.ready(d) == 0
    assert g.command(cmd(POWER_DOWN, L2), arg=1) == CHANGED_SINGLE | CHANGED_ALL
    assert g.ready(L2) == 0
    # retracting what is not delegated, or L2, is refused
    assert g.command(cmd(RETRACT, TILER)) == NOT_ALLOWED
    assert g.command(cmd(RETRACT, L2)) == NOT_ALLOWED


def test_l2_off_takes_host_controlled_cores_with_it() -> None:
    g = G1()
    g.command(cmd(POWER_UP, L2), arg=1)
    g.command(cmd(POWER_UP, SHADER), arg=0xFFFF_FFFF_FFFF_FFFF)
    assert g.ready(SHADER) == 0x30003  # only PRESENT cores
    g.command(cmd(POWER_DOWN, L2), arg=1)
    assert g.ready(SHADER) == 0


def test_soft_reset_completes_on_pwr_int_and_returns_domains_to_the_host() -> None:
    """panthor_pwr_reset: clear RESET_COMPLETED, RESET_SOFT, wait for the interrupt."""
    g = G1()
    g.l2_power_on()
    g.w(GPU_INT_MASK, 0xFFFF_FFFF)
    g.gpu.mcu_status = MCU_STATUS_ENABLED  # GPU_INT MCU_STATUS_CHANGED now pending
    assert g.r(GPU_INT_RAWSTAT)
    g.w(INT_CLEAR, RESET_COMPLETED)
    g.w(COMMAND, cmd(RESET_SOFT, 0))
    assert g.r(INT_RAWSTAT) == RESET_COMPLETED and g.r(INT_STAT) == RESET_COMPLETED
    assert g.r(INT_MASK) == ALL_PWR_IRQS  # the mask survives: the driver waits on the IRQ
    assert g.r(GPU_INT_RAWSTAT) == 0  # no GPU_INT RESET_COMPLETED on this path
    st = g.r64(STATUS)
    assert all(st & 1 << d and not st & 1 << (16 + d) for d in (L2, TILER, SHADER))
    assert all(g.ready(d) == 0 for d in DOMAIN_BASE)
    assert g.r(0x704) == 0  # MCU_STATUS: the MCU is reset too


def test_bad_commands_raise_their_interrupts_and_change_nothing() -> None:
    g = G1()
    g.command(cmd(POWER_UP, L2), arg=1)
    before = [g.ready(d) for d in DOMAIN_BASE], g.r64(STATUS)
    assert g.command(0x55) == INVALID  # no such command
    assert g.command(cmd(POWER_UP, 7), arg=1) == INVALID  # no such domain
    assert g.command(cmd(INSPECT, 0)) == INSPECT_COMPLETED
    assert ([g.ready(d) for d in DOMAIN_BASE], g.r64(STATUS)) == before
    assert g.r64(DOMAIN_BASE[L2] + PWRTRANS) == 0


@pytest.mark.parametrize("order", ["pwr first", "gpu first"])
def test_gpu_int_and_pwr_int_share_the_gpu_line(order: str) -> None:
    g = G1()
    g.w(GPU_INT_MASK, 0xFFFF_FFFF)
    g.w(COMMAND, cmd(INSPECT, 0))  # PWR_INT
    g.gpu.mcu_status = MCU_STATUS_ENABLED  # GPU_INT MCU_STATUS_CHANGED
    assert g.line == [True]
    first, second = ((INT_CLEAR, INSPECT_COMPLETED), (GPU_INT_RAWSTAT + 4, 0xFFFF_FFFF))
    if order == "gpu first":
        first, second = second, first
    g.w(*first)
    assert g.line == [True]  # the other block still holds it
    g.w(*second)
    assert g.line == [True, False]


def test_query_mali_gpu_reports_pwr_control_domains() -> None:
    """QMP shows what PWR_CONTROL says: per domain PRESENT, READY and who controls it."""
    from qemu_panthor.device import MaliPciFunction
    from qemu_panthor.qmp.commands import MaliIntrospection

    dev = MaliPciFunction(MODELS["g1-pro"])
    gpu = dev.gpu
    q = MaliIntrospection(dev)
    gpu.mmio_write(CMDARG, 4, 1)
    gpu.mmio_write(COMMAND, 4, cmd(POWER_UP, L2))
    gpu.mmio_write(COMMAND, 4, cmd(DELEGATE, SHADER))
    out = q.query_gpu()
    assert out["name"] == "Mali-G1-Pro" and out["arch"] == "14.8.0"
    power = out["power"]
    assert power["l2"] == {"present": 1, "ready": 1, "delegated": False}
    assert power["shader"] == {"present": 0x30003, "ready": 0, "delegated": True}
    assert set(power) == {"l2", "tiler", "shader", "base", "stack"}
    assert out["irq"]["pwr"]["rawstat"] == CHANGED_SINGLE | CHANGED_ALL | DELEGATION_CHANGED
    assert out["identity"]["SHADER_PRESENT"] == 0

"""Test doubles for the GPU device tests: a controllable clock and an MCU recorder."""

from __future__ import annotations

from qemu_panthor.gpu import MaliGpu
from qemu_panthor.gpu.models import G610, GpuModel
from qemu_panthor.memory import SparseRam


class FakeClock:
    """Nanosecond clock; each call returns ``ns`` and then advances it by ``step``."""

    def __init__(self, ns: int = 0, step: int = 0) -> None:
        self.ns = ns
        self.step = step

    def __call__(self) -> int:
        now = self.ns
        self.ns += self.step
        return now


class RecordingMcu:
    """McuHooks that records calls; optionally behaves like firmware setting MCU_STATUS."""

    def __init__(self, gpu: MaliGpu | None = None, *, raise_on: str | None = None) -> None:
        self.calls: list[tuple[str, int | None]] = []
        self.gpu = gpu
        self.raise_on = raise_on

    def _rec(self, name: str, arg: int | None) -> None:
        self.calls.append((name, arg))
        if self.raise_on == name:
            raise RuntimeError(f"hook {name} exploded")

    def mcu_control(self, value: int) -> None:
        self._rec("mcu_control", value)
        if self.gpu is not None:
            self.gpu.mcu_status = {0: 0, 1: 1, 2: 1}.get(value, 3)

    def doorbell(self, index: int) -> None:
        self._rec("doorbell", index)

    def gpu_reset(self) -> None:
        self._rec("gpu_reset", None)


class Rig:
    """A MaliGpu with recorded IRQ line changes."""

    def __init__(
        self,
        model: GpuModel = G610,
        *,
        clock: FakeClock | None = None,
        trace: bool = False,
        timestamp_hz: int | None = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.lines: list[tuple[str, bool]] = []
        self.gpu = MaliGpu(
            model,
            SparseRam(),
            on_irq=lambda name, level: self.lines.append((name, level)),
            trace=trace,
            clock=self.clock,
            timestamp_hz=timestamp_hz,
        )

    def r32(self, off: int) -> int:
        return self.gpu.mmio_read(off, 4)

    def w32(self, off: int, value: int) -> None:
        self.gpu.mmio_write(off, 4, value)

    def r64(self, off: int) -> int:
        """gpu_read64: LO then HI."""
        lo = self.r32(off)
        return lo | (self.r32(off + 4) << 32)

    def w64(self, off: int, value: int) -> None:
        """gpu_write64: LO first, then HI."""
        self.w32(off, value & 0xFFFFFFFF)
        self.w32(off + 4, value >> 32)

"""Mali CSF GPU device model: register window, identity, power, reset, caches, timers.

``MaliGpu`` decodes the 2 MiB MMIO window; the CSF firmware model attaches itself as
``MaliGpu.mcu`` (an object implementing :class:`McuHooks`).
"""

from __future__ import annotations

from typing import Protocol


class McuHooks(Protocol):
    """What the GPU forwards to the firmware (MCU) model."""

    def mcu_control(self, value: int) -> None: ...  # MCU_CONTROL (0x700) write

    def doorbell(self, index: int) -> None: ...  # write to CSF_DOORBELL(index)

    def gpu_reset(self) -> None: ...  # GPU soft/hard reset: MCU stops, state lost


from .device import MaliGpu  # noqa: E402
from .models import MODELS, GpuModel, lookup_model  # noqa: E402

__all__ = ["MODELS", "GpuModel", "MaliGpu", "McuHooks", "lookup_model"]

"""Mali CSF GPU device model: register window, identity, power, reset, caches, timers.

``MaliGpu`` decodes the 2 MiB MMIO window; the CSF firmware model attaches itself as
``MaliGpu.mcu`` (an object implementing :class:`McuHooks`).
"""

from .device import MaliGpu, McuHooks
from .models import MODELS, GpuModel, lookup_model

__all__ = ["MODELS", "GpuModel", "MaliGpu", "McuHooks", "lookup_model"]

"""vfio-user server transport (device-agnostic): serves one PciFunction to QEMU's vfio-user-pci.

See docs/vfio-user.md for the message flow, interrupt semantics and DMA.
"""

from .pci import Bar, BarSpec, MsixCapability, PciFunction
from .server import ProtocolError, ServerStats, VfioUserServer

__all__ = [
    "Bar",
    "BarSpec",
    "MsixCapability",
    "PciFunction",
    "ProtocolError",
    "ServerStats",
    "VfioUserServer",
]

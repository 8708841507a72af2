"""vfio-user server transport (device-agnostic): serves one PciFunction to QEMU's vfio-user-pci.

See docs/vfio-user.md for the message flow, interrupt semantics and DMA.
"""

from .errors import ProtocolError
from .pci import Bar, BarSpec, MsixCapability, PciFunction
from .server import VfioUserServer
from .stats import ServerStats

__all__ = [
    "Bar",
    "BarSpec",
    "MsixCapability",
    "PciFunction",
    "ProtocolError",
    "ServerStats",
    "VfioUserServer",
]

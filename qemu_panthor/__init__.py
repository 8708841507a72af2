"""qemu-panthor: an Arm Mali CSF GPU (Mali-G610) device model served to QEMU over vfio-user."""

__version__ = "0.1.0"

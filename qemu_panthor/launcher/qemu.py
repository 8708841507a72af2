"""The QEMU command line for a guest on the emulated GPU."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..setup.recipes import GuestArch, guest_arch
from ..setup.toolroot import ToolRoot
from .dtb import GPU_PCI_ADDR

HOTPLUG_PORT = "gpu-port"
SHARE_SLOT = 0x10  # first PCI slot of the virtio-9p shares
DISPLAY_SLOT = 0x3  # the display controller's slot, beside the GPU's (02.0)


@dataclass
class QemuConfig:
    kernel: Path
    initrd: Path
    append: str
    qmp_socket: Path
    gpu_socket: Path | None
    arch: GuestArch = field(default_factory=guest_arch)  # the machine (images/arches.toml)
    memory_mb: int = 1024
    smp: int = 2
    interactive: bool = False
    dtb: Path | None = None
    # Put the GPU behind a PCIe root port (0000:01:00.0) so it can be hot-unplugged with QMP
    # device_del; the default slot on the root bus (0000:00:02.0) cannot be.
    hotplug: bool = False
    # Host directories shared read-only into the guest with virtio-9p: (mount tag, path).
    shares: list[tuple[str, Path]] = field(default_factory=list)
    # The arch's display controller (images/arches.toml `display`) at DISPLAY_SLOT.
    display: bool = False


def machine_argv(root: ToolRoot, cfg: QemuConfig) -> list[str]:
    """The machine alone (no GPU device, no QMP): also what dumpdtb runs."""
    argv = [
        *root.qemu_argv(cfg.arch),
        "-M", cfg.arch.machine,
        "-cpu", cfg.arch.cpu,
        *cfg.arch.args,
        "-smp", str(cfg.smp),
        "-name", "qemu-panthor,debug-threads=on",
        "-m", f"{cfg.memory_mb}M",
        # Guest RAM in a shared memfd: DMA_MAP hands the backend its fd, so the GPU model
        # reads page tables and command streams in place instead of by socket round trips.
        "-object", f"memory-backend-memfd,id=mem,size={cfg.memory_mb}M,share=on",
        "-machine", "memory-backend=mem",
        "-display", "none",
        "-serial", "stdio",
        "-monitor", "none",
        "-no-reboot",
        "-kernel", str(cfg.kernel),
        "-initrd", str(cfg.initrd),
        "-append", cfg.append,
    ]
    if cfg.dtb is not None:
        argv += ["-dtb", str(cfg.dtb)]
    if cfg.display and cfg.arch.display:
        argv += ["-device", f"{cfg.arch.display},addr={DISPLAY_SLOT:#x}.0"]
    for i, (tag, path) in enumerate(cfg.shares):
        # slots from SHARE_SLOT on: clear of the GPU's fixed slot
        # QEMU's option syntax: a comma in a value is written twice
        argv += ["-fsdev", f"local,id={tag},path={str(path).replace(',', ',,')},"
                           "security_model=none,readonly=on",
                 "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag},"
                            f"addr={SHARE_SLOT + i:#x}.0"]
    return argv


def qemu_argv(root: ToolRoot, cfg: QemuConfig) -> list[str]:
    argv = [
        *machine_argv(root, cfg),
        "-chardev", f"socket,id=qmp,path={cfg.qmp_socket}",
        "-qmp", "chardev:qmp",
    ]
    if cfg.gpu_socket is not None:
        # A fixed slot: the glue names its device-tree nodes after the PCI address.
        dev: dict[str, object] = {"driver": "vfio-user-pci", "id": "gpu0", "addr": GPU_PCI_ADDR,
                                  "socket": {"type": "unix", "path": str(cfg.gpu_socket)}}
        if cfg.hotplug:
            port = {"driver": "pcie-root-port", "id": HOTPLUG_PORT, "chassis": 1,
                    "addr": GPU_PCI_ADDR}
            argv += ["-device", json.dumps(port, separators=(",", ":"))]
            dev.update(bus=HOTPLUG_PORT, addr="00.0")
        argv += ["-device", json.dumps(dev, separators=(",", ":"))]
    return argv

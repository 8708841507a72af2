"""The QEMU command line for a guest on the emulated GPU."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..setup.toolroot import ToolRoot

# Pointer authentication: -cpu max emulates QARMA5 by default, which is slow under TCG.
# pauth-impdef=on uses QEMU's cheap implementation-defined algorithm (measured in
# bench/bench_boot.py); the guest kernel cannot tell the difference.
CPU = "max,pauth-impdef=on"


@dataclass
class QemuConfig:
    kernel: Path
    initrd: Path
    append: str
    qmp_socket: Path
    gpu_socket: Path | None
    memory_mb: int = 1024
    smp: int = 2
    cpu: str = field(default_factory=lambda: CPU)
    interactive: bool = False


def qemu_argv(root: ToolRoot, cfg: QemuConfig) -> list[str]:
    argv = [
        *root.qemu_argv(),
        "-M", "virt,gic-version=3",
        "-cpu", cfg.cpu,
        "-smp", str(cfg.smp),
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
        "-chardev", f"socket,id=qmp,path={cfg.qmp_socket}",
        "-qmp", "chardev:qmp",
    ]
    if cfg.gpu_socket is not None:
        dev = {"driver": "vfio-user-pci", "id": "gpu0",
               "socket": {"type": "unix", "path": str(cfg.gpu_socket)}}
        argv += ["-device", json.dumps(dev, separators=(",", ":"))]
    return argv

"""Shared fixtures: the cached images (set-up runs on demand) and a guest booter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qemu_panthor.launcher.boot import Boot, BootResult
from qemu_panthor.setup.pipeline import Images, ensure_images
from qemu_panthor.setup.toolroot import ToolRoot

KERNEL_LINE = os.environ.get("QEMU_PANTHOR_KERNEL", "7.2")


@pytest.fixture(scope="session")
def images() -> Images:
    """The image set for the kernel line under test (built into the cache if missing)."""
    return ensure_images(KERNEL_LINE)


@pytest.fixture(scope="session")
def toolroot(images: Images) -> ToolRoot:
    return images.qemu


@pytest.fixture
def boot_guest(images: Images):
    """``await boot_guest(run=..., **kw)`` boots the real guest and returns its BootResult."""

    async def _boot(run: str = "none", *, gpu: str = "g610", with_gpu: bool = True,
                    timeout: float = 300, append: str = "", trace: bool = False,
                    qmp: str | None = None, coherent: bool = False,
                    timeline: Path | None = None) -> BootResult:
        b = Boot(images, gpu=gpu, run=run, qmp=qmp, trace=trace, timeout=timeout,
                 append=append, with_gpu=with_gpu, echo=False, keep=False, coherent=coherent,
                 timeline=timeline)
        return await b.run()

    return _boot


@pytest.fixture(scope="session")
def images_612() -> Images:
    """Debian's 6.12 (trixie) kernel line: no CONFIG_OF_DYNAMIC, older panthor uAPI."""
    return ensure_images("6.12")


@pytest.fixture
def boot_guest_612(images_612: Images):
    async def _boot(run: str = "none", *, gpu: str = "g610", timeout: float = 300,
                    append: str = "") -> BootResult:
        b = Boot(images_612, gpu=gpu, run=run, qmp=None, trace=False, timeout=timeout,
                 append=append, echo=False, keep=False)
        return await b.run()

    return _boot

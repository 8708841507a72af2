"""What ``boot --run`` runs besides the selftests: suites from a Debian userland the guest
chroots into (IGT's panthor tests, vulkaninfo through panvk). Each brings its shares and guest
files and judges its own results after the run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import igt, vulkan

if TYPE_CHECKING:
    from .boot import BootResult


class GuestSuite(Protocol):
    def shares(self) -> list[tuple[str, Path]]: ...  # virtio-9p (mount tag, host directory)
    def guest_files(self) -> dict[str, tuple[bytes, int]]: ...  # initramfs path -> data, mode
    def report(self, result: BootResult, code: int) -> int: ...  # prints; the exit code


def suite_arch(run: str) -> str | None:
    """The guest architecture a suite runs on unless --arch says otherwise."""
    if run == "igt":
        return igt.userland_arch()
    if run == "vulkaninfo":
        return vulkan.userland_arch()
    return None


def prepare(args: argparse.Namespace, arch: str | None) -> GuestSuite | None:
    """The suite ``--run`` names, its userland made (or found) in the cache; None for the
    selftests, a shell or nothing."""
    from ..setup.recipes import guest_arch

    name = guest_arch(arch).name
    if args.run == "igt":
        return igt.prepare(args, name)
    if args.run == "vulkaninfo":
        return vulkan.prepare(name, args.gpu)
    return None


__all__ = ["GuestSuite", "prepare", "suite_arch"]

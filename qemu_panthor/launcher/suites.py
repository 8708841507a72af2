"""What ``boot --run`` runs besides the selftests: suites from a Debian userland the guest
chroots into (IGT's panthor tests, vulkaninfo and vkmark through panvk). Each brings its
shares and guest files and judges its own results after the run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from . import igt, vkmark, vulkan

if TYPE_CHECKING:
    from .boot import BootResult


class GuestSuite(Protocol):
    def shares(self) -> list[tuple[str, Path]]: ...  # virtio-9p (mount tag, host directory)
    def guest_files(self) -> dict[str, tuple[bytes, int]]: ...  # initramfs path -> data, mode
    # loaded after the GPU's device, if present; a suite with some gets the arch's display
    def late_modules(self) -> list[str]: ...
    def report(self, result: BootResult, code: int) -> int: ...  # prints; the exit code


#: The userland (images/userlands.toml) each suite runs from.
USERLAND = {"igt": "igt", "vulkaninfo": "vulkan", "vkmark": "vulkan"}
#: Options that only mean something to one suite.
SUITE_OPTIONS = {"igt": ("igt_tests", "igt_expectations", "igt_build"),
                 "vkmark": ("vkmark_scenes",)}


def suite_arch(run: str) -> str | None:
    """The guest architecture a suite runs on unless --arch says otherwise."""
    from ..setup.userland import userland_arch

    return userland_arch(USERLAND[run]) if run in USERLAND else None


def prepare(args: argparse.Namespace, arch: str | None) -> GuestSuite | None:
    """The suite ``--run`` names, its userland made (or found) in the cache; None for the
    selftests, a shell or nothing."""
    from ..errors import UserError
    from ..setup.recipes import guest_arch

    for run, options in SUITE_OPTIONS.items():
        given = [o for o in options if getattr(args, o, None)]
        if given and args.run != run:
            flags = ", ".join("--" + o.replace("_", "-") for o in given)
            raise UserError(f"{flags}: only with --run {run}")
    name = guest_arch(arch).name
    if args.run == "igt":
        return igt.prepare(args, name)
    if args.run == "vulkaninfo":
        return vulkan.prepare(name, args.gpu)
    if args.run == "vkmark":
        return vkmark.prepare(name, args.vkmark_scenes)
    return None


__all__ = ["GuestSuite", "prepare", "suite_arch"]

"""``boot --run vulkaninfo``: ``vulkaninfo --summary`` in the arm64 guest through Mesa's panvk,
from Debian's vulkan-tools and mesa-vulkan-drivers (the ``vulkan`` userland).

vulkaninfo creates a VkDevice for every GPU it lists, so a listed Mali-G610 means panvk's
device initialisation ran on the emulated GPU: VM_CREATE, TILER_HEAP_CREATE, a group of three
queues, and one init command stream per queue (MOVE48, SET_SB_ENTRY, HEAP_SET), each
submitted and waited for (docs/igt.md, "Mesa's panvk").
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..setup.userland import Userland
from .guestfiles import USERLAND_TAG, runner_output, userland_guest_files

if TYPE_CHECKING:
    from .boot import BootResult

_FIELD = re.compile(r"^\s*(deviceName|driverName|driverInfo|vendorID|deviceType|apiVersion)"
                    r"\s*=\s*(.*?)\s*$")


@dataclass
class VulkanDevice:
    fields: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        f = self.fields
        return (f"{f.get('deviceName', '?')} ({f.get('driverName', '?')} "
                f"{f.get('driverInfo', '')}, Vulkan {f.get('apiVersion', '?')})").replace(
                    " ,", ",")


def parse(console: list[str]) -> tuple[list[VulkanDevice], list[str], int | None]:
    """The devices ``--summary`` listed, vulkaninfo's output, its exit status."""
    out, rc = runner_output(console, "vulkaninfo")
    devices: list[VulkanDevice] = []
    for line in out:
        if re.match(r"^GPU\d+:\s*$", line.strip()):
            devices.append(VulkanDevice())
            continue
        f = _FIELD.match(line)
        if f and devices:
            devices[-1].fields[f.group(1)] = f.group(2)
    return devices, out, rc


@dataclass
class VulkanPlan:
    userland: Userland
    expect: str  # the GPU's name, as panvk reports it ("Mali-G610")

    def shares(self) -> list[tuple[str, Path]]:
        return [(USERLAND_TAG, self.userland.path)]

    def late_modules(self) -> list[str]:
        return []

    def guest_files(self) -> dict[str, tuple[bytes, int]]:
        return userland_guest_files("vulkaninfo")

    def report(self, result: BootResult, code: int) -> int:
        err = sys.stderr
        devices, out, rc = parse(result.console)
        found = [d for d in devices if d.fields.get("deviceName", "").startswith(self.expect)]
        if found:
            print(f"vulkaninfo: {found[0].describe()}")
            return code
        for line in out[-15:]:
            print(f"qemu-panthor: vulkaninfo: {line}", file=err)
        listed = ", ".join(d.fields.get("deviceName", "?") for d in devices) or "no device"
        print(f"vulkaninfo: {self.expect} not listed ({listed}; vulkaninfo exit {rc})")
        return code or 1


def prepare(arch_name: str, gpu: str) -> VulkanPlan:
    """The vulkaninfo run on a guest of ``arch_name``, expecting ``gpu``'s name."""
    from ..gpu.models import MODELS
    from ..setup.userland import ensure_userland, userland_arch

    if arch_name != userland_arch("vulkan"):
        raise UserError(f"--run vulkaninfo runs in the {userland_arch('vulkan')} guest "
                        "(Mesa's panvk "
                        f"for the GPU's own platform), not {arch_name}")
    return VulkanPlan(ensure_userland("vulkan"), expect=MODELS[gpu].model_name)


__all__ = ["VulkanDevice", "VulkanPlan", "parse", "prepare"]

"""``boot --run vkmark``: vkmark's scenes rendered headless in the arm64 guest through Mesa's
panvk (guest/vkmark), from Debian's vkmark and mesa-vulkan-drivers (the ``vulkan`` userland).

Real Mesa command streams on the emulated GPU: draws with a tiler heap, fragment passes,
clears and blits, fences, one frame after another. The model runs no shaders, so nothing
checks the pictures; a run passes when every scene reports its frame rate and vkmark exits
0 (a lost device, a job timeout or a GPU fault ends it earlier). ``--vkmark-scenes`` (vkmark
``-b`` options, comma-separated) replaces the default list.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..setup.userland import Userland
from .guestfiles import USERLAND_TAG, runner_output, userland_guest_files

if TYPE_CHECKING:
    from .boot import BootResult

#: "[cube] duration=1: FPS: 149 FrameTime: 6.711 ms"
_SCENE = re.compile(r"^\[(\S+)\]\s*(.*?):\s*FPS:\s*(\d+)\s+FrameTime:\s*([\d.]+)\s*ms")
_SCENE_OPT = re.compile(r"^[a-z0-9-]+(:[a-z0-9-]+=[a-z0-9.-]+)*$")
#: vkmark's own default scenes, one second each
DEFAULT_SCENES = (
    "vertex:duration=1", "texture:duration=1", "shading:shading=gouraud:duration=1",
    "shading:shading=blinn-phong-inf:duration=1", "shading:shading=phong:duration=1",
    "shading:shading=cel:duration=1", "effect2d:kernel=edge:duration=1",
    "effect2d:kernel=blur:duration=1", "desktop:duration=1", "cube:duration=1",
    "clear:duration=1",
)


@dataclass(frozen=True)
class Scene:
    name: str
    options: str
    fps: int
    frame_ms: float


def parse(console: list[str]) -> tuple[list[Scene], list[str], int | None]:
    """The scenes vkmark reported, its output, its exit status."""
    out, rc = runner_output(console, "vkmark")
    scenes = [Scene(m.group(1), m.group(2), int(m.group(3)), float(m.group(4)))
              for m in (_SCENE.match(line.strip()) for line in out) if m]
    return scenes, out, rc


def scene_list(value: str) -> list[str]:
    """``--vkmark-scenes`` checked: vkmark ``-b`` options (scene[:key=value...]) separated by
    commas; no spaces or shell characters (the guest's shell passes each as one word)."""
    scenes = [s for s in value.split(",") if s]
    bad = [s for s in scenes if not _SCENE_OPT.match(s)]
    if not scenes or bad:
        raise UserError(f"--vkmark-scenes {value!r}: give vkmark -b options separated by "
                        "commas, e.g. cube:duration=2,clear (letters, digits, '-', '.', ':' "
                        "and '=' only)")
    return scenes


@dataclass
class VkmarkPlan:
    userland: Userland
    scenes: list[str]

    def shares(self) -> list[tuple[str, Path]]:
        return [(USERLAND_TAG, self.userland.path)]

    def late_modules(self) -> list[str]:
        return []

    def guest_files(self) -> dict[str, tuple[bytes, int]]:
        scenes = "".join(s + "\n" for s in self.scenes).encode()  # one -b option per line
        return {"etc/qp/vkmark-scenes": (scenes, 0o644), **userland_guest_files("vkmark")}

    def report(self, result: BootResult, code: int) -> int:
        scenes, out, rc = parse(result.console)
        for s in scenes:
            print(f"vkmark: [{s.name}] {s.options}: {s.fps} FPS, {s.frame_ms:.3f} ms per frame")
        if rc == 0 and len(scenes) == len(self.scenes):
            print(f"vkmark: {len(scenes)} scenes rendered")
            return code
        for line in out[-15:]:
            print(f"qemu-panthor: vkmark: {line}", file=sys.stderr)
        print(f"vkmark: {len(scenes)} of {len(self.scenes)} scenes rendered; vkmark exit "
              f"{rc if rc is not None else 'missing (it never finished)'}")
        return code or 1


def prepare(arch_name: str, scenes: str | None) -> VkmarkPlan:
    """The vkmark run on a guest of ``arch_name``."""
    from ..setup.userland import ensure_userland, userland_arch

    if arch_name != userland_arch("vulkan"):
        raise UserError(f"--run vkmark runs in the {userland_arch('vulkan')} guest (Mesa's "
                        f"panvk for the GPU's own platform), not {arch_name}")
    chosen = scene_list(scenes) if scenes else list(DEFAULT_SCENES)
    return VkmarkPlan(ensure_userland("vulkan"), chosen)


__all__ = ["DEFAULT_SCENES", "Scene", "VkmarkPlan", "parse", "prepare", "scene_list"]

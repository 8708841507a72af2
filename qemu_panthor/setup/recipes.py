"""The image recipes in ``images/*.toml``, loaded as data."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import UserError

IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"
GUEST_DIR = Path(__file__).resolve().parents[2] / "guest"


def load_recipe(name: str) -> dict[str, Any]:
    """``images/<name>`` (TOML), parsed once."""
    return _load(name)


@cache
def _load(name: str) -> dict[str, Any]:
    path = IMAGES_DIR / name
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as e:
        raise UserError(f"cannot read image recipe {path}: {e.strerror}") from None


@dataclass(frozen=True)
class KernelLine:
    name: str
    suite: str
    min_kernel: str
    kernel_packages: tuple[str, ...]
    header_packages: tuple[str, ...] = ()
    boot_dtb_nodes: bool = False
    source_package: str | None = None  # the Debian package holding this line's source


def kernel_lines() -> dict[str, KernelLine]:
    lines = _load("lines.toml")["lines"]
    return {
        name: KernelLine(name, d["suite"], d["min_kernel"], tuple(d["kernel_packages"]),
                         tuple(d.get("header_packages", ())), bool(d.get("boot_dtb_nodes")),
                         d.get("source_package"))
        for name, d in lines.items()
    }


def kernel_line(name: str) -> KernelLine:
    lines = kernel_lines()
    if name not in lines:
        raise UserError(f"unknown kernel line {name!r}; choose one of: {', '.join(sorted(lines))}")
    return lines[name]


def qemu_recipe() -> dict[str, Any]:
    return dict(_load("lines.toml")["qemu"])


def root_recipe(suite: str) -> dict[str, Any]:
    roots = _load("toolroot.toml")["roots"]
    if suite not in roots:
        raise UserError(f"no tool-root recipe for suite {suite!r} in images/toolroot.toml")
    return dict(roots[suite])


def guest_recipe() -> dict[str, Any]:
    return dict(_load("toolroot.toml")["guest"])


@dataclass(frozen=True)
class GuestArch:
    """A guest architecture (images/arches.toml): how to build for it and the machine QEMU
    emulates around the GPU."""

    name: str
    debian: str
    triplet: str
    kernel_arch: str
    cross_compile: str
    cc: str
    kernel_target: str
    kernel_image: str
    kernel_config: str
    qemu: str
    machine: str  # -M
    cpu: str  # -cpu
    args: tuple[str, ...]  # more QEMU arguments for this machine
    console: str
    dtb: bool
    #: a display controller beside the GPU when a suite asks for one (QEMU -device driver;
    #: "" none): IGT's prime tests import its dumb buffers
    display: str = ""

    @property
    def make_vars(self) -> list[str]:
        return [f"ARCH={self.kernel_arch}", f"CROSS_COMPILE={self.cross_compile}"]


def guest_arches() -> dict[str, GuestArch]:
    return {name: GuestArch(name, d["debian"], d["triplet"], d["kernel_arch"],
                            d["cross_compile"], d["cc"], d["kernel_target"], d["kernel_image"],
                            d["kernel_config"], d["qemu"], d["machine"], d["cpu"],
                            tuple(d["args"]), d["console"], bool(d["dtb"]),
                            str(d.get("display", "")))
            for name, d in _load("arches.toml")["arch"].items()}


def guest_arch(name: str | None = None) -> GuestArch:
    arches = guest_arches()
    name = name or str(_load("arches.toml")["default"])
    if name not in arches:
        raise UserError(f"unknown guest architecture {name!r}; choose one of: "
                        f"{', '.join(sorted(arches))}")
    return arches[name]


def default_line() -> str:
    return str(_load("lines.toml")["default"])


def initramfs_recipe() -> dict[str, Any]:
    return dict(_load("initramfs.toml"))


@dataclass(frozen=True)
class PatchedBuild:
    """A kernel built here from Debian's source with this project's patches
    (images/kernel/builds.toml), booted by name."""

    name: str
    configs: tuple[str, ...]  # images/kernel/<name>.config fragments
    patches: tuple[Path, ...]


def patched_builds() -> dict[str, PatchedBuild]:
    data = _load("kernel/builds.toml").get("builds", {})
    return {name: PatchedBuild(name, tuple(d.get("config", [])),
                               tuple(IMAGES_DIR / "kernel" / p for p in d.get("patches", [])))
            for name, d in data.items()}


def driver_modules(driver: str) -> list[str]:
    """The module roots of a GPU driver's chain (images/initramfs.toml [drivers])."""
    drivers: dict[str, list[str]] = initramfs_recipe()["drivers"]
    if driver not in drivers:
        raise UserError(f"no module chain for driver {driver!r} in images/initramfs.toml; "
                        f"known: {', '.join(sorted(drivers))}")
    return list(drivers[driver])


def version_tuple(v: str) -> tuple[int, ...]:
    """Leading numeric components of a version: '1:11.1.3+ds-1' -> (11, 1, 3)."""
    v = v.split(":", 1)[-1]
    m = re.match(r"(\d+(?:\.\d+)*)", v)
    if not m:
        return ()
    return tuple(int(x) for x in m.group(1).split("."))


def at_least(v: str, minimum: str) -> bool:
    return version_tuple(v) >= version_tuple(minimum)

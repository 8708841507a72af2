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


def default_line() -> str:
    return str(_load("lines.toml")["default"])


def initramfs_recipe() -> dict[str, Any]:
    return dict(_load("initramfs.toml"))


def version_tuple(v: str) -> tuple[int, ...]:
    """Leading numeric components of a version: '1:11.1.3+ds-1' -> (11, 1, 3)."""
    v = v.split(":", 1)[-1]
    m = re.match(r"(\d+(?:\.\d+)*)", v)
    if not m:
        return ()
    return tuple(int(x) for x in m.group(1).split("."))


def at_least(v: str, minimum: str) -> bool:
    return version_tuple(v) >= version_tuple(minimum)

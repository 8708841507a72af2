"""What building a guest kernel needs: the kbuild tool root and Debian's kernel source.

Both are resolved once and recorded in the cache manifest (``roots.kbuild``,
``kernel_sources``), so a later build needs no network.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import recipes
from .cache import Cache, progress, remove_tree
from .pipeline import _download, ensure_host_tools, ensure_images, ensure_root, run
from .sandbox import ROOT_ENV, root_argv
from .toolroot import ToolRoot

KBUILD_ROOT = "kbuild"


@dataclass(frozen=True)
class KernelSource:
    path: Path  # the top of the unpacked tree (holds Makefile)
    package: str
    version: str


def ensure_kbuild_root(cache: Cache, *, refresh: bool = False) -> tuple[ToolRoot, dict[str, str]]:
    """The tool root that builds kernels (make, host gcc, flex, bison, the cross gcc)."""
    entry = cache.manifest().get("roots", {}).get(KBUILD_ROOT)
    recipe_ok = entry is not None and entry.get("recipe") == _recipe_hash()
    if entry and recipe_ok and not refresh and (cache.path("roots", entry["dir"]) / "usr").is_dir():
        return ToolRoot(cache.path("roots", entry["dir"])), entry
    ensure_host_tools()
    with cache.locked():
        return ensure_root(cache, KBUILD_ROOT, refresh=refresh)


def _recipe_hash() -> str:
    from .pipeline import _recipe_hash as rh

    return rh(recipes.root_recipe(KBUILD_ROOT))


def run_in_root(root: ToolRoot, argv: list[str], *, desc: str, binds: list[Path],
                cwd: str = "/", quiet: bool = False, capture: bool = False) -> str:
    return run(root_argv(root.path, argv, binds=binds, cwd=cwd), desc=desc, env=dict(ROOT_ENV),
               quiet=quiet, capture=capture)


def source_package(line: recipes.KernelLine, kver: str) -> str:
    if not line.source_package:
        raise UserError(f"kernel line {line.name} names no source package (images/lines.toml); "
                        "pass --source DIR")
    m = re.match(r"(\d+)\.(\d+)", kver)
    if not m:
        raise UserError(f"cannot tell the major.minor of kernel version {kver!r}")
    return line.source_package.format(kmm=f"{m.group(1)}.{m.group(2)}")


def ensure_linux_source(cache: Cache, line_name: str | None = None) -> KernelSource:
    """Debian's kernel source for ``line_name`` (default: the default line), unpacked in
    ``sources/<package>_<version>/``."""
    line = recipes.kernel_line(line_name or recipes.default_line())
    kver = ensure_images(line.name).kver
    pkg = source_package(line, kver)
    known = cache.manifest().get("kernel_sources", {}).get(pkg)
    if known and (cache.root / known["dir"] / "Makefile").is_file():
        return KernelSource(cache.root / known["dir"], pkg, known["version"])
    root, info = ensure_kbuild_root(cache)
    if info["suite"] != line.suite:
        raise UserError(f"the kbuild root is {info['suite']}, the {line.name} line's source "
                        f"is in {line.suite}: pass --source DIR")
    with cache.locked():
        t0 = time.monotonic()
        debs = _download(root, [pkg], f"kernel source {pkg}")
        version = debs[0].name.split("_")[1].replace("%3a", ":")
        tmp = cache.new_tmp("source")
        progress(f"unpacking {debs[0].name} ...")
        tarball = f"./usr/src/{pkg}.tar.xz"
        run_in_root(root, ["sh", "-c", f"dpkg-deb --fsys-tarfile /qp-dl/{debs[0].name} | "
                           f"tar -xO {tarball} | tar -xJ -C {tmp}"],
                    desc=f"unpack {pkg}", binds=[tmp])
        tops = [p for p in tmp.iterdir() if (p / "Makefile").is_file()]
        if len(tops) != 1:
            raise UserError(f"{debs[0].name}: expected one kernel tree in {tarball}")
        name = f"{pkg}_{version}".replace(":", "_")
        final = cache.commit(tmp, cache.path("sources", name))
        remove_tree(root.path / "qp-dl")
        top = final / tops[0].name
        sources = cache.manifest().get("kernel_sources", {})
        sources[pkg] = {"version": version, "dir": str(top.relative_to(cache.root)),
                        "line": line.name, "kver": kver}
        cache.update_manifest("kernel_sources", sources)
        progress(f"kernel source {pkg} {version} ready in {time.monotonic() - t0:.0f} s")
    return KernelSource(top, pkg, version)


__all__ = ["KBUILD_ROOT", "KernelSource", "ensure_kbuild_root", "ensure_linux_source",
           "run_in_root"]

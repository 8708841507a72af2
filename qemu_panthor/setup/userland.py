"""Guest userlands made from Debian binary packages: IGT's panthor tests (amd64) and Vulkan
(arm64), as ``images/userlands.toml`` describes them.

A userland is a directory the launcher shares into the guest read-only (virtio-9p), and the
guest chroots into. It holds only what its programs need: the recipe's programs, the shared
libraries they need (DT_NEEDED, followed through the unpacked packages), their loader, and the
data files the recipe names. The package set is what apt resolves for the recipe with *no*
package installed (so nothing of the tool root leaks in); packages are downloaded and
unpacked, never installed. The cache entry is keyed by the resolved versions and the recipe.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import recipes
from .cache import Cache, progress, remove_tree
from .elf import elf_deps, is_elf
from .pipeline import APT_OPTS, chroot, ensure_images
from .toolroot import ToolRoot

USERLANDS = "userlands"
#: Bumped when what a userland holds changes (trim rules, mount points): cached ones are remade.
USERLAND_FORMAT = 2
# Mount points the guest uses inside the (read-only) share (guest/userland.sh, guest/igt).
MOUNT_POINTS = ("dev", "proc", "sys", "tmp", "host")
# usr-merged Debian: the top-level directories are links into /usr.
USR_LINKS = ("bin", "sbin", "lib", "lib64")
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) [^\[]*\[([^\]]+)\]")


@dataclass(frozen=True)
class Userland:
    name: str
    path: Path
    arch: recipes.GuestArch
    programs: tuple[str, ...]  # paths inside the userland
    packages: dict[str, str]  # package:arch -> version


def userland_arch(name: str) -> str:
    """The guest architecture userland ``name`` is for."""
    return str(userland_recipe(name)["arch"])


def userland_recipe(name: str) -> dict[str, Any]:
    lands = recipes.load_recipe("userlands.toml")["userland"]
    if name not in lands:
        raise UserError(f"no userland {name!r} in images/userlands.toml "
                        f"(have: {', '.join(sorted(lands))})")
    return dict(lands[name])


def _apt(root: ToolRoot, arch: recipes.GuestArch, *args: str, desc: str,
         capture: bool = True) -> str:
    """apt-get in the tool root as if no package were installed (an empty dpkg status),
    for the native and the guest's architecture."""
    empty = root.path / "qp-empty-status"
    empty.write_text("")
    opts = [*APT_OPTS, "-o", "Dir::State::status=/qp-empty-status",
            "-o", "APT::Install-Recommends=false", "-o", "APT::Architectures::=amd64",
            "-o", f"APT::Architectures::={arch.debian}"]
    return chroot(root.path, "apt-get", *opts, *args, desc=desc, capture=capture,
                  quiet=not capture)


def resolve(root: ToolRoot, arch: recipes.GuestArch, packages: list[str]) -> dict[str, str]:
    """package:arch -> version of everything ``packages`` pulls in (Depends, Pre-Depends)."""
    wanted = [f"{p}:{arch.debian}" for p in packages]
    out = _apt(root, arch, "-s", "install", *wanted, desc=f"resolve {' '.join(wanted)}")
    found = parse_simulation(out)
    if not found:
        raise UserError(f"apt resolved nothing for {' '.join(wanted)}:\n{out[-2000:]}")
    return found


def parse_simulation(out: str) -> dict[str, str]:
    """``apt-get -s install`` output -> package:arch -> version, from its ``Inst`` lines
    (``Inst libc6 (2.43-7 Debian:unstable [amd64])``; a package of another architecture
    than the native one is named ``name:arch``)."""
    found = {}
    for line in out.splitlines():
        m = _INST.match(line)
        if m:
            name, version, arches = m.groups()
            base, _, qual = name.partition(":")
            found[f"{base}:{qual or arches.split()[-1]}"] = version
    return found


def _key(recipe: dict[str, Any], packages: dict[str, str]) -> str:
    h = hashlib.sha256(json.dumps([USERLAND_FORMAT, recipe, sorted(packages.items())],
                                  sort_keys=True).encode())
    return h.hexdigest()[:12]


def _download_and_unpack(root: ToolRoot, arch: recipes.GuestArch, packages: dict[str, str],
                         stage: Path) -> None:
    dl = root.path / "qp-userland-dl"
    remove_tree(dl)
    (dl / "partial").mkdir(parents=True)
    pins = [f"{p}={v}" for p, v in sorted(packages.items())]
    progress(f"downloading {len(pins)} Debian packages")
    try:
        _apt(root, arch, "-o", "Dir::Cache::archives=/qp-userland-dl", "install",
             "--download-only", "-y", "-q", *pins, desc="download the userland's packages",
             capture=False)
        debs = sorted(dl.glob("*.deb"))
        progress(f"unpacking {len(debs)} packages")
        rel = "/" + str(stage.relative_to(root.path))
        for deb in debs:
            chroot(root.path, "dpkg-deb", "-x", f"/qp-userland-dl/{deb.name}", rel,
                   desc=f"unpack {deb.name}", quiet=True)
    finally:
        remove_tree(dl)


def _resolve_in(stage: Path, rel: str, links: list[Path] | None = None) -> Path | None:
    """``rel`` (a path inside the staged root) with symlinks resolved inside the root (an
    absolute target means the stage's root, ``..`` is clamped at it); each link met on the
    way is appended to ``links``."""
    p = Path("/")
    parts = list(Path(rel.lstrip("/")).parts)
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in (".", "/"):
            continue
        if part == "..":  # clamped at the root: a link never leads out of the stage
            p = p.parent
            continue
        cand = stage / (p / part).relative_to("/")
        if cand.is_symlink():
            hops += 1
            if hops > 40:
                return None
            if links is not None:
                links.append(cand)
            target = os.readlink(cand)
            base = Path("/") if target.startswith("/") else p
            parts = list((base / target).relative_to("/").parts) + parts
            p = Path("/")
            continue
        p = p / part
    full = stage / p.relative_to("/")
    return full if full.exists() else None


def _lib_dirs(arch: recipes.GuestArch) -> list[str]:
    triplet = arch.triplet
    return [f"usr/lib/{triplet}", "usr/lib", f"lib/{triplet}", "lib", "usr/lib64", "lib64"]


def trim(stage: Path, dest: Path, arch: recipes.GuestArch, programs: list[str],
         files: list[str]) -> list[str]:
    """Copy ``programs`` (globs), the libraries and loaders they need, and ``files`` (globs)
    from ``stage`` into ``dest``; return the programs' paths."""
    def globbed(patterns: list[str], what: str) -> list[Path]:
        out = []
        for pat in patterns:
            # glob.glob, not Path.glob: a link whose target is absolute (inside the stage,
            # not on this host) dangles for the host but is a hit
            hits = sorted(Path(h) for h in glob.glob(str(stage / pat))
                          if Path(h).is_file() or Path(h).is_symlink())
            if not hits:
                raise UserError(f"the userland's packages hold no {what} matching {pat}")
            out += hits
        return out

    progs = globbed(programs, "program")
    wanted: dict[Path, None] = {}
    todo: list[Path] = []

    def want(rel: str) -> Path | None:
        """Keep ``rel`` (a path in the stage): every link on the way and the file it leads
        to; the file."""
        links: list[Path] = []
        real = _resolve_in(stage, rel, links)
        if real is None:
            return None
        for link in links:
            wanted.setdefault(link, None)
        wanted.setdefault(real, None)
        if real not in seen:
            todo.append(real)
        return real

    seen: set[Path] = set()
    for p in progs + globbed(files, "file"):
        if want(str(p.relative_to(stage))) is None:
            raise UserError(f"{p.relative_to(stage)} is a link to nothing in the userland")
    libdirs = _lib_dirs(arch)
    while todo:
        f = todo.pop()
        if f in seen or not is_elf(f):
            seen.add(f)
            continue
        seen.add(f)
        deps = elf_deps(f.read_bytes())
        names = ([deps.interp] if deps.interp else []) + deps.needed
        for name in names:
            cands = [name] if "/" in name else [f"{d}/{name}" for d in libdirs]
            hit = next((c for c in cands if _resolve_in(stage, c) is not None), None)
            if hit is None:
                raise UserError(f"{f.relative_to(stage)} needs {name}, which no package of "
                                "the userland holds")
            want(hit)
    for src in wanted:
        _copy(stage, dest, src)
    return ["/" + str(p.relative_to(stage)) for p in progs]


def _copy(stage: Path, dest: Path, src: Path) -> None:
    """Copy one staged path (a symlink stays a symlink). A path through a linked directory
    (lib64 -> usr/lib64) recreates the link and copies the entry in the real directory."""
    rel = src.relative_to(stage)
    cur = Path()
    for part in rel.parts[:-1]:
        cur = cur / part
        if (stage / cur).is_symlink():
            link = dest / cur
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(os.readlink(stage / cur))
            real_dir = _resolve_in(stage, str(rel.parent))
            if real_dir is not None:
                _copy(stage, dest, real_dir / rel.name)
            return
    out = dest / rel
    if out.exists() or out.is_symlink():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        out.symlink_to(os.readlink(src))
    else:
        shutil.copy2(src, out)


def merge_usr(root: Path) -> None:
    """The links a usr-merged Debian has at the top (made at installation, in no package)."""
    for name in USR_LINKS:
        if (root / "usr" / name).is_dir() and not (root / name).exists():
            (root / name).symlink_to(f"usr/{name}")


def _finish(dest: Path) -> None:
    merge_usr(dest)
    for name in MOUNT_POINTS:
        (dest / name).mkdir(exist_ok=True)
    (dest / "etc").mkdir(exist_ok=True)
    for name, text in (("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                       ("group", "root:x:0:\n")):
        if not (dest / "etc" / name).exists():
            (dest / "etc" / name).write_text(text)


def ensure_userland(name: str, *, cache: Cache | None = None) -> Userland:
    """The userland ``name`` of images/userlands.toml, made (or found) in the cache."""
    cache = cache or Cache()
    recipe = userland_recipe(name)
    arch = recipes.guest_arch(recipe["arch"])
    entry = cache.manifest().get(USERLANDS, {}).get(name)
    if entry:
        path = cache.path(USERLANDS, entry["dir"])
        meta = path / "userland.json"
        if meta.is_file() and entry.get("recipe") == _key(recipe, {}):
            data = json.loads(meta.read_text())
            return Userland(name, path, arch, tuple(data["programs"]), data["packages"])
    root = ensure_images(recipes.default_line(), cache=cache).qemu
    with cache.locked():
        t0 = time.monotonic()
        packages = resolve(root, arch, list(recipe["packages"]))
        dirname = f"{name}-{arch.debian}-{_key(recipe, packages)}"
        final = cache.path(USERLANDS, dirname)
        if not (final / "userland.json").is_file():
            progress(f"userland {name} ({arch.debian}): {', '.join(recipe['packages'])} and "
                     f"{len(packages) - len(recipe['packages'])} dependencies")
            stage = root.path / "qp-userland"
            remove_tree(stage)
            stage.mkdir()
            try:
                _download_and_unpack(root, arch, packages, stage)
                merge_usr(stage)
                tmp = cache.new_tmp(f"userland-{name}")
                programs = trim(stage, tmp, arch, list(recipe["programs"]),
                                list(recipe.get("files", [])))
            finally:
                remove_tree(stage)
            _finish(tmp)
            (tmp / "userland.json").write_text(json.dumps(
                {"name": name, "arch": arch.name, "programs": programs,
                 "packages": packages}, indent=2, sort_keys=True) + "\n")
            cache.commit(tmp, final)
            size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file()
                       and not p.is_symlink())
            progress(f"userland {name}: {len(programs)} programs, {size / 2**20:.0f} MiB, "
                     f"made in {time.monotonic() - t0:.0f} s")
        lands = cache.manifest().get(USERLANDS, {})
        lands[name] = {"dir": dirname, "recipe": _key(recipe, {})}
        cache.update_manifest(USERLANDS, lands)
        for old in cache.path(USERLANDS).glob(f"{name}-{arch.debian}-*"):
            if old.name != dirname:
                remove_tree(old)  # superseded (older versions, recipe or format)
    data = json.loads((final / "userland.json").read_text())
    return Userland(name, final, arch, tuple(data["programs"]), data["packages"])


__all__ = ["Userland", "ensure_userland", "merge_usr", "parse_simulation", "resolve", "trim"]

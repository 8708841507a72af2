"""Set-up: tool roots, guest kernel, busybox and the glue module, all from Debian packages.

``ensure_images(line)`` is what ``boot`` and the tests call: it reuses the cache when the
manifest has everything, and otherwise builds what is missing, printing progress. Nothing is
installed on the host except ``mmdebstrap`` (via apt, when missing and we are root).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import recipes
from .cache import Cache, progress, remove_tree
from .toolroot import ToolRoot

APT_OPTS = ["-o", "Acquire::Check-Valid-Until=false", "-o", "APT::Sandbox::User=root"]


@dataclass(frozen=True)
class Images:
    """Everything a boot needs, resolved to paths in the cache."""

    line: str
    kver: str
    qemu: ToolRoot
    qemu_version: str
    build_root: ToolRoot
    kernel_image: Path
    modules_dir: Path  # .../lib/modules/<kver>
    busybox: Path
    glue_ko: Path | None
    selftests: Path | None = None
    # A kernel tree of your own (boot --kernel PATH, setup/tree.py): where it is, whether
    # the GPU's nodes go into the boot DTB (no OF_DYNAMIC), and its bug finders (KASAN, ...).
    boot_dtb_nodes: bool | None = None  # None: as the kernel line's recipe says
    tree: Path | None = None
    debug_features: tuple[str, ...] = ()
    arch: recipes.GuestArch = field(default_factory=recipes.guest_arch)

    @property
    def needs_boot_dtb(self) -> bool:
        if not self.arch.dtb:
            return False
        if self.boot_dtb_nodes is not None:
            return self.boot_dtb_nodes
        return recipes.kernel_line(self.line).boot_dtb_nodes


# -- subprocess helpers -------------------------------------------------------------------
def run(cmd: list[str], *, desc: str, quiet: bool = False, env: dict[str, str] | None = None,
        capture: bool = False) -> str:
    """Run a set-up command, streaming its output as progress; fail with one clear line."""
    tail: deque[str] = deque(maxlen=15)
    out: list[str] = []
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            env=env, stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise UserError(f"{desc}: command not found: {cmd[0]}") from None
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        if capture:
            out.append(line)
        elif not quiet:
            print(f"    {line}", file=sys.stderr, flush=True)
    rc = proc.wait()
    if rc != 0:
        detail = "\n".join(f"    {t}" for t in tail)
        raise UserError(f"{desc} failed (exit {rc}); last output:\n{detail}")
    return "\n".join(out)


def chroot(root: Path, *cmd: str, desc: str, capture: bool = False, quiet: bool = False) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
           "DEBIAN_FRONTEND": "noninteractive"}
    return run(["chroot", str(root), *cmd], desc=desc, env=env, capture=capture, quiet=quiet)


def ensure_host_tools() -> None:
    missing = [t for t in ("mmdebstrap", "dpkg-deb", "chroot") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0:
        raise UserError(
            f"missing host tools: {', '.join(missing)}; install them (apt-get install mmdebstrap) "
            "or run as root so set-up can"
        )
    if shutil.which("apt-get") is None:
        raise UserError("this set-up needs a Debian-family host (apt-get and dpkg not found)")
    progress(f"installing host tools: {', '.join(missing)} (apt-get)")
    run(["apt-get", "update", "-q"], desc="apt-get update")
    run(["apt-get", "install", "-y", "-q", "mmdebstrap"], desc="apt-get install mmdebstrap")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("building the tool root needs root (mmdebstrap, chroot); run as root")


# -- tool roots ---------------------------------------------------------------------------
def _root_kver(root: Path) -> str:
    """The suite's arm64 kernel version: the installed headers', else the metapackage's."""
    mods = root / "usr/lib/modules"
    kvers = sorted(p.name for p in mods.iterdir()) if mods.is_dir() else []
    if len(kvers) == 1:
        return kvers[0]
    if kvers:
        raise UserError(f"tool root {root}: expected one kernel headers tree, found {kvers}")
    out = chroot(root, "apt-cache", "show", "linux-image-arm64:arm64",
                 desc="resolve the suite's arm64 kernel", capture=True)
    m = re.search(r"^Depends:.*?\blinux-image-(\S+-arm64)\b", out, re.M)
    if not m:
        raise UserError(f"tool root {root}: cannot resolve the arm64 kernel version")
    return m.group(1)


def _recipe_hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def _pkg_version(root: Path, pkg: str) -> str:
    return chroot(root, "dpkg-query", "-W", "-f=${Version}", pkg, desc=f"query {pkg}",
                  capture=True).strip()


def ensure_root(cache: Cache, name: str, *, refresh: bool) -> tuple[ToolRoot, dict[str, str]]:
    """A mmdebstrap'ed tool root for recipe ``name`` (a suite, or a recipe naming its
    ``suite``), keyed by the versions it resolved to."""
    roots = cache.manifest().get("roots", {})
    entry = roots.get(name)
    recipe = recipes.root_recipe(name)
    suite = recipe.get("suite", name)
    rhash = _recipe_hash(recipe)
    if (entry and not refresh and entry.get("recipe") == rhash
            and (cache.path("roots", entry["dir"]) / "usr").is_dir()):
        return ToolRoot(cache.path("roots", entry["dir"])), entry
    _require_root()
    t0 = time.monotonic()
    progress(f"tool root '{name}': resolving and unpacking Debian packages (mmdebstrap) ...")
    tmp = cache.new_tmp(f"root-{name}")
    run(
        [
            "mmdebstrap", "--variant=apt", "--mode=root",
            f"--architectures={','.join(recipe['architectures'])}",
            '--aptopt=Acquire::Check-Valid-Until "false"',
            '--aptopt=APT::Sandbox::User "root"',
            "--skip=cleanup/apt/lists",
            *([f"--include={','.join(recipe['include'])}"] if recipe["include"] else []),
            suite, str(tmp),
        ],
        desc=f"mmdebstrap {suite}",
    )
    info = {"suite": suite, "recipe": rhash}
    if "arm64" in recipe["architectures"]:
        info["kver"] = _root_kver(tmp)
    if "qemu-system-arm" in recipe["include"]:
        info["qemu"] = _pkg_version(tmp, "qemu-system-arm")
    if "gcc-aarch64-linux-gnu" in recipe["include"]:
        info["gcc"] = _pkg_version(tmp, "gcc-aarch64-linux-gnu")
    if "gcc" in recipe["include"]:  # the native compiler (x86_64 guest kernels)
        info["gcc_native"] = _pkg_version(tmp, "gcc")
    if name == suite:  # a suite's root: named by its kernel (and QEMU) versions
        dirname = (f"{suite}-{info['kver']}" + (f"-qemu{info['qemu']}" if "qemu" in info
                                                 else "") + f"-{rhash}")
    else:  # a purpose-named root (kbuild): by its suite and cross compiler
        dirname = f"{name}-{suite}" + (f"-gcc{info['gcc']}" if "gcc" in info else "") + \
            f"-{rhash}"
    dirname = dirname.replace(":", "_")
    final = cache.path("roots", dirname)
    if final.exists():
        remove_tree(tmp)  # same versions as what we have: keep the old one
    else:
        cache.commit(tmp, final)
    info["dir"] = dirname
    roots[name] = info
    cache.update_manifest("roots", roots)
    prune_roots(cache, keep={r["dir"] for r in roots.values()})
    progress(f"tool root '{name}': {dirname} ready in {time.monotonic() - t0:.0f} s")
    return ToolRoot(final), info


def prune_roots(cache: Cache, keep: set[str]) -> list[str]:
    """Remove tool roots the manifest no longer names (superseded versions or recipes):
    each is several hundred MB. Called under the cache lock."""
    removed = []
    base = cache.path("roots")
    for p in sorted(base.iterdir()) if base.is_dir() else []:
        if p.name not in keep:
            progress(f"removing superseded tool root {p.name}")
            remove_tree(p)
            removed.append(p.name)
    return removed


def check_qemu(root: ToolRoot, version: str) -> None:
    minimum = recipes.qemu_recipe()["min_version"]
    if not recipes.at_least(version, minimum):
        raise UserError(
            f"QEMU {version} in the tool root is older than {minimum} (no vfio-user-pci); "
            "run `qemu-panthor setup --refresh` to resolve a newer one"
        )
    out = subprocess.run(
        [*root.qemu_argv(), "-M", "virt", "-device", "vfio-user-pci,help"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    if out.returncode != 0 or "socket" not in out.stdout:
        raise UserError(
            f"QEMU {version} in {root.path} lacks the vfio-user-pci device: {out.stderr.strip()}"
        )


# -- downloads ----------------------------------------------------------------------------
def _download(root: ToolRoot, pkgs: list[str], what: str) -> list[Path]:
    """apt-get download ``pkgs`` inside the root; return the .deb paths (host view)."""
    dl = root.path / "qp-dl"
    remove_tree(dl)
    dl.mkdir()
    lists = root.path / "var/lib/apt/lists"
    if not any(lists.glob("*Packages*")):
        chroot(root.path, "apt-get", *APT_OPTS, "update", "-q", desc="apt-get update (tool root)")
    progress(f"downloading {what}: {' '.join(pkgs)}")
    chroot(root.path, "sh", "-c", f"cd /qp-dl && apt-get {' '.join(APT_OPTS)} download -q "
           + " ".join(pkgs), desc=f"download {what}")
    debs = sorted(dl.glob("*.deb"))
    if len(debs) != len(pkgs):
        raise UserError(f"download {what}: expected {len(pkgs)} packages, got {len(debs)}")
    return debs


def _extract(root: ToolRoot, debs: list[Path], dest_in_root: str) -> Path:
    dest = root.path / dest_in_root.lstrip("/")
    remove_tree(dest)
    dest.mkdir(parents=True)
    for deb in debs:
        chroot(root.path, "dpkg-deb", "-x", f"/qp-dl/{deb.name}", dest_in_root,
               desc=f"unpack {deb.name}")
    return dest


def ensure_kernel(cache: Cache, line: recipes.KernelLine, root: ToolRoot, kver: str) -> Path:
    """The guest kernel tree (vmlinuz + depmod'ed modules) for ``kver``."""
    final = cache.path("kernels", kver)
    if (final / "kernel.json").exists():
        return final
    t0 = time.monotonic()
    pkgs = [p.format(kver=kver) + ":arm64" for p in line.kernel_packages]
    debs = _download(root, pkgs, f"guest kernel {kver}")
    tree = _extract(root, debs, "/qp-kernel")
    moddir = next((p for p in (tree / "usr/lib/modules" / kver, tree / "lib/modules" / kver)
                   if p.is_dir()), None)
    if moddir is None:
        raise UserError(f"kernel packages for {kver} hold no lib/modules/{kver}")
    base = "/qp-kernel/usr" if moddir.parents[2].name == "usr" else "/qp-kernel"
    chroot(root.path, "depmod", "-b", base, kver, desc=f"depmod {kver}")
    images = [moddir / "vmlinuz", tree / "boot" / f"vmlinuz-{kver}"]
    image = next((p for p in images if p.is_file()), None)
    if image is None:
        raise UserError(f"kernel packages for {kver} hold no vmlinuz")
    meta = {"kver": kver, "image": str(image.relative_to(tree)),
            "modules": str(moddir.relative_to(tree))}
    (tree / "kernel.json").write_text(json.dumps(meta, indent=2) + "\n")
    tmp = cache.new_tmp(f"kernel-{kver}")
    tmp.rmdir()
    tree.rename(tmp)
    cache.commit(tmp, final)
    remove_tree(root.path / "qp-dl")
    progress(f"guest kernel {kver} ready in {time.monotonic() - t0:.0f} s")
    return final


def busybox_key(arch: recipes.GuestArch) -> str:
    """The manifest entry naming the static busybox of ``arch``."""
    return f"busybox:{arch.debian}"


def ensure_busybox(cache: Cache, root: ToolRoot, arch: recipes.GuestArch | None = None) -> Path:
    """Debian's static busybox for the guest architecture (downloaded, not installed)."""
    arch = arch or recipes.guest_arch()
    key = busybox_key(arch)
    entry = cache.manifest().get(key)
    if entry and cache.path(entry).is_file():
        return cache.path(entry)
    pkg = f"{recipes.guest_recipe()['busybox']}:{arch.debian}"
    debs = _download(root, [pkg], "busybox")
    ver = arch.debian + "-" + debs[0].name.split("_")[1].replace("%3a", "_")
    tree = _extract(root, debs, "/qp-busybox")
    found = [p for p in (tree / "bin/busybox", tree / "usr/bin/busybox") if p.is_file()]
    if not found:
        raise UserError(f"{pkg} holds no busybox binary")
    tmp = cache.new_tmp("busybox")
    shutil.copy2(found[0], tmp / "busybox")
    final = cache.commit(tmp, cache.path("busybox", ver))
    remove_tree(tree)
    remove_tree(root.path / "qp-dl")
    rel = str((final / "busybox").relative_to(cache.root))
    cache.update_manifest(key, rel)
    return final / "busybox"


def ensure_headers(line: recipes.KernelLine, source: ToolRoot, build: ToolRoot,
                   kver: str) -> None:
    """Unpack ``line``'s kernel headers (from ``source``'s suite) into the build root."""
    if not line.header_packages or (build.path / f"usr/lib/modules/{kver}/build").exists():
        return
    kbase = kver.removesuffix("-arm64")
    pkgs = [p.format(kver=kver, kbase=kbase).removesuffix(":all") for p in line.header_packages]
    debs = _download(source, pkgs, f"kernel headers {kver}")
    dl = build.path / "qp-dl"
    remove_tree(dl)
    dl.mkdir()
    for deb in debs:
        shutil.move(str(deb), dl / deb.name)
        chroot(build.path, "dpkg-deb", "-x", f"/qp-dl/{deb.name}", "/",
               desc=f"unpack {deb.name}")
    remove_tree(dl)
    remove_tree(source.path / "qp-dl")


# -- glue module ----------------------------------------------------------------------------
GLUE_FILES = ("panthor_glue.c", "Kbuild")


def modinfo_field(ko: bytes, field: str) -> str | None:
    key = field.encode() + b"="
    i = ko.find(key)
    if i < 0:
        return None
    j = ko.find(b"\0", i)
    return ko[i + len(key) : j].decode(errors="replace")


def read_module(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def ensure_glue(cache: Cache, root: ToolRoot, kver: str, modules_dir: Path) -> Path | None:
    src = recipes.GUEST_DIR / "glue"
    if not (src / "panthor_glue.c").is_file():
        return None
    h = hashlib.sha256()
    for name in sorted(p.name for p in src.iterdir() if p.suffix in (".c", ".h") or
                       p.name in ("Kbuild", "Makefile")):
        h.update(name.encode() + b"\0" + (src / name).read_bytes())
    final = cache.path("glue", f"{kver}-{h.hexdigest()[:12]}")
    ko = final / "panthor_glue.ko"
    if ko.is_file():
        return ko
    progress(f"building the glue module for {kver}")
    build = root.path / "qp-glue"
    remove_tree(build)
    build.mkdir()
    for p in src.iterdir():
        if p.is_file() and (p.suffix in (".c", ".h") or p.name in ("Kbuild", "Makefile")):
            shutil.copy2(p, build / p.name)
    # Debian's kernel lines are arm64. CC: the sid root's own cross gcc, whatever version the
    # headers were built with.
    arch = recipes.guest_arch("arm64")
    chroot(root.path, "make", "-s", "-C", f"/usr/lib/modules/{kver}/build", "M=/qp-glue",
           *arch.make_vars, f"CC={arch.cc}", "modules", desc=f"build panthor_glue for {kver}")
    built = (build / "panthor_glue.ko").read_bytes()
    want = _kernel_vermagic(modules_dir)
    got = modinfo_field(built, "vermagic")
    if want is not None and got != want:
        raise UserError(
            f"panthor_glue.ko vermagic {got!r} does not match the guest kernel's {want!r}: "
            "the tool root's headers and the kernel differ; run `qemu-panthor setup --refresh`"
        )
    tmp = cache.new_tmp("glue")
    shutil.copy2(build / "panthor_glue.ko", tmp / "panthor_glue.ko")
    cache.commit(tmp, final)
    remove_tree(build)
    return ko


SELFTEST_CFLAGS = ["-static", "-O2", "-g0", "-Wall", "-Wextra", "-Werror", "-std=gnu11",
                   "-pthread"]


def ensure_selftests(cache: Cache, root: ToolRoot) -> Path | None:
    """guest/selftests/*.c built into one static arm64 binary with the root's cross gcc."""
    src = recipes.GUEST_DIR / "selftests"
    sources = sorted(p for p in src.glob("*.[ch]")) if src.is_dir() else []
    if not any(p.suffix == ".c" for p in sources):
        return None
    h = hashlib.sha256(" ".join(SELFTEST_CFLAGS).encode())
    for p in sources:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    final = cache.path("selftests", h.hexdigest()[:16])
    binary = final / "qp-selftests"
    if binary.is_file():
        return binary
    progress("building the guest selftests (static arm64)")
    build = root.path / "qp-selftests"
    remove_tree(build)
    build.mkdir()
    for p in sources:
        shutil.copy2(p, build / p.name)
    cfiles = [f"/qp-selftests/{p.name}" for p in sources if p.suffix == ".c"]
    chroot(root.path, recipes.guest_arch("arm64").cc, *SELFTEST_CFLAGS, "-I/qp-selftests",
           "-o", "/qp-selftests/qp-selftests", *cfiles, desc="build guest selftests")
    tmp = cache.new_tmp("selftests")
    shutil.copy2(build / "qp-selftests", tmp / "qp-selftests")
    cache.commit(tmp, final)
    remove_tree(build)
    return binary


def _kernel_vermagic(modules_dir: Path) -> str | None:
    for pattern in ("kernel/drivers/gpu/drm/panthor/panthor.ko*", "kernel/drivers/**/*.ko*"):
        for p in modules_dir.glob(pattern):
            v = modinfo_field(read_module(p), "vermagic")
            if v:
                return v
    return None


# -- top level ----------------------------------------------------------------------------
def ensure_images(line_name: str, *, refresh: bool = False, cache: Cache | None = None) -> Images:
    line = recipes.kernel_line(line_name)
    cache = cache or Cache()
    manifest = cache.manifest()
    fresh = _cached_images(cache, line, manifest) if not refresh else None
    if fresh is not None:
        return fresh
    t0 = time.monotonic()
    ensure_host_tools()
    with cache.locked():
        qemu_suite = recipes.qemu_recipe()["suite"]
        qroot, qinfo = ensure_root(cache, qemu_suite, refresh=refresh)
        check_qemu(qroot, qinfo["qemu"])
        if line.suite == qemu_suite:
            broot, binfo = qroot, qinfo
        else:
            broot, binfo = ensure_root(cache, line.suite, refresh=refresh)
        kver = binfo["kver"]
        if not recipes.at_least(kver, line.min_kernel):
            raise UserError(
                f"suite {line.suite} offers kernel {kver}, older than {line.min_kernel} "
                f"required for line {line.name}"
            )
        kdir = ensure_kernel(cache, line, broot, kver)
        ensure_headers(line, broot, qroot, kver)
        busybox = ensure_busybox(cache, qroot)
        meta = json.loads((kdir / "kernel.json").read_text())
        modules_dir = kdir / meta["modules"]
        glue = ensure_glue(cache, qroot, kver, modules_dir)
        selftests = ensure_selftests(cache, qroot)
        lines = cache.manifest().get("lines", {})
        lines[line.name] = {"kver": kver, "kernel_dir": str(kdir.relative_to(cache.root)),
                            "resolved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        cache.update_manifest("lines", lines)
    progress(f"set-up for kernel line {line.name} done in {time.monotonic() - t0:.1f} s")
    return Images(line.name, kver, qroot, qinfo["qemu"], qroot, kdir / meta["image"],
                  modules_dir, busybox, glue, selftests)


def _cached_images(
    cache: Cache, line: recipes.KernelLine, manifest: dict[str, Any]
) -> Images | None:
    """The cached image set for ``line`` if complete (no network, no lock)."""
    try:
        roots = manifest["roots"]
        qsuite = recipes.qemu_recipe()["suite"]
        qinfo, binfo = roots[qsuite], roots[line.suite]
        entry = manifest["lines"][line.name]
        kdir = cache.root / entry["kernel_dir"]
        meta = json.loads((kdir / "kernel.json").read_text())
        busybox = cache.root / manifest[busybox_key(recipes.guest_arch())]
    except (KeyError, OSError, ValueError):
        return None
    qroot = ToolRoot(cache.path("roots", qinfo["dir"]))
    if binfo["kver"] != entry["kver"] or not busybox.is_file() or not qroot.loader.exists():
        return None
    for suite in {qsuite, line.suite}:
        if roots[suite].get("recipe") != _recipe_hash(recipes.root_recipe(suite)):
            return None  # the recipe changed: rebuild
    if line.header_packages and not (qroot.path / f"usr/lib/modules/{entry['kver']}/build"
                                     ).exists():
        return None
    modules_dir = kdir / meta["modules"]
    src = recipes.GUEST_DIR / "glue" / "panthor_glue.c"
    glue = None
    # The glue and the selftests are keyed by their source hash: rebuilt (under the lock)
    # when the sources changed, without the network.
    with cache.locked():
        if src.is_file():
            glue = ensure_glue(cache, qroot, entry["kver"], modules_dir)
        selftests = ensure_selftests(cache, qroot)
    return Images(line.name, entry["kver"], qroot, qinfo["qemu"], qroot, kdir / meta["image"],
                  modules_dir, busybox, glue, selftests)


def setup_main(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    images = ensure_images(args.kernel, refresh=args.refresh)
    cache = Cache()
    with cache.locked():
        prune_roots(cache, keep={r["dir"] for r in cache.manifest().get("roots", {}).values()})
    print(f"kernel line   {images.line}: {images.kver}")
    print(f"kernel image  {images.kernel_image}")
    print(f"QEMU          {images.qemu_version} ({images.qemu.path})")
    print(f"busybox       {images.busybox}")
    print(f"glue module   {images.glue_ko or '(guest/glue has no source yet)'}")
    print(f"selftests     {images.selftests or '(shell probe only)'}")
    print(f"set-up took {time.monotonic() - t0:.1f} s")
    return 0

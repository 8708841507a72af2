"""``boot --kernel PATH``: a kernel tree of your own, as an :class:`~.pipeline.Images` set.

PATH is either a kernel **build directory** (in-tree, or the O= directory: ``.config``,
``arch/arm64/boot/Image`` or ``arch/x86/boot/bzImage``, and the built modules) or an
**installed layout** (an Image next to ``lib/modules/<release>/`` with its ``modules.dep``, as
``make modules_install INSTALL_MOD_PATH=PATH`` leaves it). The tree's ``.config`` is checked first
(:func:`.kconfig.check_boot_config`). Then:

- the panthor module chain comes from the tree: ``modules.dep`` (installed layout), or for a
  build directory a ``modules.dep`` written from the modules' own ``depends=`` fields (only
  the chain is read); nothing to load when panthor is built in;
- the glue module is built against the tree's kbuild and the selftests against its uAPI
  headers, in the kbuild tool root, cached by the tree's build identity (release, .config,
  Module.symvers): rebuilding panthor does not rebuild either, so the next boot starts in
  seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import kconfig, recipes
from .cache import Cache, progress, remove_tree
from .initramfs import module_name
from .ksource import ensure_kbuild_root, run_in_root
from .pipeline import (
    GLUE_FILES,
    SELFTEST_CFLAGS,
    Images,
    ensure_busybox,
    ensure_images,
    modinfo_field,
    read_module,
)
from .toolroot import ToolRoot

TREES = "trees"
IMAGE_NAMES = ("Image", "Image.gz", "bzImage", "vmlinuz")
# uAPI headers the selftests take from the tree under test (the rest from the cross libc).
UAPI_HEADERS = ("drm/*.h", "linux/udmabuf.h", "linux/sync_file.h")


@dataclass(frozen=True)
class Tree:
    path: Path
    layout: str  # "build" or "installed"
    image: Path
    release: str
    config_path: Path
    config: kconfig.BootConfig
    kbuild: Path  # what external modules build against (the O= directory)
    srctree: Path  # the sources (uAPI headers)
    modules_dir: Path | None  # installed layout: lib/modules/<release>

    @property
    def where(self) -> str:
        return f"kernel tree {self.path}"

    @property
    def arch(self) -> recipes.GuestArch:
        return self.config.arch


def is_tree_arg(value: str) -> bool:
    """``--kernel`` names a path when it is not a kernel line (7.2, 6.12) and contains a
    slash or is an existing directory."""
    if value in recipes.kernel_lines():
        return False
    return "/" in value or value.startswith(".") or Path(value).is_dir()


def _srctree(kbuild: Path) -> Path:
    src = kbuild / "source"
    return src.resolve() if src.is_symlink() or src.is_dir() else kbuild


def find_tree(arg: str) -> Tree:
    path = Path(arg).expanduser().resolve()
    if path.is_file():
        build = next((p for p in path.parents if (p / ".config").is_file()), None)
        hint = f" (this file is in the build directory {str(build)!r})" if build else ""
        raise UserError(f"--kernel {arg}: a file; --kernel takes the kernel's build directory "
                        f"(.config, arch/*/boot/Image) or an installed layout{hint}")
    if not path.is_dir():
        raise UserError(f"--kernel {arg}: no such directory")
    if (path / ".config").is_file() or any((path / "arch").glob("*/boot")):
        return _build_tree(path)
    releases = sorted(p.name for p in (path / "lib/modules").glob("*") if p.is_dir())
    if releases:
        return _installed_tree(path, releases)
    raise UserError(f"--kernel {arg}: neither a kernel build directory (.config, "
                    "arch/arm64/boot/Image) nor an installed layout (Image, lib/modules/<release>)")


def _build_tree(path: Path) -> Tree:
    cfg = path / ".config"
    if not cfg.is_file():
        raise UserError(f"kernel tree {path}: no .config (configure and build it first)")
    values = kconfig.read_config(cfg)
    boot = kconfig.check_boot_config(values, f"kernel tree {path} (.config)")
    image = path / boot.arch.kernel_image
    rel_file = path / "include/config/kernel.release"
    if not image.is_file() or not rel_file.is_file():
        raise UserError(f"kernel tree {path} is not built (no {boot.arch.kernel_image}): run "
                        f"make ARCH={boot.arch.kernel_arch} -C <source> O={path} "
                        f"{boot.arch.kernel_target} modules")
    if values.get("DRM_PANTHOR") == "m" and not (path / "modules.order").is_file():
        raise UserError(f"kernel tree {path}: modules are not built (no modules.order): run "
                        "make ... modules")
    return Tree(path, "build", image, rel_file.read_text().strip(), cfg, boot, path,
                _srctree(path), None)


def _installed_tree(path: Path, releases: list[str]) -> Tree:
    images = [(rel, p) for rel in releases for p in (
        path / "Image", path / "boot/Image", path / f"vmlinuz-{rel}", path / f"boot/vmlinuz-{rel}",
        path / "lib/modules" / rel / "vmlinuz", path / "Image.gz", path / "boot/Image.gz",
        path / "bzImage", path / "boot/bzImage",
    ) if p.is_file()]
    if not images:
        raise UserError(f"kernel tree {path}: lib/modules/ holds {', '.join(releases)} but no "
                        f"kernel image was found ({', '.join(IMAGE_NAMES)}, boot/, "
                        "vmlinuz-<release>)")
    release, image = images[0]
    if len(releases) > 1 and not any(p.name.endswith(release) for _r, p in images):
        raise UserError(f"kernel tree {path}: several releases in lib/modules "
                        f"({', '.join(releases)}); keep one")
    moddir = path / "lib/modules" / release
    build = moddir / "build"
    configs = [path / f"boot/config-{release}", path / f"config-{release}", build / ".config",
               path / ".config"]
    cfg = next((c for c in configs if c.is_file()), None)
    if cfg is None:
        raise UserError(f"kernel tree {path}: no kernel config found (boot/config-{release}, "
                        f"lib/modules/{release}/build/.config)")
    boot = kconfig.check_boot_config(kconfig.read_config(cfg), f"kernel tree {path} ({cfg.name})")
    if not (moddir / "modules.dep").is_file():
        raise UserError(f"kernel tree {path}: lib/modules/{release} has no modules.dep "
                        "(install with make modules_install, which runs depmod)")
    if not (build / "Makefile").is_file():
        raise UserError(f"kernel tree {path}: lib/modules/{release}/build does not lead to the "
                        "kernel's build directory (needed to build the glue module against it)")
    kbuild = build.resolve()
    return Tree(path, "installed", image, release, cfg, boot, kbuild, _srctree(kbuild), moddir)


# -- the module chain ----------------------------------------------------------------------
def chain_modules_dep(tree: Tree) -> str:
    """modules.dep text (absolute paths) for the recipe's module roots and their
    dependencies, from a build directory's modules.order and the modules' depends= fields.
    panthor's chain is required; another driver's (panfrost) is added when the tree built it."""
    by_name: dict[str, Path] = {}
    order = (tree.path / "modules.order").read_text().split() \
        if (tree.path / "modules.order").is_file() else []
    for entry in order:
        ko = tree.path / (entry.removesuffix(".o").removesuffix(".ko") + ".ko")
        by_name[module_name(ko.name)] = ko
    recipe = recipes.initramfs_recipe()
    roots = [m for m in recipes.driver_modules("panthor") if not _builtin(tree, m)]
    roots += [m for driver in recipe["drivers"] if driver != "panthor"
              for m in recipes.driver_modules(driver)
              if not _builtin(tree, m) and m.replace("-", "_") in by_name]
    roots += [m for m in recipe.get("optional_modules", []) + recipe.get("igt_late_modules", [])
              if m.replace("-", "_") in by_name]
    lines: dict[str, list[str]] = {}
    todo = [r.replace("-", "_") for r in roots]
    while todo:
        name = todo.pop()
        found = by_name.get(name)
        if found is None:
            raise UserError(f"{tree.where}: module {name} is not built (not in modules.order); "
                            "run make ... modules")
        ko = found
        if str(ko) in lines:
            continue
        if not ko.is_file():
            raise UserError(f"{tree.where}: {ko} is missing; run make ... modules")
        deps = [d.replace("-", "_") for d in
                (modinfo_field(read_module(ko), "depends") or "").split(",") if d]
        missing = [d for d in deps if d not in by_name]
        if missing:
            raise UserError(f"{tree.where}: {name} depends on {', '.join(missing)}, which is "
                            "not built as a module")
        lines[str(ko)] = [str(by_name[d]) for d in deps]
        todo.extend(deps)
    return "".join(f"{k}: {' '.join(v)}\n" for k, v in lines.items())


def _builtin(tree: Tree, module: str) -> bool:
    sym = {"panthor": "DRM_PANTHOR"}.get(module)
    return sym is not None and tree.config.values.get(sym) == "y"


def stage_modules(cache: Cache, tree: Tree) -> Path:
    """The modules directory the initramfs reads: the installed one, or a staged one holding
    only modules.dep (absolute paths into the build directory) and modules.builtin."""
    if tree.modules_dir is not None:
        return tree.modules_dir
    key = hashlib.sha256(str(tree.path).encode()).hexdigest()[:12]
    d = cache.path(TREES, f"{_slug(tree.path.name)}-{key}")
    d.mkdir(parents=True, exist_ok=True)
    _write(d / "modules.dep", chain_modules_dep(tree))
    builtin = tree.path / "modules.builtin"
    _write(d / "modules.builtin", builtin.read_text() if builtin.is_file() else "")
    _write(d / "tree.json", json.dumps({"path": str(tree.path), "release": tree.release}) + "\n")
    return d


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s)[:40] or "tree"


# -- glue and selftests built against the tree ----------------------------------------------
def build_identity(tree: Tree) -> str:
    """What external modules built against the tree depend on: release, .config and the
    exported symbols. Rebuilding a module (panthor) does not change it."""
    h = hashlib.sha256(tree.release.encode())
    h.update(tree.config_path.read_bytes())
    symvers = tree.kbuild / "Module.symvers"
    if symvers.is_file():
        h.update(symvers.read_bytes())
    return h.hexdigest()[:16]


def ensure_tree_glue(cache: Cache, root: ToolRoot, tree: Tree) -> Path:
    src = recipes.GUEST_DIR / "glue"
    h = hashlib.sha256(build_identity(tree).encode())
    for name in GLUE_FILES:
        h.update(name.encode() + b"\0" + (src / name).read_bytes())
    final = cache.path("glue", f"{_slug(tree.release)}-{h.hexdigest()[:12]}")
    ko = final / "panthor_glue.ko"
    if ko.is_file():
        return ko
    progress(f"building the glue module against {tree.kbuild}")
    tmp = cache.new_tmp("glue")
    for name in GLUE_FILES:
        shutil.copy2(src / name, tmp / name)
    run_in_root(root, ["make", "-s", "-C", str(tree.kbuild), f"M={tmp}", *tree.arch.make_vars,
                       "modules"],
                desc=f"build panthor_glue against {tree.kbuild}",
                binds=[tmp, tree.kbuild, tree.srctree])
    built = read_module(tmp / "panthor_glue.ko")
    want = _tree_vermagic(tree)
    got = modinfo_field(built, "vermagic")
    if want is not None and got != want:
        raise UserError(f"panthor_glue.ko built against {tree.kbuild} has vermagic {got!r}, "
                        f"the tree's modules {want!r}")
    for p in list(tmp.iterdir()):
        if p.name != "panthor_glue.ko":
            remove_tree(p)
    cache.commit(tmp, final)
    return ko


def _tree_vermagic(tree: Tree) -> str | None:
    if tree.modules_dir is not None:
        for p in tree.modules_dir.rglob("*.ko*"):
            return modinfo_field(read_module(p), "vermagic")
        return None
    for p in sorted(tree.path.glob("drivers/gpu/drm/**/*.ko")):
        return modinfo_field(read_module(p), "vermagic")
    return None


def _userspace_header(text: str) -> str:
    """What scripts/headers_install.sh does to a uAPI header that matters here."""
    text = re.sub(r"([\s(])(__user|__force|__iomem)\s", r"\1", text)
    return re.sub(r"#(ifndef|define|endif[ \t]*/[*])[ \t]*_UAPI", r"#\1 ", text)


def uapi_headers(tree: Tree) -> dict[str, bytes]:
    base = tree.srctree / "include/uapi"
    out: dict[str, bytes] = {}
    for pattern in UAPI_HEADERS:
        for p in sorted(base.glob(pattern)):
            out[str(p.relative_to(base))] = _userspace_header(p.read_text()).encode()
    if "drm/panthor_drm.h" not in out:
        raise UserError(f"{tree.where}: no include/uapi/drm/panthor_drm.h in {tree.srctree}")
    return out


def ensure_tree_selftests(cache: Cache, root: ToolRoot, tree: Tree) -> Path | None:
    src = recipes.GUEST_DIR / "selftests"
    sources = sorted(src.glob("*.[ch]")) if src.is_dir() else []
    if not any(p.suffix == ".c" for p in sources):
        return None
    headers = uapi_headers(tree)
    cc = tree.arch.cc
    h = hashlib.sha256(" ".join([cc, *SELFTEST_CFLAGS]).encode())
    for p in sources:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    for name, data in sorted(headers.items()):
        h.update(b"uapi/" + name.encode() + b"\0" + data)
    final = cache.path("selftests", h.hexdigest()[:16])
    binary = final / "qp-selftests"
    if binary.is_file():
        return binary
    progress(f"building the guest selftests against {tree.srctree}'s uAPI headers")
    tmp = cache.new_tmp("selftests")
    work = tmp / "src"
    work.mkdir()
    for p in sources:
        shutil.copy2(p, work / p.name)
    for name, data in headers.items():
        (work / "uapi" / name).parent.mkdir(parents=True, exist_ok=True)
        (work / "uapi" / name).write_bytes(data)
    cfiles = [str(work / p.name) for p in sources if p.suffix == ".c"]
    run_in_root(root, [cc, *SELFTEST_CFLAGS, f"-I{work}",
                       f"-I{work / 'uapi'}", "-o", str(tmp / "qp-selftests"), *cfiles],
                desc="build guest selftests", binds=[tmp])
    remove_tree(work)
    cache.commit(tmp, final)
    return binary


def tree_images(arg: str, *, cache: Cache | None = None) -> Images:
    """Everything a boot needs for the tree at ``arg`` (QEMU from the default line's set-up,
    busybox for the tree's architecture)."""
    cache = cache or Cache()
    tree = find_tree(arg)
    for w in tree.config.warnings:
        progress(f"warning: {tree.where}: {w}")
    base = ensure_images(recipes.default_line(), cache=cache)
    root, _info = ensure_kbuild_root(cache)
    with cache.locked():
        modules_dir = stage_modules(cache, tree)
        glue = ensure_tree_glue(cache, root, tree)
        selftests = ensure_tree_selftests(cache, root, tree)
        busybox = (base.busybox if tree.arch == base.arch
                   else ensure_busybox(cache, base.qemu, tree.arch))
    base.qemu.check(tree.arch)
    return Images("tree", tree.release, base.qemu, base.qemu_version, root, tree.image,
                  modules_dir, busybox, glue, selftests,
                  boot_dtb_nodes=tree.config.boot_dtb_nodes, tree=tree.path,
                  debug_features=tuple(tree.config.debug_features), arch=tree.arch)


def boot_images(kernel: str | None, arch: str | None = None) -> Images:
    """``boot --kernel K --arch A``: K is a kernel line (7.2, 6.12: Debian's arm64 kernels),
    a config built here from Debian's source (``default``, ``debug``; built once, cached), a
    patched build named in images/kernel/builds.toml (``7.2-aof``), or a kernel tree's PATH.
    Without K: the default line on arm64, ``default`` elsewhere."""
    garch = recipes.guest_arch(arch)
    native = garch == recipes.guest_arch()
    if kernel is None:
        kernel = recipes.default_line() if native else "default"
    if kernel in kconfig.named_fragments() and not Path(kernel).is_dir():
        from .kernel import build_config  # the kbuild machinery only when a build is asked for

        return tree_images(str(build_config(kernel, garch)))
    if kernel in recipes.patched_builds() and not Path(kernel).is_dir():
        from .kernel import build_named

        return tree_images(str(build_named(kernel, garch)))
    if is_tree_arg(kernel):
        images = tree_images(kernel)
        if arch is not None and images.arch != garch:
            raise UserError(f"--kernel {kernel} is an {images.arch.name} kernel, not {arch}")
        return images
    if not native:
        raise UserError(f"kernel line {kernel} is Debian's {recipes.guest_arch().name} kernel; "
                        f"an {garch.name} guest boots a kernel built here (--kernel default or "
                        "debug) or a kernel tree of yours")
    return ensure_images(kernel)


__all__ = ["Tree", "boot_images", "chain_modules_dep", "find_tree", "is_tree_arg",
           "tree_images"]

"""``qemu-panthor kernel build``: a guest kernel (arm64 for QEMU's virt machine by default,
``--arch x86_64`` for q35), built in the kbuild tool root from a trimmed config, into the cache.

A build lives in ``kernel-builds/<source>-<config>-<key>/``: ``out/`` is the O= directory to
pass to ``boot --kernel``, ``build.json`` is written when a build completes, ``build.log``
holds kbuild's output. The key covers the source (Debian package and version, or the path
and kernel version of a ``--source`` tree), the patches, the merged config fragments and the
cross compiler's version. A finished build of Debian's source is reused as it is; a
``--source`` tree is rebuilt incrementally every time (kbuild decides what changed), so
editing panthor and building again takes seconds, not minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import subprocess
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import kconfig
from .cache import Cache, progress, remove_tree
from .ksource import ensure_kbuild_root, ensure_linux_source
from .recipes import GuestArch, guest_arch
from .sandbox import ROOT_ENV, describe, root_argv
from .toolroot import ToolRoot

BUILDS = "kernel-builds"
BUILD_VARS = ["KBUILD_BUILD_USER=qemu-panthor", "KBUILD_BUILD_HOST=kbuild"]
PROGRESS_EVERY_S = 20.0
_COMPILE = re.compile(r"^\s+(CC|AS)(\s+\[M\])?\s+(\S+)")


@dataclass
class BuildPlan:
    name: str
    dir: Path  # kernel-builds/<name>
    src: Path  # the tree kbuild reads
    mutable: bool  # a --source tree: rebuilt incrementally on every request
    arch: GuestArch
    fragments: list[kconfig.Fragment]
    patches: list[Path]
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.dir / "out"

    @property
    def meta_path(self) -> Path:
        return self.dir / "build.json"

    @property
    def patched(self) -> bool:
        return bool(self.patches)

    @property
    def targets(self) -> list[str]:
        return [self.arch.kernel_target, "modules"]


def kernel_version(src: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL(EXTRAVERSION) from a tree's top Makefile."""
    try:
        head = (src / "Makefile").read_text(errors="replace")[:4096]
    except OSError:
        raise UserError(f"{src} is not a kernel source tree (no Makefile)") from None
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)\s*$",
                             head, re.M))
    if "VERSION" not in fields or "PATCHLEVEL" not in fields:
        raise UserError(f"{src} is not a kernel source tree (no VERSION in its Makefile)")
    v = f"{fields['VERSION']}.{fields['PATCHLEVEL']}.{fields.get('SUBLEVEL') or 0}"
    return v + fields.get("EXTRAVERSION", "")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s).strip("_")[:60]


def plan(cache: Cache, *, source: str | None, configs: list[str], patches: list[str],
         gcc: str, arch: GuestArch | None = None) -> BuildPlan:
    arch = arch or guest_arch()
    fragments = kconfig.resolve_fragments(configs, arch)
    patch_paths = []
    for p in patches:
        path = Path(p).resolve()
        if not path.is_file():
            raise UserError(f"--patch {p}: no such file")
        patch_paths.append(path)
    if source is None:
        ks = ensure_linux_source(cache)
        src, mutable = ks.path, False
        ident: dict[str, Any] = {"source": f"{ks.package} {ks.version}"}
        label = f"{ks.package}_{ks.version}"
    else:
        src = Path(source).resolve()
        if not (src / "Kconfig").is_file():
            raise UserError(f"--source {source}: not a kernel source tree (no Kconfig)")
        if (src / ".config").exists() or (src / "include/config").is_dir():
            raise UserError(f"--source {source} is configured in-tree (.config): an O= build "
                            "needs a clean tree (make mrproper there), or boot that build "
                            f"directly with `qemu-panthor boot --kernel {source}`")
        mutable = True
        ident = {"source": str(src), "version": kernel_version(src)}
        label = f"{src.name}-{ident['version']}"
    h = hashlib.sha256(json.dumps(ident, sort_keys=True).encode())
    for pp in patch_paths:
        h.update(b"patch\0" + pp.read_bytes())
    merged = kconfig.render_fragment(kconfig.merge(fragments))
    h.update(b"config\0" + merged.encode() + b"gcc\0" + gcc.encode())
    cname = "+".join(f.name.removesuffix(".config") for f in fragments[2:]) or "default"
    if arch != guest_arch():
        cname = f"{arch.name}-{cname}"
    ident.update(config=[f.name for f in fragments], patches=[str(p) for p in patch_paths],
                 gcc=gcc, arch=arch.name)
    name = _slug(f"{label}-{cname}") + f"-{h.hexdigest()[:12]}"
    bdir = cache.path(BUILDS, name)
    return BuildPlan(name, bdir, bdir / "src" if patch_paths else src, mutable, arch,
                     fragments, patch_paths, ident)


@contextlib.contextmanager
def build_lock(cache: Cache) -> Iterator[None]:
    """One kernel build at a time (they use every core)."""
    base = cache.path(BUILDS)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another kernel build (lock {base / '.lock'}) ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Kbuild:
    """make in the kbuild root, with the tree and the build directory bind-mounted."""

    def __init__(self, root: ToolRoot, plan: BuildPlan, jobs: int) -> None:
        self.root = root
        self.plan = plan
        self.jobs = jobs
        self.log = plan.dir / "build.log"

    def make(self, *targets: str, extra: tuple[str, ...] = (), what: str,
             expected: int | None = None) -> int:
        """Run make; show progress every PROGRESS_EVERY_S; return the count of compiled files.
        The full output goes to build.log; a failure shows its last lines."""
        p = self.plan
        argv = ["nice", "-n", "10", "make", "-C", str(p.src), f"O={p.out}", f"-j{self.jobs}",
                *p.arch.make_vars, *BUILD_VARS, *extra, *targets]
        binds = [p.dir] + ([] if p.patched else [p.src])
        t0 = time.monotonic()
        last_report = t0
        compiled = 0
        current = ""
        tail: deque[str] = deque(maxlen=25)
        with open(self.log, "a") as log:
            log.write(f"$ {describe(argv)}\n")
            log.flush()
            proc = subprocess.Popen(root_argv(self.root.path, argv, binds=binds),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace", env=dict(ROOT_ENV),
                                    stdin=subprocess.DEVNULL)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    log.write(line)
                    line = line.rstrip("\n")
                    tail.append(line)
                    m = _COMPILE.match(line)
                    if m:
                        compiled += 1
                        current = m.group(3)
                    now = time.monotonic()
                    if now - last_report >= PROGRESS_EVERY_S:
                        last_report = now
                        pct = (f" (~{min(99, 100 * compiled // expected)}%)"
                               if expected else "")
                        progress(f"{what}: {_mmss(now - t0)}, {compiled} files compiled{pct}"
                                 + (f", at {current}" if current else ""))
                rc = proc.wait()
            except BaseException:
                proc.terminate()
                proc.wait()
                raise
        if rc != 0:
            detail = "\n".join(f"    {t}" for t in tail)
            raise UserError(f"{what} failed (make exit {rc}; full log {self.log}); "
                            f"last output:\n{detail}")
        return compiled


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _mmss(s: float) -> str:
    return f"{int(s) // 60}m{int(s) % 60:02d}s"


def _prepare_source(root: ToolRoot, plan: BuildPlan, pristine: Path) -> None:
    """A patched copy of the source (hard links; patch replaces the files it changes)."""
    if plan.src.is_dir() and (plan.dir / "src.patched").exists():
        return
    remove_tree(plan.src)
    progress(f"copying {pristine} (hard links) and applying {len(plan.patches)} patch(es)")
    subprocess.run(["cp", "-al", str(pristine), str(plan.src)], check=True)
    for patch in plan.patches:
        argv = ["patch", "-p1", "-f", "-s", "--no-backup-if-mismatch", "-d", str(plan.src),
                "-i", str(patch)]
        proc = subprocess.run(root_argv(root.path, argv, binds=[plan.dir, patch.parent]),
                              capture_output=True, text=True, env=dict(ROOT_ENV))
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
            raise UserError(f"--patch {patch} does not apply:\n" + "\n".join(
                f"    {x}" for x in out))
    (plan.dir / "src.patched").write_text("\n".join(map(str, plan.patches)) + "\n")


def _expected_files(cache: Cache, plan: BuildPlan) -> int | None:
    """How many files a build of the same configs compiled last time (for a percentage)."""
    best = None
    for meta in cache.path(BUILDS).glob("*/build.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(meta.read_text())
            if data["identity"]["config"] == plan.identity["config"] and data.get("compiled"):
                best = int(data["compiled"])
    return best


def configure(kb: Kbuild, plan: BuildPlan) -> None:
    """``allnoconfig`` with the merged fragments forced, then check what stuck."""
    requested = kconfig.merge(plan.fragments)
    frag = plan.dir / "fragment.config"
    cfg = plan.out / ".config"
    if not cfg.is_file():
        frag.write_text(kconfig.render_fragment(requested))
        progress(f"configuring: allnoconfig + {', '.join(f.name for f in plan.fragments)}")
        kb.make("allnoconfig", extra=(f"KCONFIG_ALLCONFIG={frag}",), what="configure")
    values = kconfig.read_config(cfg)
    missed = kconfig.not_applied(requested, values)
    if missed:
        progress("config options that did not take the fragments' value (unmet dependency "
                 "or unknown in this tree): " + ", ".join(missed))
    kconfig.check_boot_config(values, f"the configured kernel ({cfg})")


def build(cache: Cache, plan: BuildPlan, *, jobs: int) -> Path:
    root, _info = ensure_kbuild_root(cache)
    meta = plan.meta_path
    if meta.is_file() and not plan.mutable:
        progress(f"kernel {plan.name}: cached (built {json.loads(meta.read_text())['built']})")
        return plan.out
    with build_lock(cache):
        if meta.is_file() and not plan.mutable:  # built while we waited
            return plan.out
        plan.out.mkdir(parents=True, exist_ok=True)
        if plan.patched:
            pristine = (ensure_linux_source(cache).path if "version" not in plan.identity
                        else Path(plan.identity["source"]))
            _prepare_source(root, plan, pristine)
        kb = Kbuild(root, plan, jobs)
        t0, cpu0 = time.monotonic(), _children_cpu()
        configure(kb, plan)
        expected = None if meta.is_file() else _expected_files(cache, plan)
        load = round(os.getloadavg()[0], 2)
        progress(f"building {' + '.join(plan.targets)} ({plan.arch.name}) in {plan.out} with "
                 f"-j{jobs} (log {kb.log})")
        compiled = kb.make(*plan.targets, what="kernel build", expected=expected)
        release = (plan.out / "include/config/kernel.release").read_text().strip()
        took, cpu = time.monotonic() - t0, _children_cpu() - cpu0
        previous = json.loads(meta.read_text()) if meta.is_file() else {}
        data = {"identity": plan.identity, "release": release, "build_s": round(took, 1),
                "cpu_s": round(cpu, 1), "jobs": jobs, "load_before": load,
                "compiled": max(compiled, int(previous.get("compiled", 0))),
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp = meta.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(meta)
        progress(f"kernel {release} built in {_mmss(took)} ({compiled} files compiled, "
                 f"{_mmss(cpu)} CPU time)")
    return plan.out


def gcc_version(root: ToolRoot, root_info: dict[str, str], arch: GuestArch) -> str:
    """The version of the compiler that builds ``arch``'s kernels in the kbuild root (a
    build cache key): the cross gcc for arm64, the root's native gcc for x86_64. Roots made
    before the native version was recorded are asked for it."""
    if arch.cross_compile:
        return root_info.get("gcc", "unknown")
    v = root_info.get("gcc_native")
    if v is None:
        from .pipeline import _pkg_version

        v = root_info["gcc_native"] = _pkg_version(root.path, "gcc")
    return v


def build_config(config: str, arch: GuestArch, *, jobs: int | None = None) -> Path:
    """The cached build of Debian's source with a named config (``default``, ``debug``) for
    ``arch``, built first if missing; its O= directory."""
    return _build_debian_source([config], [], arch, jobs)


def build_named(name: str, arch: GuestArch, *, jobs: int | None = None) -> Path:
    """The cached build of a patched kernel named in images/kernel/builds.toml (e.g.
    ``7.2-aof``), built first if missing; its O= directory."""
    from .recipes import patched_builds

    b = patched_builds()[name]
    return _build_debian_source(list(b.configs), [str(x) for x in b.patches], arch, jobs)


def _build_debian_source(configs: list[str], patches: list[str], arch: GuestArch,
                         jobs: int | None) -> Path:
    """Debian's source with ``configs`` and ``patches``, built for ``arch`` into the cache
    (once); its O= directory."""
    cache = Cache()
    root, info = ensure_kbuild_root(cache)
    p = plan(cache, source=None, configs=configs, patches=patches,
             gcc=gcc_version(root, info, arch), arch=arch)
    return build(cache, p, jobs=jobs or os.cpu_count() or 1)


def kernel_build_main(args: argparse.Namespace) -> int:
    cache = Cache()
    root, info = ensure_kbuild_root(cache)
    arch = guest_arch(getattr(args, "arch", None))
    p = plan(cache, source=args.source, configs=args.config or [], patches=args.patch or [],
             gcc=gcc_version(root, info, arch), arch=arch)
    out = build(cache, p, jobs=args.jobs or os.cpu_count() or 1)
    print(out)
    return 0


def make_binds(make_args: list[str], cwd: Path) -> tuple[list[str], list[Path]]:
    """``make`` arguments with -C/O=/M= made absolute, and the directories they name (plus
    the working directory and an O= directory's source tree), to bind into the root."""
    out: list[str] = []
    dirs = [cwd]
    it = iter(make_args)
    for a in it:
        if a in ("-C", "--directory"):
            d = (cwd / next(it, ".")).resolve()
            out += ["-C", str(d)]
            dirs.append(d)
        elif a.startswith(("-C", "--directory=")):
            d = (cwd / a.split("=", 1)[1] if a.startswith("--") else cwd / a[2:]).resolve()
            out += ["-C", str(d)]
            dirs.append(d)
        elif a.startswith(("O=", "M=")):
            d = (cwd / a[2:]).resolve()
            d.mkdir(parents=True, exist_ok=True)
            out.append(f"{a[:2]}{d}")
            dirs.append(d)
            if (d / "source").is_symlink():
                dirs.append((d / "source").resolve())
        else:
            out.append(a)
    return out, dirs


def kernel_make_main(args: argparse.Namespace) -> int:
    """``make`` in the kbuild root for the guest architecture (arm64 with its cross compiler
    by default), on host directories."""
    cache = Cache()
    root, _info = ensure_kbuild_root(cache)
    cwd = Path.cwd().resolve()
    make_args, dirs = make_binds(list(args.make_args), cwd)
    argv = ["make", *guest_arch(getattr(args, "arch", None)).make_vars, *make_args]
    return subprocess.run(root_argv(root.path, argv, binds=dirs, cwd=str(cwd)),
                          env=dict(ROOT_ENV), check=False).returncode


def kernel_main(args: argparse.Namespace) -> int:
    if args.kernel_command == "build":
        return kernel_build_main(args)
    if args.kernel_command == "make":
        return kernel_make_main(args)
    raise UserError(f"unknown kernel action {args.kernel_command!r}")


__all__ = ["BuildPlan", "build", "build_config", "kernel_main", "kernel_version", "make_binds",
           "plan"]

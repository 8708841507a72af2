"""The guest initramfs: a newc cpio written here (busybox, the GPU driver's module chain in
dependency order, the glue module, our firmware file for a CSF GPU, /init)."""

from __future__ import annotations

import gzip
import lzma
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from . import recipes

NEWC_MAGIC = b"070701"


class CpioWriter:
    """Writes the SVR4 'newc' cpio format the kernel unpacks into rootfs."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._ino = 1
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        name = name.lstrip("/")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self._ino += 1
        self._out += NEWC_MAGIC + b"".join(b"%08X" % f for f in fields) + encoded
        self._pad()
        self._out += data
        self._pad()

    def _pad(self) -> None:
        self._out += b"\0" * (-len(self._out) % 4)

    def add_dir(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, nlink=2)

    def add_dirs(self, name: str) -> None:
        """Add ``name`` and its missing parents."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p not in self._names:
                self.add_dir(p)

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self._out += b"\0" * (-len(self._out) % 512)
        return bytes(self._out)


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """modules.dep -> {module path: [dependency paths]} (paths relative to the modules dir)."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod.strip()] = rest.split()
    return deps


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def load_order(deps: dict[str, list[str]], roots: list[str]) -> list[str]:
    """Module paths to insmod, dependencies first, each once."""
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str, stack: tuple[str, ...]) -> None:
        if path in seen:
            return
        if path in stack:
            raise UserError(f"modules.dep has a dependency cycle through {path}")
        for d in deps.get(path, []):
            visit(d, (*stack, path))
        seen.add(path)
        order.append(path)

    for r in roots:
        path = by_name.get(r.replace("-", "_"))
        if path is None:
            raise UserError(f"module {r!r} is not in this kernel's modules.dep")
        visit(path, ())
    return order


@dataclass
class InitramfsSpec:
    modules_dir: Path
    busybox: Path
    init_script: Path
    glue_ko: Path | None = None
    firmware: dict[str, bytes] = field(default_factory=dict)  # /lib/firmware relative path
    extra_files: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # path -> data, mode
    shares: bool = False  # the guest mounts virtio-9p shares: load share_modules too
    driver: str = "panthor"  # whose module chain to load (images/initramfs.toml [drivers])
    #: modules /init loads after the glue (the GPU's device exists by then), when the kernel
    #: has them; their dependencies not already loaded come first
    late_modules: list[str] = field(default_factory=list)


def _module_bytes(modules_dir: Path, path: str) -> bytes:
    """A module file as the kernel loads it (xz and gzip decompressed)."""
    data = (modules_dir / path).read_bytes()
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        raise UserError(f"{path}: zstd-compressed modules are not supported; build with "
                        "CONFIG_MODULE_COMPRESS_NONE or _XZ")
    return data


def build_initramfs(spec: InitramfsSpec) -> bytes:
    recipe = recipes.initramfs_recipe()
    deps = parse_modules_dep((spec.modules_dir / "modules.dep").read_text())
    known = {module_name(p) for p in deps}
    builtin_file = spec.modules_dir / "modules.builtin"
    builtin = ({module_name(p) for p in builtin_file.read_text().split()}
               if builtin_file.is_file() else set())
    optional = [m for m in recipe.get("optional_modules", []) if m.replace("-", "_") in known]
    wanted = (recipes.driver_modules(spec.driver)
              + (recipe["share_modules"] if spec.shares else []))
    roots = [m for m in wanted if m.replace("-", "_") not in builtin]
    for m in recipes.driver_modules(spec.driver):
        if m.replace("-", "_") not in builtin and m.replace("-", "_") not in known:
            raise UserError(f"this kernel has no {m} module (CONFIG_DRM_{spec.driver.upper()}"
                            f"), which the GPU model's driver {spec.driver} needs")
    order = load_order(deps, optional + roots)
    w = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "tmp", "etc/qp", "lib/modules", "lib/firmware",
              "mnt", "root", "run"):
        w.add_dirs(d)
    w.add_chardev("dev/console", 5, 1)
    w.add_chardev("dev/null", 1, 3, 0o666)
    w.add_file("bin/busybox", spec.busybox.read_bytes(), 0o755)
    for applet in recipe["applets"]:
        w.add_symlink(f"bin/{applet}", "busybox")
    w.add_symlink("sbin", "bin")
    w.add_file("init", spec.init_script.read_bytes(), 0o755)
    names = []
    for path in order:
        name = module_name(path)
        w.add_file(f"lib/modules/{name}.ko", _module_bytes(spec.modules_dir, path))
        names.append(name)
    w.add_file("etc/qp/modules", ("\n".join(names) + "\n").encode())
    late_roots = [m for m in spec.late_modules
                  if m.replace("-", "_") in known and m.replace("-", "_") not in builtin]
    late = []
    for path in load_order(deps, late_roots) if late_roots else []:
        name = module_name(path)
        if name in names:
            continue
        w.add_file(f"lib/modules/{name}.ko", _module_bytes(spec.modules_dir, path))
        late.append(name)
    w.add_file("etc/qp/late-modules", "".join(f"{n}\n" for n in late).encode())
    if spec.glue_ko is not None:
        w.add_file("lib/modules/panthor_glue.ko", spec.glue_ko.read_bytes())
    for rel, data in spec.firmware.items():
        parent = f"lib/firmware/{rel}".rsplit("/", 1)[0]
        w.add_dirs(parent)
        w.add_file(f"lib/firmware/{rel}", data)
    for path, (data, mode) in spec.extra_files.items():
        parent = path.strip("/").rsplit("/", 1)[0] if "/" in path.strip("/") else ""
        if parent:
            w.add_dirs(parent)
        w.add_file(path, data, mode)
    return w.finish()

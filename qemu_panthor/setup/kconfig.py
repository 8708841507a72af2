"""Kernel configurations: fragments (``images/kernel/*.config``), ``.config`` files, and the
check that a kernel can boot on qemu-panthor at all.

:func:`check_boot_config` runs before anything is built or booted: a missing option is named
in one clear error, instead of a guest that hangs or a driver that never probes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .recipes import IMAGES_DIR, GuestArch, guest_arch, guest_arches

FRAGMENTS_DIR = IMAGES_DIR / "kernel"
BASE_FRAGMENT = "base"
ARCH_FRAGMENTS_DIR = FRAGMENTS_DIR / "arch"  # <arch>.config: the machine, merged after base

_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse_config(text: str) -> dict[str, str]:
    """``.config`` or fragment text -> {symbol without CONFIG_: value}; "n" for "is not set".
    A later assignment wins (as in a merged fragment)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = _SET.match(line)
        if m:
            out[m.group(1).removeprefix("CONFIG_")] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            out[m.group(1).removeprefix("CONFIG_")] = "n"
    return out


def render_fragment(values: dict[str, str]) -> str:
    return "".join(f"# CONFIG_{k} is not set\n" if v == "n" else f"CONFIG_{k}={v}\n"
                   for k, v in values.items())


@dataclass(frozen=True)
class Fragment:
    name: str  # "default", "debug", or the file name of a user fragment
    path: Path
    text: str


def named_fragments() -> list[str]:
    """The config names ``--config`` accepts besides a file: ``default`` (base.config) and
    every other ``images/kernel/<name>.config``."""
    names = sorted(p.stem for p in FRAGMENTS_DIR.glob("*.config") if p.stem != BASE_FRAGMENT)
    return ["default", *names]


def resolve_fragments(specs: list[str], arch: GuestArch | None = None) -> list[Fragment]:
    """``--config`` arguments -> the fragments to merge: base, the architecture's machine,
    then each of ``specs``: ``default``, a name from images/kernel/, or a fragment file."""
    arch = arch or guest_arch()
    base = FRAGMENTS_DIR / f"{BASE_FRAGMENT}.config"
    machine = ARCH_FRAGMENTS_DIR / f"{arch.name}.config"
    out = [Fragment("default", base, base.read_text()),
           Fragment(f"arch/{arch.name}", machine, machine.read_text())]
    for spec in specs or ["default"]:
        if spec == "default":
            continue
        named = FRAGMENTS_DIR / f"{spec}.config"
        if "/" not in spec and not spec.endswith(".config") and named.is_file():
            out.append(Fragment(spec, named, named.read_text()))
            continue
        p = Path(spec)
        if not p.is_file():
            raise UserError(f"--config {spec}: neither a config name "
                            f"({', '.join(named_fragments())}) nor a fragment file")
        text = p.read_text(errors="replace")
        if not parse_config(text):
            raise UserError(f"--config {spec}: no CONFIG_ lines in this file")
        out.append(Fragment(p.name, p.resolve(), text))
    return out


def merge(fragments: list[Fragment]) -> dict[str, str]:
    values: dict[str, str] = {}
    for f in fragments:
        values.update(parse_config(f.text))
    return values


def not_applied(requested: dict[str, str], config: dict[str, str]) -> list[str]:
    """Requested options whose value did not stick (an unmet dependency, or a symbol this
    kernel version does not have), as ``NAME=wanted (got)``."""
    out = []
    for k, want in requested.items():
        got = config.get(k, "n")
        if got != want and not (want == "n" and got == "n"):
            out.append(f"{k}={want} (is {'not set' if got == 'n' else got})")
    return out


# -- what booting on qemu-panthor needs ----------------------------------------------------
@dataclass(frozen=True)
class Need:
    symbol: str
    why: str
    modular_ok: bool = False  # "m" is enough
    arch: str | None = None  # only on this guest architecture


REQUIRED = (
    Need("DRM_PANTHOR", "the driver under test", modular_ok=True),
    Need("MODULES", "the glue module is loaded at boot"),
    Need("PCI", "the GPU is a PCI function"),
    Need("PCI_HOST_GENERIC", "the virt machine's ECAM PCIe host (built in)", arch="arm64"),
    Need("PCI_MSI", "the GPU's job/mmu/gpu interrupts are MSI-X vectors"),
    Need("NVMEM", "panthor looks up an optional nvmem cell; without NVMEM the lookup fails "
                  "with -EOPNOTSUPP and so does the probe"),
    Need("SERIAL_AMBA_PL011_CONSOLE", "the console (ttyAMA0) the launcher reads", arch="arm64"),
    Need("SERIAL_8250_CONSOLE", "the console (ttyS0) the launcher reads", arch="x86_64"),
    Need("ACPI", "q35's PCIe window and power-off", arch="x86_64"),
    Need("OF_DYNAMIC", "the glue adds the GPU's device-tree nodes at run time (there is no "
                       "boot device tree on x86; OF_OVERLAY selects it)", arch="x86_64"),
    Need("COMMON_CLK", "the glue registers the GPU's fixed clock", arch="x86_64"),
    Need("BLK_DEV_INITRD", "the guest is an initramfs"),
    Need("DEVTMPFS", "/dev/dri/renderD128 appears through devtmpfs"),
    Need("BINFMT_SCRIPT", "/init is a shell script"),
    Need("PROC_FS", "/init reads /proc"),
    Need("SYSFS", "the selftests read sysfs"),
)
# Without these the guest boots but some selftests fail or skip.
RECOMMENDED = (
    Need("PM", "runtime PM (runtime_pm_cycles)"),
    Need("MODULE_UNLOAD", "rmmod (glue_reload_cycles)"),
    Need("UDMABUF", "the imported-page check of job_store_deadbeef"),
    Need("DEBUG_FS", "debugfs (kmemleak, GEM listings)"),
)


@dataclass(frozen=True)
class BootConfig:
    boot_dtb_nodes: bool  # no OF_DYNAMIC: the GPU's nodes go into the boot device tree
    warnings: tuple[str, ...]
    values: dict[str, str]
    arch: GuestArch

    @property
    def panthor_builtin(self) -> bool:
        return self.values.get("DRM_PANTHOR") == "y"

    @property
    def debug_features(self) -> list[str]:
        names = {"KASAN": "KASAN", "PROVE_LOCKING": "lockdep", "DEBUG_KMEMLEAK": "kmemleak",
                 "DEBUG_OBJECTS": "debugobjects", "DMA_API_DEBUG": "DMA-API debug",
                 "DEBUG_ATOMIC_SLEEP": "atomic-sleep"}
        return [v for k, v in names.items() if self.values.get(k) == "y"]


def _has(values: dict[str, str], need: Need) -> bool:
    v = values.get(need.symbol, "n")
    return v == "y" or (need.modular_ok and v == "m")


def config_arch(values: dict[str, str], where: str) -> GuestArch:
    """The guest architecture a .config is for (ARM64=y, X86_64=y, ...)."""
    for arch in guest_arches().values():
        if values.get(arch.kernel_config) == "y":
            return arch
    names = ", ".join(f"CONFIG_{a.kernel_config}" for a in guest_arches().values())
    raise UserError(f"{where} is for none of the guest architectures qemu-panthor runs "
                    f"(none of {names} is set)")


def check_boot_config(values: dict[str, str], where: str) -> BootConfig:
    """Raise one UserError naming every missing required option; return what the launcher
    needs to know (architecture, device-tree path, warnings)."""
    arch = config_arch(values, where)
    missing = [f"CONFIG_{n.symbol} ({n.why})" for n in REQUIRED
               if n.arch in (None, arch.name) and not _has(values, n)]
    boot_dtb = values.get("OF_DYNAMIC") != "y"
    if boot_dtb and arch.dtb and values.get("REGULATOR_FIXED_VOLTAGE", "n") not in ("y", "m"):
        missing.append("CONFIG_OF_DYNAMIC or CONFIG_REGULATOR_FIXED_VOLTAGE (the glue creates "
                       "its device-tree nodes at run time with OF_DYNAMIC, selected by "
                       "OF_OVERLAY; without it they come from the boot DTB, whose mali supply "
                       "is a regulator-fixed)")
    if missing:
        raise UserError(f"{where} cannot run on qemu-panthor: missing "
                        + "; ".join(missing))
    if values.get("CC_IS_CLANG") == "y":
        raise UserError(f"{where} was configured for clang (CONFIG_CC_IS_CLANG): the glue "
                        "module is built with the kbuild root's gcc; configure the tree with gcc")
    warnings = tuple(f"CONFIG_{n.symbol} is not set: no {n.why}" for n in RECOMMENDED
                     if not _has(values, n))
    return BootConfig(boot_dtb, warnings, values, arch)


def read_config(path: Path) -> dict[str, str]:
    try:
        return parse_config(path.read_text(errors="replace"))
    except OSError as e:
        raise UserError(f"cannot read kernel config {path}: {e.strerror}") from None


__all__ = ["RECOMMENDED", "REQUIRED", "BootConfig", "Fragment", "check_boot_config",
           "config_arch", "merge",
           "named_fragments", "not_applied", "parse_config", "read_config", "render_fragment",
           "resolve_fragments"]

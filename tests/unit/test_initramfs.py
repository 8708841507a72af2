"""The newc cpio writer and the module load order, checked against an independent reader."""

from __future__ import annotations

import stat

import pytest

from qemu_panthor.errors import UserError
from qemu_panthor.setup.initramfs import CpioWriter, load_order, parse_modules_dep


def read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """Minimal newc reader written from the format description (cpio(5))."""
    out = []
    off = 0
    while True:
        assert data[off : off + 6] == b"070701", f"bad magic at {off}"
        f = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        off = (off + 110 + namesize + 3) & ~3
        body = data[off : off + filesize]
        off = (off + filesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, body, (rmaj, rmin)))


def test_cpio_roundtrip() -> None:
    w = CpioWriter()
    w.add_dirs("a/b/c")
    w.add_file("a/b/c/f.txt", b"hello", 0o600)
    w.add_symlink("bin/sh", "busybox")
    w.add_chardev("dev/console", 5, 1)
    data = w.finish()
    assert len(data) % 512 == 0
    entries = {e[0]: e for e in read_newc(data)}
    assert stat.S_ISDIR(entries["a/b"][1])
    assert entries["a/b/c/f.txt"][2] == b"hello"
    assert stat.S_IMODE(entries["a/b/c/f.txt"][1]) == 0o600
    assert stat.S_ISLNK(entries["bin/sh"][1]) and entries["bin/sh"][2] == b"busybox"
    assert stat.S_ISCHR(entries["dev/console"][1]) and entries["dev/console"][3] == (5, 1)


def test_cpio_rejects_duplicates() -> None:
    w = CpioWriter()
    w.add_file("x", b"")
    with pytest.raises(ValueError):
        w.add_file("x", b"")


_D = "kernel/drivers/gpu/drm/"
DEP = "\n".join([
    f"{_D}panthor/panthor.ko.xz: {_D}drm_gpuvm.ko.xz {_D}drm_exec.ko.xz "
    f"{_D}scheduler/gpu-sched.ko.xz {_D}drm.ko.xz",
    f"{_D}drm_gpuvm.ko.xz: {_D}drm_exec.ko.xz {_D}drm.ko.xz",
    f"{_D}drm_exec.ko.xz: {_D}drm.ko.xz",
    f"{_D}scheduler/gpu-sched.ko.xz:",
    f"{_D}drm.ko.xz:",
]) + "\n"


def test_load_order_dependencies_first() -> None:
    order = load_order(parse_modules_dep(DEP), ["panthor"])
    names = [p.rsplit("/", 1)[1] for p in order]
    assert names[-1] == "panthor.ko.xz"
    assert len(names) == len(set(names)) == 5
    pos = {n: i for i, n in enumerate(names)}
    assert pos["drm.ko.xz"] < pos["drm_exec.ko.xz"] < pos["drm_gpuvm.ko.xz"]
    assert pos["gpu-sched.ko.xz"] < pos["panthor.ko.xz"]


def test_load_order_unknown_module() -> None:
    with pytest.raises(UserError, match="not in this kernel"):
        load_order(parse_modules_dep(DEP), ["nosuch"])


def test_load_order_cycle() -> None:
    with pytest.raises(UserError, match="cycle"):
        load_order(parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n"), ["a"])

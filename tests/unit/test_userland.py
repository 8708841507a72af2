"""setup/userland.py: apt's simulation is read into exact package versions, and a staged
Debian tree is trimmed to what its programs need, such that the trimmed tree still runs them
(chrooted, as the guest runs IGT). The staged tree is made of this host's own binaries, laid
out as Debian's usr-merged packages ship them (files under /usr, links at the top made
separately)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qemu_panthor.errors import UserError
from qemu_panthor.setup.recipes import guest_arch
from qemu_panthor.setup.userland import merge_usr, parse_simulation, trim

APT_SIM = """\
NOTE: This is only a simulation!
Inst gcc-16-base (16.2.0-4 Debian:unstable [amd64])
Inst libc6 (2.43-7 Debian:unstable [amd64])
Conf libc6 (2.43-7 Debian:unstable [amd64])
Inst libx11-data (2:1.8.12-1 Debian:unstable [all])
Inst libc6:arm64 (2.43-7 Debian:unstable [arm64])
Inst libdrm2:arm64 [2.4.120-1] (2.4.131-1 Debian:unstable [arm64])
"""


def test_apt_simulation_gives_each_package_its_arch_and_version() -> None:
    assert parse_simulation(APT_SIM) == {
        "gcc-16-base:amd64": "16.2.0-4", "libc6:amd64": "2.43-7",
        "libx11-data:all": "2:1.8.12-1", "libc6:arm64": "2.43-7",
        "libdrm2:arm64": "2.4.131-1",
    }


HOST_LIBDIR = Path("/lib/x86_64-linux-gnu")


def _stage(tmp: Path) -> Path:
    """usr/bin/prog (the host's true), libc and the loader where Debian ships them, a
    library nobody needs, a data file."""
    stage = tmp / "stage"
    lib = stage / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (stage / "usr/bin").mkdir(parents=True)
    (stage / "usr/lib64").mkdir(parents=True)
    shutil.copy2(Path("/bin/true").resolve(), stage / "usr/bin/prog")
    shutil.copy2((HOST_LIBDIR / "libc.so.6").resolve(), lib / "libc.so.6")
    shutil.copy2((HOST_LIBDIR / "ld-linux-x86-64.so.2").resolve(), lib / "ld-linux-x86-64.so.2")
    (stage / "usr/lib64/ld-linux-x86-64.so.2").symlink_to(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    shutil.copy2((HOST_LIBDIR / "libc.so.6").resolve(), lib / "libunused.so.1")
    (stage / "usr/share/thing").mkdir(parents=True)
    (stage / "usr/share/thing/data.json").write_text("{}\n")
    merge_usr(stage)
    return stage


@pytest.mark.skipif(not (HOST_LIBDIR / "libc.so.6").exists(), reason="needs an amd64 host")
def test_trim_keeps_the_programs_their_libraries_loader_and_files(tmp_path: Path) -> None:
    stage = _stage(tmp_path)
    assert (stage / "lib64").is_symlink()
    dest = tmp_path / "dest"
    dest.mkdir()
    progs = trim(stage, dest, guest_arch("x86_64"), ["usr/bin/prog*"],
                 ["usr/share/thing/*.json"])
    assert progs == ["/usr/bin/prog"]
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*")
                   if p.is_file() or p.is_symlink())
    assert "usr/lib/x86_64-linux-gnu/libunused.so.1" not in files
    for want in ("usr/bin/prog", "usr/lib/x86_64-linux-gnu/libc.so.6",
                 "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                 "usr/lib64/ld-linux-x86-64.so.2", "lib64", "usr/share/thing/data.json"):
        assert want in files, (want, files)
    assert os.readlink(dest / "lib64") == "usr/lib64"
    if os.geteuid() == 0:  # the trimmed tree runs its program
        assert subprocess.run(["chroot", str(dest), "/usr/bin/prog"], timeout=30).returncode == 0


def test_trim_names_what_no_package_holds(tmp_path: Path) -> None:
    stage = _stage(tmp_path)
    (stage / "usr/lib/x86_64-linux-gnu/libc.so.6").unlink()
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UserError, match=r"usr/bin/prog needs libc\.so\.6, which no package"):
        trim(stage, dest, guest_arch("x86_64"), ["usr/bin/prog"], [])
    with pytest.raises(UserError, match="no program matching usr/bin/nope"):
        trim(stage, dest, guest_arch("x86_64"), ["usr/bin/nope"], [])


def test_trim_keeps_every_link_of_a_chain_and_stays_in_the_stage(tmp_path: Path) -> None:
    """A program reached through a chain of links (relative, absolute, with ``..``) keeps
    every hop; an absolute link means the stage's root, never the host's, and ``..`` never
    leads out of the stage."""
    stage = tmp_path / "stage"
    (stage / "usr/bin").mkdir(parents=True)
    (stage / "usr/share/x").mkdir(parents=True)
    (stage / "usr/share/x/c.txt").write_text("data\n")
    (stage / "usr/share/x/b").symlink_to("/usr/share/x/c.txt")  # absolute: the stage's
    (stage / "usr/share/x/a").symlink_to("b")
    (stage / "usr/share/x/up").symlink_to("../../../../../../usr/share/x/c.txt")
    dest = tmp_path / "dest"
    dest.mkdir()
    trim(stage, dest, guest_arch("x86_64"), [], ["usr/share/x/a", "usr/share/x/up"])
    for name in ("a", "b", "c.txt", "up"):
        assert (dest / "usr/share/x" / name).is_symlink() or (dest / "usr/share/x" / name
                                                               ).is_file(), name
    assert (dest / "usr/share/x/c.txt").read_text() == "data\n"
    (stage / "usr/share/x/dangling").symlink_to("/nowhere")
    with pytest.raises(UserError, match="is a link to nothing"):
        trim(stage, dest, guest_arch("x86_64"), [], ["usr/share/x/dangling"])

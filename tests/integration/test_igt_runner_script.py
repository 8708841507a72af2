"""The contract between the guest's IGT runner (guest/igt, busybox sh) and the host's parser
(launcher/igt.py): guest/igt runs under Debian's amd64 busybox in a chroot made here, with
fake IGT programs that pass, skip, fail, crash, print no final newline or hang, and with
stubs for what needs a kernel (mount, dmesg, chroot into the userland). What it prints
must parse into the results IGT runner's rules give."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from qemu_panthor.launcher.igt import parse_console, planned_count
from qemu_panthor.setup import recipes
from qemu_panthor.setup.cache import Cache
from qemu_panthor.setup.pipeline import ensure_busybox, ensure_images

pytestmark = pytest.mark.integration

APPLETS = ["sh", "awk", "cut", "grep", "sed", "head", "cat", "wc", "find", "basename", "dirname",
           "mkdir", "echo", "sort", "timeout", "printf", "kill", "sleep", "true", "false", "[",
           "setsid"]

FAKE = r"""#!/bin/sh
# a fake IGT program: its subtests do what their names say
if [ "$1" = --list-subtests ]; then
    printf 'pass\nskip\nfail\ncrash\nnonewline\nhang\nforkhang\nforkleft\n'
    exit 0
fi
case "$2" in
pass) echo "Subtest pass: SUCCESS (0.001s)"; exit 0 ;;
skip) echo "Test requirement not met in function f, file x.c:1:"; echo "Subtest skip: SKIP"
      exit 77 ;;
fail) echo "(fake:1) CRITICAL: Test assertion failure" >&2; exit 98 ;;
crash) kill -SEGV $$ ;;
nonewline) printf 'partial line'; printf 'err without newline' >&2; exit 0 ;;
hang) sleep 30 ;;
forkhang) sleep 31 & echo $! > /tmp/forkhang.pid; sleep 30 ;;
forkleft) sleep 32 & echo $! > /tmp/forkleft.pid; exit 0 ;;
esac
exit 1
"""


def _stub(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root (CI runs as root)")
@pytest.mark.timeout(300)
def test_guest_runner_output_parses_into_igt_results(tmp_path: Path) -> None:
    cache = Cache()
    busybox = ensure_busybox(cache, ensure_images(recipes.default_line(), cache=cache).qemu,
                             recipes.guest_arch("x86_64"))
    root = tmp_path / "root"
    for d in ("bin", "dev", "etc/qp", "lib/qp", "proc", "tmp", "userland/usr/libexec/panthor"):
        (root / d).mkdir(parents=True)
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    shutil.copy2(busybox, root / "bin/busybox")
    for a in APPLETS:
        (root / "bin" / a).symlink_to("busybox")
    _stub(root / "bin/mount", "exit 0\n")
    _stub(root / "bin/dmesg", '[ "$1" = -r ] && echo "<4>[ 1.0] panthor: a warning"\nexit 0\n')
    _stub(root / "bin/chroot", 'u=$1; p=$2; shift 2; exec "$u$p" "$@"\n')
    (root / "proc/uptime").write_text("12.50 10.00\n")
    shutil.copy2(recipes.GUEST_DIR / "igt", root / "bin/qp-igt")
    shutil.copy2(recipes.GUEST_DIR / "userland.sh", root / "lib/qp/userland.sh")
    prog = root / "userland/usr/libexec/panthor/panthor_fake"
    prog.write_text(FAKE)
    prog.chmod(0o755)
    (root / "etc/qp/igt.env").write_text(
        "IGT_PROGRAMS=/usr/libexec/panthor/panthor_fake\nIGT_DRIVER=panthor\nIGT_BUILD=0\n"
        "IGT_TESTS=''\nIGT_SKIPS='@nothing$'\nIGT_TIMEOUT=2\n")
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    p = subprocess.run([chroot, str(root), "/bin/sh", "/bin/qp-igt"], capture_output=True,
                       text=True, timeout=120, env={"PATH": "/bin"})
    lines = p.stdout.splitlines()
    assert planned_count(lines) == 8, p.stdout
    runs = {r.name: r for r in parse_console(lines)}
    got = {name.split("@")[1]: r.result for name, r in runs.items()}
    # the fake "panthor: a warning" at level 4 in every subtest's kernel log
    assert got == {"pass": "dmesg-warn", "skip": "skip", "fail": "dmesg-fail",
                   "crash": "crash", "nonewline": "dmesg-warn", "hang": "timeout",
                   "forkhang": "timeout", "forkleft": "dmesg-warn"}, p.stdout
    nl = runs["panthor/panthor_fake@nonewline"]
    assert nl.out == ["partial line"] and nl.err == ["err without newline"] and nl.rc == 0
    assert runs["panthor/panthor_fake@fail"].err == ["(fake:1) CRITICAL: Test assertion failure"]
    assert runs["panthor/panthor_fake@crash"].rc == 128 + 11
    skip_line = next(x for x in lines if x.startswith("ok 2 "))
    assert skip_line == ("ok 2 panthor/panthor_fake@skip # SKIP Test requirement not met in "
                         "function f, file x.c:1:"), p.stdout
    assert p.returncode == 1  # failures: the guest says 1
    # what the subtests forked is gone: at the time limit, and after a program that exits
    for name in ("forkhang", "forkleft"):
        pid = int((root / f"tmp/{name}.pid").read_text())
        state = Path(f"/proc/{pid}/stat")
        assert not state.exists() or state.read_text().split()[2] == "Z", name

"""[devkernel] A kernel of our own build: the debug kernel (images/kernel/debug.config: KASAN,
lockdep, kmemleak, debugobjects, DMA-API debug...) is built into the cache (once; the first
run of a fresh machine builds it) and booted through `qemu-panthor boot --kernel PATH`; the
suite passes and the kernel's bug finders, active, report nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.guest_runs import check_debug_suite

from qemu_panthor.setup import kconfig
from qemu_panthor.setup.kernel import build_config
from qemu_panthor.setup.recipes import guest_arch

pytestmark = pytest.mark.integration

MIN_PASSED = 47
BUILD_TIMEOUT_S = 2400  # the debug build takes <= 15 min on 2 idle cores


@pytest.fixture(scope="session")
def debug_kernel() -> Path:
    """The O= directory of the debug kernel build (built into the cache if missing)."""
    return build_config("debug", guest_arch(), jobs=os.cpu_count() or 1)


def _qemu_panthor(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qemu_panthor", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(BUILD_TIMEOUT_S + 1200)
def test_debug_kernel_runs_the_suite_clean(debug_kernel: Path) -> None:
    p = _qemu_panthor("boot", "--kernel", str(debug_kernel), "--timeout", "1100", timeout=1200)
    # the bug finders are on, as the kernel announced them, and silent
    s, tail = check_debug_suite(p)
    assert len(s.passed) >= MIN_PASSED, (s.line(), tail)


@pytest.mark.timeout(BUILD_TIMEOUT_S + 120)
def test_a_tree_without_panthor_gets_one_clear_error(debug_kernel: Path, tmp_path) -> None:
    """The real debug tree, with CONFIG_DRM_PANTHOR unset in a copy of its .config."""
    tree = tmp_path / "no-panthor"
    (tree / "arch/arm64/boot").mkdir(parents=True)
    shutil.copy2(debug_kernel / "arch/arm64/boot/Image", tree / "arch/arm64/boot/Image")
    values = kconfig.read_config(debug_kernel / ".config")
    assert values["DRM_PANTHOR"] == "m"
    text = (debug_kernel / ".config").read_text()
    (tree / ".config").write_text(text.replace("CONFIG_DRM_PANTHOR=m",
                                               "# CONFIG_DRM_PANTHOR is not set"))
    p = _qemu_panthor("boot", "--kernel", str(tree), timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert "missing CONFIG_DRM_PANTHOR (the driver under test)" in p.stderr
    assert "Traceback" not in p.stderr

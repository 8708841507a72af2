"""[alloc-on-fault] The RFC ported to 7.2's panthor (images/kernel/patches, kernel `7.2-aof`:
Debian's source + the debug fragment + the patch, built into the cache once) runs the whole
selftest suite on the emulated GPU: the four alloc_on_fault tests pass, every other test
still does, and the kernel's bug finders report nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.guest_runs import check_debug_suite

from qemu_panthor.setup.kernel import build_named
from qemu_panthor.setup.recipes import guest_arch

pytestmark = pytest.mark.integration

AOF_TESTS = {"alloc_on_fault_store", "alloc_on_fault_granule", "alloc_on_fault_many",
             "alloc_on_fault_out_of_bo"}
BUILD_TIMEOUT_S = 2400


@pytest.fixture(scope="session")
def aof_kernel() -> Path:
    return build_named("7.2-aof", guest_arch(), jobs=os.cpu_count() or 1)


@pytest.mark.timeout(BUILD_TIMEOUT_S + 1200)
def test_the_suite_passes_on_the_alloc_on_fault_kernel(aof_kernel: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "qemu_panthor", "boot", "--kernel", "7.2-aof",
                        "--timeout", "1100"], capture_output=True, text=True, timeout=1200,
                       stdin=subprocess.DEVNULL)
    s, tail = check_debug_suite(p)
    missing = AOF_TESTS - set(s.passed)
    assert not missing, f"not passed: {sorted(missing)} (skipped: {s.skipped})\n{tail}"
    # the driver reports the port's uAPI version
    assert "driver panthor 1.9" in p.stdout, tail

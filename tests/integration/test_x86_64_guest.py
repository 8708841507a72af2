"""The x86_64 guest (q35 under TCG, panthor built with COMPILE_TEST from Debian's 7.2 source,
the glue's device-tree nodes under the empty of_root): the same device model serves it, and
the driver selftests pass there as on arm64."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from qemu_panthor.launcher.kernel_reports import check_console
from qemu_panthor.launcher.ktap import parse_ktap

pytestmark = pytest.mark.integration

MIN_PASSED = 47


@pytest.mark.timeout(1500)
def test_selftests_pass_in_the_x86_64_guest() -> None:
    p = subprocess.run([sys.executable, "-m", "qemu_panthor", "boot", "--arch", "x86_64",
                        "--suite", "all"],
                       capture_output=True, text=True, timeout=1400, stdin=subprocess.DEVNULL)
    console = p.stdout.splitlines()
    tail = "\n".join(console[-40:]) + "\n" + p.stderr[-3000:]
    assert any(re.search(r"kernel=\S+-qp run=selftests", line) for line in console), tail
    # the glue made the nodes under x86's empty of_root and bound the MSI-X vectors
    assert any("created device-tree nodes /qemu-panthor@" in line for line in console), tail
    assert any("irqs: msix job=" in line for line in console), tail
    s = parse_ktap(console)
    assert not s.failed, f"failed: {s.failed}\n{tail}"
    assert len(s.passed) >= MIN_PASSED, (s.line(), tail)
    assert not check_console(console).failing, tail
    assert p.returncode == 0, tail

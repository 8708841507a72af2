"""[igt] Mesa's panvk, the driver's real user: `vulkaninfo --summary` in the arm64 guest
(Debian's vulkan-tools and mesa-vulkan-drivers) lists the Mali-G610. vulkaninfo creates a
VkDevice, and panvk's device creation submits one init command stream per queue (three) and
waits for each: the backend counts the jobs its command streams completed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kernel", ["7.2", "6.12"])
def test_vulkaninfo_lists_the_mali_g610_through_panvk(kernel: str) -> None:
    p = subprocess.run([sys.executable, "-m", "qemu_panthor", "boot", "--run", "vulkaninfo",
                        "--kernel", kernel, "--keep"], capture_output=True, text=True,
                       timeout=800, stdin=subprocess.DEVNULL)
    tail = "\n".join(p.stdout.splitlines()[-40:]) + "\n" + p.stderr[-3000:]
    m = re.search(r"run dir kept at (\S+)", p.stderr)
    assert m, tail
    run_dir = Path(m.group(1))
    try:
        assert re.search(r"^vulkaninfo: Mali-G610 MC4 \(panvk Mesa ", p.stdout, re.M), tail
        assert "# vulkaninfo \tvendorID           = 0x13b5" in p.stdout, tail
        assert "# vulkaninfo \tdriverID           = DRIVER_ID_MESA_PANVK" in p.stdout, tail
        assert p.returncode == 0, tail
        log = (run_dir / "backend.log").read_text()
        ran = re.search(r"command streams ran: (\d+) jobs, (\d+) instructions, 0 CS fatal",
                        log)
        assert ran, log[-2000:]
        assert int(ran.group(1)) >= 3, ran.group(0)  # VERTEX_TILER, FRAGMENT, COMPUTE inits
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

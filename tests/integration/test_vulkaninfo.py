"""[igt] Mesa's panvk, the driver's real user: `vulkaninfo --summary` in the arm64 guest
(Debian's vulkan-tools and mesa-vulkan-drivers) lists the Mali-G610. vulkaninfo creates a
VkDevice, and panvk's device creation submits one init command stream per queue (three) and
waits for each: the backend counts the jobs its command streams completed."""

from __future__ import annotations

import re

import pytest
from support.guest_runs import cli_boot

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
@pytest.mark.parametrize("kernel", ["7.2", "6.12"])
def test_vulkaninfo_lists_the_mali_g610_through_panvk(kernel: str) -> None:
    with cli_boot("--run", "vulkaninfo", "--kernel", kernel) as (p, run_dir, tail):
        assert re.search(r"^vulkaninfo: Mali-G610 MC4 \(panvk Mesa ", p.stdout, re.M), tail
        assert "# vulkaninfo \tvendorID           = 0x13b5" in p.stdout, tail
        assert "# vulkaninfo \tdriverID           = DRIVER_ID_MESA_PANVK" in p.stdout, tail
        assert p.returncode == 0, tail
        log = (run_dir / "backend.log").read_text()
        ran = re.search(r"command streams ran: (\d+) jobs, (\d+) instructions, 0 CS fatal",
                        log)
        assert ran, log[-2000:]
        assert int(ran.group(1)) >= 3, ran.group(0)  # VERTEX_TILER, FRAGMENT, COMPUTE inits

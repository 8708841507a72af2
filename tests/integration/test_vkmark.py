"""Mesa's panvk rendering for real: vkmark's scenes, headless, in the arm64 guest (Debian's
vkmark and mesa-vulkan-drivers). Every scene's frames are draws with a tiler heap, fragment
passes, clears and blits submitted through panthor and signalled by the model's fences; the
run passes only when every scene reports its frame rate and vkmark exits 0. It found the
scoreboard wake-up a loop could lose (tests/unit/test_eventloop_deadline.py)."""

from __future__ import annotations

import re

import pytest
from support.guest_runs import cli_boot

from qemu_panthor.launcher.vkmark import DEFAULT_SCENES

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("kernel", "gpu", "name"), [
    ("7.2", "g610", "Mali-G610 MC4"), ("6.12", "g610", "Mali-G610 MC4"),
    ("7.2", "g52", "Mali-G52 r1 MC1"),  # panvk on Bifrost: JM job chains through panfrost
])
def test_vkmark_renders_every_scene_through_panvk(kernel: str, gpu: str, name: str) -> None:
    with cli_boot("--run", "vkmark", "--kernel", kernel, "--gpu", gpu) as (p, run_dir, tail):
        assert p.returncode == 0, tail
        assert f"vkmark: {len(DEFAULT_SCENES)} scenes rendered" in p.stdout, tail
        assert f"# vkmark     Device Name:    {name}" in p.stdout, tail
        fps = [int(x) for x in re.findall(r"^vkmark: \[\S+\] \S+: (\d+) FPS", p.stdout, re.M)]
        assert len(fps) == len(DEFAULT_SCENES) and min(fps) > 0, tail
        assert "job timeout" not in p.stdout + p.stderr, tail
        log = (run_dir / "backend.log").read_text()
        if gpu == "g52":
            ran = re.search(r"job slots ran: (\d+) jobs, \d+ chains done, 0 failed or stopped",
                            log)
        else:
            ran = re.search(r"command streams ran: (\d+) jobs, \d+ instructions, 0 CS fatal",
                            log)
        assert ran, log[-2000:]
        assert int(ran.group(1)) >= 10 * len(DEFAULT_SCENES), ran.group(0)  # frames, not inits

"""launcher/vkmark.py: what vkmark printed ("[scene] options: FPS: N FrameTime: X ms" per
scene) becomes the scenes rendered; the run passes only when every scene asked for reported
and vkmark exited 0. Output lines as vkmark 2025.01 prints them in the guest."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from qemu_panthor.errors import UserError
from qemu_panthor.launcher.boot import BootResult
from qemu_panthor.launcher.report import report
from qemu_panthor.launcher.vkmark import DEFAULT_SCENES, VkmarkPlan, parse, scene_list
from qemu_panthor.setup.recipes import guest_arch
from qemu_panthor.setup.userland import Userland

OUTPUT = """\
=======================================================
    vkmark 2025.01
=======================================================
    Vendor ID:      0x13B5
    Device ID:      0xA8670005
    Device Name:    Mali-G610 MC4
=======================================================
[cube] duration=1: FPS: 114 FrameTime: 8.772 ms
[shading] shading=cel:duration=1: FPS: 93 FrameTime: 10.753 ms
======================================================="""
LOST = """\
[cube] duration=1: FPS: 114 FrameTime: 8.772 ms
[clear] duration=1:terminate called after throwing an instance of 'vk::DeviceLostError'
  what():  vk::Device::waitIdle: ErrorDeviceLost
Aborted"""


def console(text: str, rc: int) -> list[str]:
    return ["@qp status phase=vkmark", *(f"# vkmark {x}" for x in text.splitlines()),
            f"# vkmark-exit rc={rc}", f"@qp result rc={rc}"]


def _plan(tmp: Path, scenes: list[str]) -> VkmarkPlan:
    return VkmarkPlan(Userland("vulkan", tmp, guest_arch("arm64"), (), {}), scenes)


def test_parse_reads_every_scene_line() -> None:
    scenes, out, rc = parse(console(OUTPUT, 0))
    assert rc == 0 and len(out) == len(OUTPUT.splitlines())
    assert [(s.name, s.options, s.fps, s.frame_ms) for s in scenes] == [
        ("cube", "duration=1", 114, 8.772), ("shading", "shading=cel:duration=1", 93, 10.753)]


def test_the_run_passes_only_when_every_scene_rendered(tmp_path: Path, capsys) -> None:
    args = argparse.Namespace(run="vkmark")
    two = ["cube:duration=1", "shading:shading=cel:duration=1"]
    ok = BootResult(rc=0, console=console(OUTPUT, 0), run_dir=tmp_path, outcome="powered-off")
    assert report(ok, args, suite=_plan(tmp_path, two)) == 0
    out = capsys.readouterr().out
    assert "vkmark: [cube] duration=1: 114 FPS, 8.772 ms per frame" in out
    assert "vkmark: 2 scenes rendered" in out
    # a device lost mid-run (the guest's rc is vkmark's: 134 after the abort)
    lost = BootResult(rc=134, console=console(LOST, 134), run_dir=tmp_path,
                      outcome="powered-off")
    assert report(lost, args, suite=_plan(tmp_path, ["cube", "clear"])) != 0
    captured = capsys.readouterr()
    assert "vkmark: 1 of 2 scenes rendered; vkmark exit 134" in captured.out
    assert "ErrorDeviceLost" in captured.err
    # vkmark exited 0 but a scene is missing: not a pass either
    short = BootResult(rc=0, console=console(OUTPUT, 0), run_dir=tmp_path,
                       outcome="powered-off")
    assert report(short, args, suite=_plan(tmp_path, [*two, "clear"])) == 1
    assert "2 of 3 scenes rendered; vkmark exit 0" in capsys.readouterr().out
    # it never finished (killed by the guest's timeout, or the guest died)
    cut = BootResult(rc=0, console=console(OUTPUT, 0)[:-2], run_dir=tmp_path,
                     outcome="powered-off")
    assert report(cut, args, suite=_plan(tmp_path, two)) == 1
    assert "missing (it never finished)" in capsys.readouterr().out


def test_scene_lists_are_checked() -> None:
    assert scene_list("cube:duration=2,clear") == ["cube:duration=2", "clear"]
    assert all(scene_list(s) == [s] for s in DEFAULT_SCENES)
    for bad in ("", ",", "cube duration=2", "cube;reboot", "cube:duration=$(x)", "Cube"):
        with pytest.raises(UserError, match="--vkmark-scenes"):
            scene_list(bad)


def test_the_guest_gets_one_scene_per_line(tmp_path: Path) -> None:
    files = _plan(tmp_path, ["cube:duration=2", "clear"]).guest_files()
    assert files["etc/qp/vkmark-scenes"] == (b"cube:duration=2\nclear\n", 0o644)
    assert "bin/qp-vkmark" in files and "lib/qp/userland.sh" in files

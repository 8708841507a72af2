"""launcher/vulkan.py: what `vulkaninfo --summary` printed (Vulkan-Tools' summary format:
"GPU<n>:" then "\tfield = value" lines) becomes the devices listed; the run passes when the
GPU model's name is among them."""

from __future__ import annotations

import argparse
from pathlib import Path

from qemu_panthor.launcher.boot import BootResult
from qemu_panthor.launcher.report import report
from qemu_panthor.launcher.vulkan import VulkanPlan, parse
from qemu_panthor.setup.recipes import guest_arch
from qemu_panthor.setup.userland import Userland

SUMMARY = """\
==========
VULKANINFO
==========
Devices:
========
GPU0:
\tapiVersion         = 1.4.354
\tvendorID           = 0x13b5
\tdeviceType         = PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU
\tdeviceName         = Mali-G610 MC4
\tdriverName         = panvk
\tdriverInfo         = Mesa 26.2.6-1
GPU1:
\tdeviceName         = llvmpipe (LLVM 22.1.0, 128 bits)
\tdriverName         = llvmpipe"""


def console(text: str, rc: int) -> list[str]:
    return ["@qp status phase=vulkaninfo", *(f"# vulkaninfo {x}" for x in text.splitlines()),
            f"# vulkaninfo-exit rc={rc}", f"@qp result rc={rc}"]


def _plan(tmp: Path) -> VulkanPlan:
    return VulkanPlan(Userland("vulkan", tmp, guest_arch("arm64"), (), {}), expect="Mali-G610")


def test_parse_lists_every_gpu_with_its_fields() -> None:
    devices, out, rc = parse(console(SUMMARY, 0))
    assert rc == 0 and out[0] == "=========="
    assert [d.fields.get("deviceName") for d in devices] == ["Mali-G610 MC4",
                                                             "llvmpipe (LLVM 22.1.0, 128 bits)"]
    assert devices[0].describe() == "Mali-G610 MC4 (panvk Mesa 26.2.6-1, Vulkan 1.4.354)"


def test_the_run_passes_only_when_the_gpu_is_listed(tmp_path: Path, capsys) -> None:
    args = argparse.Namespace(run="vulkaninfo")
    ok = BootResult(rc=0, console=console(SUMMARY, 0), run_dir=tmp_path, outcome="powered-off")
    assert report(ok, args, suite=_plan(tmp_path)) == 0
    assert "vulkaninfo: Mali-G610 MC4 (panvk" in capsys.readouterr().out
    only_cpu = "\n".join(x for x in SUMMARY.splitlines()[:5]) + "\nGPU0:\n\tdeviceName = llvmpipe"
    missing = BootResult(rc=0, console=console(only_cpu, 0), run_dir=tmp_path,
                         outcome="powered-off")
    assert report(missing, args, suite=_plan(tmp_path)) == 1
    assert "Mali-G610 not listed (llvmpipe; vulkaninfo exit 0)" in capsys.readouterr().out
    failed = BootResult(rc=1, console=console("ERROR at vulkaninfo.h:564: Failed", 1),
                        run_dir=tmp_path, outcome="powered-off")
    assert report(failed, args, suite=_plan(tmp_path)) == 1

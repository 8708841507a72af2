"""[foundation] The default guest boots, loads the panthor module chain and powers off."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration


def _loaded(console: list[str]) -> set[str]:
    for line in console:
        m = re.search(r"@qp status phase=modules loaded=(\S*)", line)
        if m:
            return set(m.group(1).split(","))
    raise AssertionError("guest printed no module status line:\n" + "\n".join(console[-20:]))


async def test_guest_loads_panthor_chain_without_gpu(boot_guest, images) -> None:
    r = await boot_guest(run="none", with_gpu=False, timeout=180)
    assert r.rc == 0, "\n".join(r.console[-30:])
    loaded = _loaded(r.console)
    assert {"panthor", "drm_gpuvm", "drm_exec", "gpu_sched", "drm"} <= loaded
    assert any(f"kernel={images.kver}" in line for line in r.console)
    assert any("reboot: Power down" in line for line in r.console), "guest did not power off"
    # A clean run: nothing to report, nothing left behind (docs/launcher.md).
    assert r.outcome == "powered-off" and r.fault is None and r.qemu_rc == 0
    assert r.run_dir is not None and not r.run_dir.exists()


async def test_bad_run_mode_reports_error(boot_guest) -> None:
    r = await boot_guest(run="bogus", with_gpu=False, timeout=180)
    assert r.rc == 2
    assert any("error=unknown-run value=bogus" in line for line in r.console)

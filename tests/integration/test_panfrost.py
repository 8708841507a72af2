"""[panfrost] The Mali-G52 (a Job Manager GPU) in the real guest: Debian's panfrost binds the
glue's device-tree node, identifies a Mali-G52 and passes the panfrost selftests
(guest/selftests/pf.c) on both kernel lines; through the backend's QMP the per-file address
spaces are visible as AS slots changing hands."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError
from support.guest_runs import qmp_session, until

from qemu_panthor.launcher.boot import Boot
from qemu_panthor.launcher.ktap import parse_ktap

pytestmark = pytest.mark.integration

KEY_TESTS = {
    "pf_modules", "gpu_pci_function", "glue_bound", "pf_probed", "pf_render_node",
    "pf_get_param", "pf_get_param_invalid", "pf_bo_create_mmap", "pf_write_value_chain",
    "pf_null_flush_fragment_jobs", "pf_submit_deps", "pf_submit_invalid",
    "pf_per_fd_address_spaces", "pf_runtime_pm_cycles", "pf_job_fault", "pf_mmu_fault",
    "pf_job_loop_reset", "pf_kmsg_clean",
}
# uAPI the 6.12 line's panfrost (1.2) does not have yet
NEWER_UAPI = {"pf_timestamp", "pf_jm_ctx"}


def _tail(console: list[str], n: int = 60) -> str:
    return "\n".join(console[-n:])


def _check_suite(r, *, skipped_ok: set[str]) -> None:
    s = parse_ktap(r.console)
    assert s.planned is not None and s.total == s.planned, _tail(r.console)
    assert not s.failed, f"failed: {s.failed}\n{_tail(r.console)}"
    missing = KEY_TESTS - set(s.passed)
    assert not missing, f"not passed: {sorted(missing)} (skipped: {s.skipped})"
    assert {name for name, _ in s.skipped} <= skipped_ok, s.skipped
    assert r.rc == 0
    bound = [line for line in r.console if "panthor_glue: bound" in line]
    assert bound and "Job Manager: panfrost" in bound[0] and "dma-coherent" not in bound[0]
    # panfrost's own identification line, as on a real RK3568
    assert any("mali-g52 id 0x7402 major 0x1 minor 0x0 status 0x0" in line
               for line in r.console), _tail(r.console)


async def test_g52_selftests_pass(boot_guest) -> None:
    r = await boot_guest(run="selftests", gpu="g52", timeout=300)
    _check_suite(r, skipped_ok=set())
    assert {"pf_timestamp", "pf_jm_ctx"} <= set(parse_ktap(r.console).passed)


async def test_g52_selftests_pass_on_612(boot_guest_612) -> None:
    """6.12: no CONFIG_OF_DYNAMIC (the boot device tree carries panfrost's node), panfrost
    uAPI 1.2."""
    r = await boot_guest_612(run="selftests", gpu="g52", timeout=300)
    _check_suite(r, skipped_ok=NEWER_UAPI)


async def test_per_file_address_spaces_through_qmp(request, tmp_path: Path) -> None:
    """20 open files, each submitting in turn, share the 8 AS slots: every slot is used and
    slots change hands (table-switches), each file's jobs ran in its own tables, and the job
    slots report what they ran."""
    images = request.getfixturevalue("images")
    sock = tmp_path / "qmp.sock"
    boot = Boot(images, gpu="g52", run="selftests", qmp=str(sock), trace=False, timeout=300,
                append="qp.only=pf_per_fd_address_spaces qp.hold=8", echo=False, keep=False)
    task = asyncio.create_task(boot.run())
    async with qmp_session(sock, task) as qmp:
        gpu = await qmp.execute("query-mali-gpu")
        assert (gpu["family"], gpu["name"]) == ("jm", "mali-g52")  # type: ignore[index]
        console = boot.result.console
        await until(lambda: any("phase=hold" in line for line in console), 240,
                    "the selftest's end (hold)", task)
        assert any(line.startswith("ok 1 pf_per_fd_address_spaces") for line in console), \
            _tail(console)
        ases = await qmp.execute("query-mali-mmu")
        updates = {a["as"]: a["commands"]["UPDATE"] for a in ases}  # type: ignore[union-attr]
        switches = {a["as"]: a["table-switches"] for a in ases}  # type: ignore[union-attr]
        assert all(updates[n] >= 1 for n in range(8)), updates
        assert sum(switches.values()) >= 20 - 8, switches  # 20 files, 8 slots
        slots = await qmp.execute("query-mali-job-slots")
        js1 = slots["slots"][1]  # type: ignore[index]
        assert js1["chains-done"] >= 60 and js1["chains-failed"] == 0, js1
        stats = await qmp.execute("query-mali-stats")
        assert stats["job-slots"]["jobs"] >= 60 and "cs" not in stats  # type: ignore[index]
        with pytest.raises(ExecuteError, match="Job Manager GPU"):
            await qmp.execute("query-mali-csg")
        result = await task
    assert result.rc == 0, _tail(result.console)

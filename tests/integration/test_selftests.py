"""[selftests] The C selftest suite runs in the real guest against the emulated Mali-G610
through the raw panthor uAPI; the host parses its KTAP output."""

from __future__ import annotations

import re

import pytest
from conftest import KERNEL_LINE

from qemu_panthor.launcher.ktap import parse_ktap

pytestmark = pytest.mark.integration

# The acceptance checks of [firmware] and [jobs], plus the uAPI coverage of [selftests].
KEY_TESTS = {
    # probe / first light ([firmware])
    "modules_panthor", "gpu_pci_function", "glue_bound", "panthor_probed", "render_node",
    "query_gpu_info", "query_csif_info", "query_timestamp_info", "runtime_pm_cycles",
    "kmsg_probe_clean",
    # jobs ([jobs])
    "job_store_deadbeef", "job_1000_sequential", "job_8_concurrent_groups",
    "job_bad_opcode_fatal", "job_many_vms", "job_mmu_fault", "job_fault_among_many_vms",
    "kmsg_faults_only_expected",
    # [csf]: resident groups run side by side; timeslicing resumes streams where they stopped;
    # heap pressure, recoverable faults, the progress timer, resets with work in flight, lock
    # regions (docs/firmware.md)
    "csg_concurrent", "timeslice_resume", "tiler_oom_grow", "cs_fault_recoverable",
    "lock_region_stall",
    # driver error paths reached through the qemu-panthor test port (docs/test-port.md)
    "gpu_reset_recovery", "vm_bind_async_failure_unusable", "fw_boot_fail_unplug",
    # uAPI coverage
    "gem_create_mmap", "gem_no_mmap_offset", "gem_invalid", "vm_create_destroy", "vm_bind_invalid",
    "vm_bind_sync_data", "vm_bind_async", "vm_partial_unmap_2m", "group_create_invalid",
    "group_submit_invalid", "tiler_heap",
    # [glue]: rmmod panthor; rmmod panthor_glue; insmod both, re-probed, no warnings
    "glue_reload_cycles",
}
# The long suite (`boot --suite long`): tests that wait on driver or firmware timers
LONG_TESTS = {"job_timeout_recovery", "progress_timeout", "ping_timeout_reset",
              "reset_in_flight", "tiler_oom_fail"}
# On Debian's 7.2 line (panthor uAPI 1.8: BO_SET_LABEL, BO_QUERY_INFO, BO_SYNC, group
# priorities and TIMESTAMP_INFO all exist, panthor_drv.c's version history ~1767-1795) only
# the alloc-on-fault tests may skip: that uAPI is the port's (the 7.2-aof kernel), in no
# Debian kernel. Every other test must run and pass.
SKIPPABLE_72 = dict.fromkeys(("alloc_on_fault_store", "alloc_on_fault_granule",
                              "alloc_on_fault_many", "alloc_on_fault_out_of_bo"),
                             "no alloc-on-fault BOs")
QP_INFO = re.compile(r"# qp-info: job_bo_va=0x([0-9a-f]+) job_bo_pa=0x([0-9a-f]+)")


def _tail(console: list[str], n: int = 60) -> str:
    return "\n".join(console[-n:])


async def test_selftest_suite_passes(boot_guest) -> None:
    r = await boot_guest(run="selftests", timeout=300)
    s = parse_ktap(r.console)
    assert s.planned is not None and s.planned >= len(KEY_TESTS), _tail(r.console)
    assert not s.failed, f"failed: {s.failed}\n{_tail(r.console)}"
    assert s.total == s.planned
    assert not LONG_TESTS & {*s.passed, *s.failed}, "a long-suite test ran in the default one"
    missing = KEY_TESTS - set(s.passed)
    assert not missing, f"not passed: {sorted(missing)} (skipped: {s.skipped})"
    # the kernel line under test (QEMU_PANTHOR_KERNEL) says what may skip; a kernel of the
    # user's own has an unknown uAPI: any skip must then at least say why
    skippable = {"7.2": SKIPPABLE_72, "6.12": SKIPPABLE_612}.get(KERNEL_LINE)
    for name, why in s.skipped:
        assert why, f"{name} skipped without a reason"
        if skippable is not None:
            assert name in skippable, f"{name} skipped on {KERNEL_LINE}: {why}"
            assert skippable[name] in why, f"{name}: unexpected reason {why!r}"
    assert r.rc == 0
    # Not dma-coherent by default, as on RK3588: panthor's cache-maintenance paths run
    # (kmsg_probe_clean shows the glue's bound line).
    bound = [line for line in r.console if "panthor_glue: bound" in line]
    assert bound and "dma-coherent" not in bound[0], bound
    # the job test names the data BO page for host-side (QMP) inspection
    m = next((QP_INFO.search(line) for line in r.console if QP_INFO.search(line)), None)
    assert m, "no qp-info line"
    assert int(m.group(1), 16) != 0 and int(m.group(2), 16) >= 0x4000_0000  # guest RAM base


async def test_long_suite_passes(boot_guest) -> None:
    """The timer-bound tests (job timeout, progress timer, PING watchdog resets, the heap
    that cannot grow), left out of the default suite to keep `make run` short."""
    r = await boot_guest(run="selftests", timeout=300, append="qp.suite=long")
    s = parse_ktap(r.console)
    assert not s.failed, f"failed: {s.failed}\n{_tail(r.console)}"
    assert set(s.passed) == LONG_TESTS, (sorted(s.passed), _tail(r.console))
    assert r.rc == 0


async def test_only_and_hold_parameters(boot_guest) -> None:
    r = await boot_guest(run="selftests", timeout=180,
                         append="qp.only=query_gpu_info,job_store_deadbeef qp.hold=1")
    s = parse_ktap(r.console)
    assert s.planned == 2, _tail(r.console)
    assert sorted(s.passed) == ["job_store_deadbeef", "query_gpu_info"], _tail(r.console)
    hold = [i for i, line in enumerate(r.console) if "@qp status phase=hold" in line]
    result = [i for i, line in enumerate(r.console) if "@qp result rc=0" in line]
    assert hold and result and hold[0] < result[0], _tail(r.console)
    assert r.rc == 0


# On Debian's 6.12 line only these may skip, each because that kernel lacks the uAPI or the
# fix the test checks (the reason says which).
SKIPPABLE_612 = {
    "query_timestamp_info": "uAPI 1.1", "query_group_priorities": "uAPI 1.2",
    "group_priorities": "uAPI 1.2", "gem_no_mmap_offset": "predates",
    "bo_set_label": "BO_SET_LABEL", "bo_query_info": "BO_QUERY_INFO", "bo_sync": "BO_SYNC",
    # 6.12 maps before it flushes and ignores a failed flush LOCK: an async bind cannot fail
    "vm_bind_async_failure_unusable": "ignores a failed flush LOCK",
    # 6.12 remaps as an unmap and a map flushed separately: a GPU load between them faults
    "lock_region_stall": "each flushed on its own",
    # the alloc-on-fault port's uAPI (the 7.2-aof kernel): skipped on every Debian kernel
    **dict.fromkeys(("alloc_on_fault_store", "alloc_on_fault_granule", "alloc_on_fault_many",
                     "alloc_on_fault_out_of_bo"), "no alloc-on-fault BOs"),
}


async def test_selftest_suite_on_612_line(boot_guest_612) -> None:
    """The same suites (default and long) on Debian's 6.12 kernel: 0 failed, skips only for
    what it lacks."""
    r = await boot_guest_612(run="selftests", timeout=400, append="qp.suite=all")
    s = parse_ktap(r.console)
    assert not s.failed, f"failed: {s.failed}\n{_tail(r.console)}"
    assert s.planned is not None and s.total == s.planned
    for name, why in s.skipped:
        assert name in SKIPPABLE_612, f"{name} skipped on 6.12: {why}"
        assert SKIPPABLE_612[name] in why, f"{name}: unexpected reason {why!r}"
    must_pass = (KEY_TESTS | LONG_TESTS) - set(SKIPPABLE_612)
    assert not must_pass - set(s.passed), sorted(must_pass - set(s.passed))
    assert r.rc == 0

"""Several guests at once on one machine (docs/perf.md, farm density): each boot has its own
run directory, sockets and backend, and the jobs of one never reach the other's GPU."""

from __future__ import annotations

import asyncio

from qemu_panthor.launcher.ktap import parse_ktap


async def test_two_guests_at_once(boot_guest) -> None:
    only = "qp.only=job_store_deadbeef,job_8_concurrent_groups,job_mmu_fault"
    a, b = await asyncio.gather(boot_guest(run="selftests", timeout=300, append=only),
                                boot_guest(run="selftests", timeout=300, append=only))
    for r in (a, b):
        s = parse_ktap(r.console)
        assert r.rc == 0 and not s.failed, (s.failed, r.console[-30:])
        assert sorted(s.passed) == ["job_8_concurrent_groups", "job_mmu_fault",
                                    "job_store_deadbeef"]
    assert a.run_dir != b.run_dir
    assert a.backend_pid != b.backend_pid

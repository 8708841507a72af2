"""[qmp] The backend's QMP server while the real guest runs jobs on the emulated GPU.

Boots the guest with the backend's QMP enabled and the selftests restricted to the 0xdeadbeef
job and the MMU-fault job (kernel command line ``qp.only=...``), the guest holding the
deadbeef job's context for ``qp.hold`` seconds after printing
``# qp-info: job_bo_va=0x... job_bo_pa=0x...`` (the BO's GPU VA and the guest-physical address
of its page, from /proc/self/pagemap). Through QMP it then finds the job's address space (the AS
whose translation of job_bo_va is job_bo_pa), checks that x-query-mali-translate gives exactly
job_bo_pa, and waits for the MALI_MMU_FAULT event of the faulting job (VA 0x7654320, the hole
guest/selftests/t_jobs.c stores to).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from support.guest_runs import qmp_session, until

from qemu_panthor.launcher.boot import Boot

pytestmark = pytest.mark.integration

QP_INFO = re.compile(r"qp-info: job_bo_va=0x([0-9a-fA-F]+) job_bo_pa=0x([0-9a-fA-F]+)")
KERNEL_FAULT = re.compile(r"Unhandled Page fault in AS(\d+) at VA 0x([0-9a-fA-F]+)")
BIND2M = re.compile(r"# qp-info: bind2m_va=0x([0-9a-f]+) bind2m_runs=(\S+)")
FAULT_VA = 0x7654320  # test_job_mmu_fault's never-mapped store target
HOLD_S = 10


def _find(lines: list[str], rx: re.Pattern[str]) -> re.Match[str] | None:
    for line in lines:
        m = rx.search(line)
        if m:
            return m
    return None


async def test_qmp_finds_the_job_as_and_reports_the_mmu_fault(request, tmp_path: Path) -> None:
    images = request.getfixturevalue("images")
    sock = tmp_path / "qmp.sock"
    boot = Boot(images, gpu="g610", run="selftests", qmp=str(sock), trace=False, timeout=400,
                append=f"qp.only=job_store_deadbeef,job_mmu_fault qp.hold={HOLD_S}",
                echo=False, keep=False)
    task = asyncio.create_task(boot.run())
    async with qmp_session(sock, task) as qmp:
        gpu = await qmp.execute("query-mali-gpu")
        assert gpu["identity"]["GPU_ID"] == 0xA8670005

        console = boot.result.console
        # qp-hold: the job has run and its VM, BOs and group stay alive for HOLD_S seconds.
        await until(lambda: any("qp-hold:" in line for line in console), 300,
                    "the job's qp-hold line", task)
        m = _find(console, QP_INFO)
        assert m is not None
        va, pa = int(m.group(1), 16), int(m.group(2), 16)
        assert pa != 0
        # The job's AS: the enabled AS (not AS0, the MCU's) whose translation of va is pa.
        hits = []
        for a in await qmp.execute("query-mali-mmu"):  # type: ignore[union-attr]
            if not a["enabled"]:
                continue
            t = await qmp.execute("x-query-mali-translate", {"as": a["as"], "va": va})
            if t["translated"] and t["pa"] == pa:  # type: ignore[index]
                hits.append((a["as"], t))
        assert len(hits) == 1, f"ASes translating {va:#x} -> {pa:#x}: {hits}"
        as_nr, t = hits[0]
        assert as_nr != 0 and t["writable"] is True and t["ram"] is True
        t = await qmp.execute("x-query-mali-translate",
                              {"as": as_nr, "va": va + 0x10, "access": "write"})
        assert t["pa"] == pa + 0x10  # type: ignore[index]
        pt = await qmp.execute("x-query-mali-page-table", {"as": as_nr})
        assert any(r["va"] <= va < r["va"] + r["size"] and r["pa"] + va - r["va"] == pa
                   for r in pt["ranges"])  # type: ignore[index]
        # [mmu] the 2 MiB range: every page translates to exactly the guest's page, and a
        # physically contiguous, aligned range is one level-2 block in the page table.
        m2 = _find(console, BIND2M)
        assert m2 is not None, "no bind2m qp-info line"
        va2 = int(m2.group(1), 16)
        pages = [int(pa, 16) + 0x1000 * i
                 for run in m2.group(2).split(",")
                 for pa, n in [run.split(":")] for i in range(int(n))]
        assert len(pages) == 512
        for i, want in enumerate(pages):
            t = await qmp.execute("x-query-mali-translate",
                                  {"as": as_nr, "va": va2 + 0x1000 * i + 0x18})
            assert t["translated"] and t["pa"] == want + 0x18, (i, t)  # type: ignore[index]
        if m2.group(2).endswith(":512") and pages[0] % 0x200000 == 0:
            assert t["level"] == 2, t  # type: ignore[index]
            pt = await qmp.execute("x-query-mali-page-table", {"as": as_nr})
            assert {"va": va2, "pa": pages[0], "size": 0x200000} in [
                {k: r[k] for k in ("va", "pa", "size")} for r in pt["ranges"]  # type: ignore[index]
            ], pt
        stats = await qmp.execute("query-mali-stats")
        assert stats["cs"]["jobs"] >= 1 and stats["vfio-user"]["connections"] >= 1  # type: ignore[index]

        # The faulting job: an event naming the exact VA, the AS the kernel log names.
        fault = None
        deadline = time.monotonic() + 300
        while fault is None:
            left = deadline - time.monotonic()
            assert left > 0, "no MALI_MMU_FAULT event for the faulting job"
            ev = await asyncio.wait_for(qmp.events.get(), left)
            if ev["event"] == "MALI_MMU_FAULT" and ev["data"]["va"] == FAULT_VA:
                fault = ev["data"]
        assert fault["access"] == "write" and fault["latched"] is True
        assert fault["exception-name"].startswith("TRANSLATION_FAULT_")
        assert fault["as"] != 0
        result = await task
    assert result.rc == 0, "\n".join(result.console[-40:])
    # panthor logs the AS and VA it read from AS_FAULTSTATUS/FAULTADDRESS: the same as ours.
    k = _find(result.console, KERNEL_FAULT)
    assert k is not None, "no 'Unhandled Page fault' line in the guest log"
    assert (int(k.group(1)), int(k.group(2), 16)) == (fault["as"], FAULT_VA)

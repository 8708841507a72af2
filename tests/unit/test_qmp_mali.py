"""The Mali QMP commands and events against model state set up the way the driver would:
AS registers programmed through MMIO, page tables written by the independent LPAE writer,
command streams run by the firmware model (the support.csf_host driver). Expected values come from
the hardware reference (GPU_ID, exception codes, FAULTSTATUS layout), not from the model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from qemu.qmp import ExecuteError, QMPClient
from support import csf_host
from support import pgtable_writer as ptw
from support.qmp_local import qmp_client

from qemu_panthor.device import MaliPciFunction
from qemu_panthor.gpu.models import MODELS
from qemu_panthor.memory import RamRegion
from qemu_panthor.qmp import build_server

TIMEOUT = 5.0
MMU = 0x2000
MEMATTR = 0x4C4C4C4C_8C4C8F4C  # §5.1 non-coherent AS_MEMATTR
TRANSCFG_48 = 0x420001C6  # AARCH64_4K, 48-bit VA, PTW WB, RA
TRANSLATION_FAULT_0, PERM_FAULT_3, GPU_BUS_FAULT = 0xC0, 0xCB, 0x80
ACCESS_READ, ACCESS_WRITE = 2, 3
RW = ptw.IOMMU_READ | ptw.IOMMU_WRITE | ptw.IOMMU_CACHE
RO = ptw.IOMMU_READ | ptw.IOMMU_CACHE | ptw.IOMMU_NOEXEC


def as_reg(n: int, reg: int) -> int:
    return MMU + 0x400 + n * 0x40 + reg


class Rig:
    """A MaliPciFunction whose DMA space holds the test's RAM, and an LPAE VM for AS ``n``."""

    def __init__(self) -> None:
        self.dev = MaliPciFunction(MODELS["g610"])
        self.ram = ptw.TableRam()
        self.dev.dma.add(RamRegion(self.ram.base, self.ram.buf))
        self.vm = ptw.LpaeWriter(self.ram)

    def w(self, off: int, value: int, size: int = 4) -> None:
        self.dev.gpu.mmio_write(off, size, value)

    def program_as(self, n: int, *, update: bool = True) -> None:
        self.w(as_reg(n, 0x00), self.vm.transtab, 8)
        self.w(as_reg(n, 0x08), MEMATTR, 8)
        self.w(as_reg(n, 0x30), TRANSCFG_48, 8)
        if update:
            self.w(as_reg(n, 0x18), 1)  # AS_COMMAND UPDATE


@pytest.fixture
async def rig(tmp_path: Path):
    r = Rig()
    async with qmp_client(r.dev, tmp_path / "qmp.sock") as qmp:
        r.qmp = qmp  # type: ignore[attr-defined]
        yield r


async def test_query_mali_gpu_identity_power_irq(rig: Rig) -> None:
    g = await rig.qmp.execute("query-mali-gpu")
    assert g["model"] == "g610" and g["name"] == "Mali-G610"
    assert g["identity"]["GPU_ID"] == 0xA8670005  # reference §1: arch 10.8 rev 6, r0p0
    assert g["arch"] == "10.8.6"
    assert g["identity"]["AS_PRESENT"] == MODELS["g610"].as_present
    assert g["power"]["l2"]["ready"] == 0 and g["mcu"]["status"] == "DISABLED"
    rig.w(0x028, 0xFFFFFFFF)  # GPU_INT_MASK
    rig.w(0x1A0, 1, 8)  # L2_PWRON core 0
    g = await rig.qmp.execute("query-mali-gpu")
    assert g["power"]["l2"]["ready"] == 1
    gi = g["irq"]["gpu"]
    assert gi["mask"] == 0xFFFFFFFF and gi["rawstat"] & (1 << 9)  # POWER_CHANGED
    assert gi["stat"] == gi["rawstat"] and gi["level"] is True
    assert g["irq"]["mmu"] == {"rawstat": 0, "mask": 0, "stat": 0, "level": False, "raised": 0}


async def test_query_mali_mmu_registers_active_config_fault_and_tlb(rig: Rig) -> None:
    rig.vm.map(0x10_0000, 0x8020_0000, 0x2000, RW)
    rig.program_as(2, update=False)
    (a,) = await rig.qmp.execute("query-mali-mmu", {"as": 2})
    assert a["registers"]["TRANSTAB"] == rig.vm.transtab
    assert a["active"]["TRANSTAB"] == 0 and not a["enabled"]  # not latched before UPDATE
    rig.w(as_reg(2, 0x18), 1)
    (a,) = await rig.qmp.execute("query-mali-mmu", {"as": 2})
    assert a["active"] == {"TRANSTAB": rig.vm.transtab, "MEMATTR": MEMATTR,
                           "TRANSCFG": TRANSCFG_48, "adrmode": "AARCH64_4K", "va-bits": 48,
                           "pa-bits": a["active"]["pa-bits"], "start-level": 0}
    assert a["enabled"] and a["commands"]["UPDATE"] == 1
    mmu = rig.dev.gpu.mmu
    assert mmu.read(2, 0x10_0010, 4) == bytes(4)
    assert mmu.read(2, 0x10_0020, 4) == bytes(4)
    (a,) = await rig.qmp.execute("query-mali-mmu", {"as": 2})
    assert (a["tlb"]["misses"], a["tlb"]["hits"]) == (1, 1)
    assert a["fault"]["pending"] is False
    # A GPU access to an unmapped VA: the level-1 entry is missing (VA 1 GiB + ...).
    va = 0x4000_1234
    level = rig.vm.missing_level(va)
    mmu.read(2, va, 4, report=True)
    (a,) = await rig.qmp.execute("query-mali-mmu", {"as": 2})
    f = a["fault"]
    assert f["pending"] is True and f["FAULTADDRESS"] == va
    assert f["FAULTSTATUS"] == (TRANSLATION_FAULT_0 + level) | ACCESS_READ << 8
    assert f["exception-type"] == TRANSLATION_FAULT_0 + level and f["access"] == "read"
    assert f["exception-name"] == f"TRANSLATION_FAULT_{level}"
    ases = await rig.qmp.execute("query-mali-mmu")
    assert [x["as"] for x in ases] == [n for n in range(16) if MODELS["g610"].as_present >> n & 1]


async def test_translate_gives_the_mapped_pa_or_the_exact_fault(rig: Rig) -> None:
    rig.vm.map(0x20_0000, 0x8040_0000, 0x20_0000, RW)  # one 2 MiB block
    rig.vm.map(0x60_0000, 0x8060_0000, 0x1000, RO)
    rig.vm.map(0x70_0000, 0x1_0000_0000, 0x1000, RW)  # no RAM behind it
    rig.program_as(1)
    t = await rig.qmp.execute("x-query-mali-translate", {"as": 1, "va": 0x2F_1234})
    assert t["translated"] is True and t["pa"] == 0x8040_0000 + 0xF_1234
    assert t["writable"] is True and t["level"] == 2 and t["ram"] is True
    assert t["attr-index"] == ptw.ATTRINDX_CACHE
    assert t["memattr"] == (MEMATTR >> (8 * ptw.ATTRINDX_CACHE)) & 0xFF
    t = await rig.qmp.execute("x-query-mali-translate", {"as": 1, "va": 0x60_0008})
    assert t["pa"] == 0x8060_0008 and t["writable"] is False and t["executable"] is False
    t = await rig.qmp.execute("x-query-mali-translate",
                              {"as": 1, "va": 0x60_0008, "access": "write"})
    assert t["translated"] is False
    assert t["fault"] == {"exception-type": PERM_FAULT_3, "exception-name": "PERM_FAULT_3",
                          "access": "write", "bus": False,
                          "faultstatus": PERM_FAULT_3 | ACCESS_WRITE << 8}
    t = await rig.qmp.execute("x-query-mali-translate", {"as": 1, "va": 0x70_0000})
    assert t["translated"] is True and t["ram"] is False  # the access would be a bus fault
    t = await rig.qmp.execute("x-query-mali-translate", {"as": 1, "va": 0x1234_5000})
    level = rig.vm.missing_level(0x1234_5000)
    assert t["fault"]["exception-type"] == TRANSLATION_FAULT_0 + level


async def test_translate_has_no_side_effects(rig: Rig) -> None:
    rig.vm.map(0x10_0000, 0x8010_0000, 0x1000, RO)
    rig.program_as(1)
    before = await rig.qmp.execute("query-mali-mmu", {"as": 1})
    rawstat = rig.dev.gpu.mmu_irq.rawstat
    for va, access in ((0x10_0000, "read"), (0x10_0000, "write"), (0x9999_0000, "read"),
                       (0x10_0000, "execute"), (0x10_0000, "atomic")):
        await rig.qmp.execute("x-query-mali-translate", {"as": 1, "va": va, "access": access})
    assert await rig.qmp.execute("query-mali-mmu", {"as": 1}) == before  # TLB, faults, regs
    assert rig.dev.gpu.mmu_irq.rawstat == rawstat == 0
    stats = await rig.qmp.execute("query-mali-stats")
    assert stats["tlb"] == {"hits": 0, "misses": 0}


async def test_bad_arguments_are_qmp_errors(rig: Rig) -> None:
    absent = next(n for n in range(16) if not MODELS["g610"].as_present >> n & 1)
    cases = [
        ({"as": absent, "va": 0}, f"Address space {absent} is not present"),
        ({"as": 16, "va": 0}, "Parameter 'as' expects a value in 0x0..0xf"),
        ({"as": 1, "va": -1}, "Parameter 'va' expects a value in 0x0..0xffffffffffffffff"),
        ({"as": 1, "va": 1 << 64}, "Parameter 'va' expects"),
        ({"as": 1, "va": 0, "access": "bogus"}, "Parameter 'access' does not accept value"),
        ({"as": True, "va": 0}, "Invalid parameter type for 'as', expected: integer"),
        ({"va": 0}, "Parameter 'as' is missing"),
        ({"as": 1, "va": 0, "pa": 0}, "Parameter 'pa' is unexpected"),
    ]
    for args, desc in cases:
        with pytest.raises(ExecuteError) as e:
            await rig.qmp.execute("x-query-mali-translate", args)
        assert e.value.error_class == "GenericError"
        assert str(e.value).startswith(desc), (args, str(e.value))
    with pytest.raises(ExecuteError, match="Parameter 'max-ranges' expects"):
        await rig.qmp.execute("x-query-mali-page-table", {"as": 1, "max-ranges": 0})
    assert (await rig.qmp.execute("query-version"))["package"].startswith("qemu-panthor")


async def test_page_table_ranges_are_coalesced_and_bounded(rig: Rig) -> None:
    rig.vm.map(0x10_0000, 0x8010_0000, 0x3000, RW)  # 3 contiguous pages: one range
    rig.vm.map(0x20_0000, 0x8050_0000, 0x1000, RO)
    rig.vm.map(0x40_0000, 0x8060_0000, 0x20_0000, RW)  # a 2 MiB block
    rig.program_as(3)
    pt = await rig.qmp.execute("x-query-mali-page-table", {"as": 3})
    assert [(r["va"], r["pa"], r["size"], r["writable"]) for r in pt["ranges"]] == [
        (0x10_0000, 0x8010_0000, 0x3000, True),
        (0x20_0000, 0x8050_0000, 0x1000, False),
        (0x40_0000, 0x8060_0000, 0x20_0000, True),
    ]
    assert pt["truncated"] is False and pt["total-ranges"] == 3 and pt["adrmode"] == "AARCH64_4K"
    pt = await rig.qmp.execute("x-query-mali-page-table", {"as": 3, "max-ranges": 2})
    assert len(pt["ranges"]) == 2 and pt["truncated"] is True and pt["total-ranges"] == 3


async def test_mmu_fault_events_latched_then_dropped(rig: Rig) -> None:
    rig.program_as(4)
    mmu = rig.dev.gpu.mmu
    assert mmu.read(4, 0xDEAD_0000, 8, report=False) is not None  # introspection: no event
    mmu.read(4, 0xBEEF_0008, 8, report=True)
    mmu.write(4, 0xBEEF_1000, b"x", report=True)  # while AS4's bit is pending: dropped
    evs = [await _event(rig.qmp) for _ in range(2)]
    lvl = rig.vm.missing_level(0xBEEF_0008)
    assert [e["event"] for e in evs] == ["MALI_MMU_FAULT"] * 2
    assert evs[0]["data"] == {"as": 4, "va": 0xBEEF_0008, "latched": True, "access": "read",
                              "exception-type": TRANSLATION_FAULT_0 + lvl,
                              "exception-name": f"TRANSLATION_FAULT_{lvl}", "bus": False,
                              "faultstatus": (TRANSLATION_FAULT_0 + lvl) | ACCESS_READ << 8}
    assert evs[1]["data"]["latched"] is False and evs[1]["data"]["access"] == "write"
    s = await rig.qmp.execute("query-mali-stats")
    assert s["mmu-faults"] == {"latched": 1, "dropped": 1}
    assert rig.qmp.events.empty()


async def test_gpu_reset_event(rig: Rig) -> None:
    rig.w(0x030, 0x101)  # GPU_CMD SOFT_RESET (§2.3)
    ev = await _event(rig.qmp)
    assert ev["event"] == "MALI_GPU_RESET" and ev["data"] == {"kind": "soft"}
    rig.w(0x030, 0x201)  # HARD_RESET
    assert (await _event(rig.qmp))["data"] == {"kind": "hard"}
    s = await rig.qmp.execute("query-mali-stats")
    assert s["gpu"]["resets"] == 2
    assert s["mmio"]["writes"] == 2 and s["mmio"]["reads"] == 0  # queries read no register


async def _event(qmp: QMPClient) -> dict:
    import asyncio

    msg = await asyncio.wait_for(qmp.events.get(), TIMEOUT)
    return dict(msg)


# -- command streams through the firmware model (the support.csf_host driver) ------------------
@pytest.fixture
async def host(tmp_path: Path):
    h = csf_host.Host()
    h.boot()
    h.glb_init()
    h.job_irq()
    srv, events = build_server(SimpleNamespace(gpu=h.gpu, firmware=h.fw))  # type: ignore[arg-type]
    await srv.start(tmp_path / "qmp.sock")
    qmp = QMPClient("test")
    await qmp.connect(srv.path)
    h.qmp = qmp  # type: ignore[attr-defined]
    yield h
    await qmp.disconnect()
    events.detach()
    await srv.close()


async def test_query_csg_shows_a_stream_blocked_on_a_sync_wait(host) -> None:
    host.start_group(0)
    host.push(csf_host.blocking_program())
    host.fw.sched.pump()
    c = await host.qmp.execute("query-mali-csg")
    assert c["running"] is True
    slot = c["slots"][0]
    assert slot["active"] and slot["as"] == 1 and slot["priority"] == 15
    assert all(not s["active"] and s["streams"] == [] for s in c["slots"][1:])
    (cs,) = slot["streams"]
    assert cs["index"] == 0 and cs["ring-base"] == csf_host.RING_VA and cs["ring-size"] == 0x1000
    assert cs["insert"] == 64 and cs["extract"] == 32  # stopped at the 5th instruction
    assert cs["state"] == "blocked"
    assert cs["blocked-on"] == {"reason": "sync-wait", "address": csf_host.USER_VA + 0x900,
                                "value": 0, "condition": "gt", "64bit": True}
    assert cs["cmd-ptr"] == csf_host.RING_VA + 32


async def test_stats_count_instructions_and_jobs(host) -> None:
    host.start_group(0)
    for k, wd in enumerate([0x0100000000010800, 0x010200000000002A, 0x3300000200000000]):
        host.ram.write_u64(host.user_pa + 8 * k, wd)  # user stream: a user SYNC_ADD64
    host.push(csf_host.kernel_job(csf_host.USER_VA, 24, csf_host.SYNCOBJ_VA))
    host.push(csf_host.kernel_job(csf_host.USER_VA, 24, csf_host.SYNCOBJ_VA))
    host.fw.sched.pump()
    assert host.ram.read_u64(host.sync_pa) == 2
    s = await host.qmp.execute("query-mali-stats")
    # 2 x (16 ring words incl. the CALL + 3 user instructions); the user SYNC_ADD64 runs in
    # a CALLed buffer, so only the kernel's ring SYNC_ADD64 counts as a job.
    assert s["cs"]["instructions"] == 2 * (16 + 3)
    assert s["cs"]["jobs"] == 2 and s["cs"]["fatal"] == 0
    assert s["irqs"]["job"] >= 1 and s["mmio"]["writes"] > 0


async def test_cs_fatal_event(host) -> None:
    host.start_group(0)
    host.push([0xFF00000000000000])  # opcode 0xFF: CS_INSTR_INVALID (§8)
    host.fw.sched.pump()
    ev = await _event(host.qmp)
    assert ev["event"] == "MALI_CS_FATAL"
    d = ev["data"]
    assert (d["csg"], d["cs"], d["exception-type"], d["exception-name"]) == (
        0, 0, 0x49, "CS_INSTR_INVALID")
    # info = the instruction word (docs/command-streams.md, unknown opcode), in the event and
    # in CS_FATAL_INFO where the driver reads it
    assert d["info"] == 0xFF00000000000000
    assert host.cs_out("fatal_info") == 0xFF00000000000000
    (cs,) = (await host.qmp.execute("query-mali-csg"))["slots"][0]["streams"]
    assert cs["blocked-on"] == {"reason": "fatal"}


async def test_mmu_fault_from_a_command_stream(host) -> None:
    host.start_group(0)
    host.push([csf_host.move48(0, 0x7777_0000), csf_host.move32(5, 1),
               csf_host.sync_set32(0, 5), 0])
    host.fw.sched.pump()
    ev = await _event(host.qmp)
    assert ev["event"] == "MALI_MMU_FAULT"
    assert ev["data"]["as"] == 1 and ev["data"]["va"] == 0x7777_0000
    # user VM: 48-bit VA, walk from L0 (reference/mmu.md "Walk"). The host's mappings (RING_VA,
    # SYNCOBJ_VA, USER_VA) all lie in the first GiB: L0 slot 0 and L1 slot 0 are tables, but
    # 0x7777_0000's L1 slot (VA[38:30] = 1) is empty -> TRANSLATION_FAULT_1 (0xC0 + 1)
    assert (ev["data"]["exception-type"], ev["data"]["exception-name"]) == (
        0xC1, "TRANSLATION_FAULT_1")
    (cs,) = (await host.qmp.execute("query-mali-csg"))["slots"][0]["streams"]
    assert cs["blocked-on"] == {"reason": "mmu-fault", "as": 1}


async def test_stats_report_the_backend_process_memory_and_fds(rig: Rig) -> None:
    """query-mali-stats "process": this process's VmRSS and open fds, as /proc reports them."""
    import os

    s = await rig.qmp.execute("query-mali-stats")
    proc = s["process"]
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    assert 0.5 * rss < proc["rss-kib"] < 2 * rss
    fds = len(os.listdir("/proc/self/fd"))
    assert abs(proc["fds"] - fds) <= 2  # listdir itself holds one while it runs
    r, w = os.pipe()
    try:
        assert (await rig.qmp.execute("query-mali-stats"))["process"]["fds"] == proc["fds"] + 2
    finally:
        os.close(r)
        os.close(w)

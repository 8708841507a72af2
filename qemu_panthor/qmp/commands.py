"""The Mali introspection commands and events of the backend's QMP server (docs/qmp.md).

Every query reads model state directly (never through MMIO, so it counts no register access
and latches nothing); ``x-query-mali-translate`` and ``x-query-mali-page-table`` walk the
page tables with :mod:`qemu_panthor.mmu.introspect`, which fills no TLB and raises no fault.
Events come from the models' observer hooks: ``Mmu.on_fault`` (MALI_MMU_FAULT),
``CsfFirmware.on_cs_fatal`` (MALI_CS_FATAL, CSF parts) and ``MaliGpu.on_reset``
(MALI_GPU_RESET). A Job Manager part has ``query-mali-job-slots`` where a CSF part has
``query-mali-csg``; each answers the other family with an error.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..exceptions import exception_name
from ..gpu.control import identity_registers
from ..gpu.regs import McuStatus
from ..memory import SparseRam
from ..mmu import Access, MmuFault, Translation, introspect
from ..mmu import regs as mregs
from ..testport import ANY_AS, InjectOp, Result, encode
from ..vfio_user.protocol import Command as VuCommand
from .protocol import QmpServer
from .schema import Arg, Command, CommandTable, generic

if TYPE_CHECKING:
    from ..csf.mcu import CsfFirmware
    from ..csf.runtime import CsRuntime
    from ..device import MaliPciFunction
    from ..irqblock import IrqBlock
    from ..jm import JobControl, JobSlot
    from ..mmu.introspect import AsState
    from ..vfio_user import VfioUserServer

ACCESS_CHOICES = ("read", "write", "execute", "atomic")
#: x-mali-inject ``fault`` names -> test-port INJECT ops (docs/test-port.md)
INJECT_FAULTS = {"as-stuck": InjectOp.AS_STUCK, "as-wedged": InjectOp.AS_WEDGED,
                 "ping-drop": InjectOp.PING_DROP, "work-hang": InjectOp.WORK_HANG,
                 "fw-boot-fail": InjectOp.FW_BOOT_FAIL,
                 "disarm": InjectOp.DISARM}
MAX_PAGE_TABLE_RANGES = 65536
#: Descriptors ``x-query-mali-page-table`` reads at most (hostile tables cannot stall the loop).
MAX_PAGE_TABLE_DESCRIPTORS = 1 << 18
_MCU_STATUS = {int(s): s.name for s in McuStatus}


def _irq(block: IrqBlock) -> dict[str, Any]:
    return {"rawstat": block.rawstat, "mask": block.mask, "stat": block.stat,
            "level": block.level, "raised": block.raised_count}


def _fault_dict(f: MmuFault) -> dict[str, Any]:
    return {"exception-type": f.exception_type,
            "exception-name": exception_name(f.exception_type),
            "access": f.access.name.lower(), "bus": f.bus, "faultstatus": f.faultstatus}


class MaliIntrospection:
    """The query commands over one :class:`MaliPciFunction` (and its vfio-user server)."""

    def __init__(self, device: MaliPciFunction, vfio: VfioUserServer | None = None) -> None:
        self.device = device
        self.gpu = device.gpu
        self.mmu = device.gpu.mmu
        self.fw = device.firmware
        self.vfio = vfio

    # -- helpers ----------------------------------------------------------------------------
    def _firmware(self) -> CsfFirmware:
        fw = self.fw
        if fw is None:
            raise generic(f"{self.gpu.model.model_name} is a Job Manager GPU: it has no CSF "
                          "firmware (see query-mali-job-slots)")
        return fw

    def _jobs(self) -> JobControl:
        jobs = self.gpu.jobs
        if jobs is None:
            raise generic(f"{self.gpu.model.model_name} is a CSF GPU: it has no job slots "
                          "(see query-mali-csg)")
        return jobs

    def _as_slots(self) -> list[int]:
        return [n for n in range(mregs.MAX_AS) if self.mmu.as_present >> n & 1]

    def _check_as(self, as_nr: int) -> None:
        if not self.mmu.as_present >> as_nr & 1:
            raise generic(f"Address space {as_nr} is not present "
                          f"(AS_PRESENT {self.mmu.as_present:#x})")

    def _state(self, as_nr: int) -> AsState:
        """``as_state`` of a slot in AS_PRESENT (the QMP error for any other)."""
        self._check_as(as_nr)
        s = introspect.as_state(self.mmu, as_nr)
        assert s["present"] is True  # every AS_PRESENT slot has one
        return s

    def _in_ram(self, pa: int) -> bool | None:
        """Whether guest RAM backs ``pa``; None when the memory cannot tell (no region list)."""
        mem = self.mmu.mem
        if not isinstance(mem, SparseRam):
            return None
        return any(r.base <= pa < r.end for r in mem.regions)

    # -- query-mali-gpu ------------------------------------------------------------------------
    def _power(self) -> dict[str, dict[str, Any]]:
        """Per domain PRESENT and READY: GPU_CONTROL's, or PWR_CONTROL's on arch 14 (with
        who controls each domain)."""
        pwr = self.gpu.pwr
        if pwr is None:
            ctl = self.gpu.control
            return {dom: {"present": ctl.present[dom], "ready": ctl.ready[dom]}
                    for dom in ("l2", "shader", "tiler")}
        return {d.name.lower(): {"present": pwr.present[d], "ready": pwr.domain_ready(d),
                                 "delegated": bool(pwr.delegated >> d & 1)}
                for d in sorted(pwr.present)}

    def query_gpu(self) -> dict[str, Any]:
        m = self.gpu.model
        ctl = self.gpu.control
        status = self.gpu.mcu_status
        out: dict[str, Any] = {
            "model": m.key,
            "name": m.model_name,
            "family": m.family.name.lower(),
            "driver": m.driver,
            "arch": f"{m.arch_major}.{m.arch_minor}.{m.arch_rev}",
            "identity": identity_registers(m),
            "power": self._power(),
            "irq": {"gpu": _irq(self.gpu.gpu_irq), "job": _irq(self.gpu.job_irq),
                    "mmu": _irq(self.gpu.mmu_irq),
                    **({"pwr": _irq(self.gpu.pwr_irq)} if self.gpu.pwr is not None else {})},
            "fault": {"GPU_FAULTSTATUS": ctl.fault_status, "GPU_FAULTADDRESS": ctl.fault_addr},
            "latest-flush-id": self.gpu.latest_flush_id,
        }
        fw = self.fw
        if fw is not None:
            out["mcu"] = {
                "MCU_CONTROL": ctl.mcu_control,
                "MCU_STATUS": status,
                "status": _MCU_STATUS.get(status, f"UNKNOWN_{status}"),
                "running": fw.running,
                "halted": fw.halted,
                "boots": fw.boots,
            }
        return out

    # -- query-mali-mmu ------------------------------------------------------------------------
    def _as_info(self, n: int) -> dict[str, Any]:
        s = self._state(n)
        regs, act = s["registers"], s["active"]
        fs = regs["FAULTSTATUS"]
        return {
            "as": n,
            "registers": dict(regs),
            "active": {"TRANSTAB": act["TRANSTAB"], "MEMATTR": act["MEMATTR"],
                       "TRANSCFG": act["TRANSCFG"], "adrmode": act["adrmode"],
                       "va-bits": act["va_bits"], "pa-bits": act["pa_bits"],
                       "start-level": act["start_level"]},
            "enabled": act["adrmode"] in ("AARCH64_4K", "AARCH64_64K", "IDENTITY",
                                          "LEGACY_TABLE", "LEGACY_IDENTITY"),
            "locked": [{"base": b, "size": z} for b, z in s["locked"]],
            "fault": {"pending": s["fault_pending"], "FAULTSTATUS": fs,
                      "FAULTADDRESS": regs["FAULTADDRESS"],
                      "exception-type": fs & mregs.FAULTSTATUS_EXCEPTION_TYPE_MASK,
                      "exception-name": s["fault"]["exception"],
                      "access": s["fault"]["access"].lower()},
            "faults": {"seen": s["faults"], "latched": s["faults_latched"],
                       "dropped": s["faults_dropped"], "gpu-bus": s["bus_faults"]},
            "commands": dict(s["commands"]),
            # UPDATEs that gave the slot a page table other than the one it served last:
            # the slot was reused by another address space (panfrost's per-file AS LRU)
            "table-switches": s["table_switches"],
            "tlb": dict(s["tlb"]),
        }

    def query_mmu(self, as_: int | None = None) -> list[dict[str, Any]]:
        if as_ is not None:
            self._check_as(as_)
            return [self._as_info(as_)]
        return [self._as_info(n) for n in self._as_slots()]

    # -- x-query-mali-translate -----------------------------------------------------------------
    def translate(self, as_: int, va: int, access: str = "read") -> dict[str, Any]:
        self._check_as(as_)
        acc = Access[access.upper()]
        r = introspect.walk(self.mmu, as_, va, acc)
        out: dict[str, Any] = {"as": as_, "va": va, "access": access}
        if isinstance(r, Translation):
            memattr = self._state(as_)["active"]["MEMATTR"]
            out |= {"translated": True, "pa": r.pa, "readable": r.readable,
                    "writable": r.writable,
                    "executable": r.executable, "attr-index": r.attr_index,
                    "memattr": (memattr >> (8 * r.attr_index)) & 0xFF, "level": r.level}
            ram = self._in_ram(r.pa)
            if ram is not None:
                out["ram"] = ram  # False: the access itself would take a GPU_BUS_FAULT
        else:
            out |= {"translated": False, "fault": _fault_dict(r)}
        return out

    # -- x-query-mali-page-table ---------------------------------------------------------------
    def page_table(self, as_: int, max_ranges: int = 1024) -> dict[str, Any]:
        self._check_as(as_)
        maps = introspect.mappings(self.mmu, as_, MAX_PAGE_TABLE_DESCRIPTORS)
        act = self._state(as_)["active"]
        ranges = [{"va": m.va, "pa": m.pa, "size": m.size, "readable": m.attrs.readable,
                   "writable": m.attrs.writable,
                   "executable": m.attrs.executable, "attr-index": m.attrs.attr_index,
                   "access-flag": m.attrs.af} for m in maps[:max_ranges]]
        return {"as": as_, "adrmode": act["adrmode"], "TRANSTAB": act["TRANSTAB"],
                "ranges": ranges, "total-ranges": len(maps),
                "truncated": bool(maps.truncated) or len(maps) > max_ranges}

    # -- query-mali-csg ------------------------------------------------------------------------
    @staticmethod
    def _blocked_on(cs: CsRuntime) -> dict[str, Any] | None:
        if cs.fatal:
            return {"reason": "fatal"}
        if cs.fault_pending:
            return {"reason": "fault-ack"}
        if cs.stalled_as is not None:
            return {"reason": "mmu-fault", "as": cs.stalled_as}
        if cs.oom_pending:
            return {"reason": "tiler-oom"}
        if cs.heap_wait is not None:
            return {"reason": "tiler-heap", "address": cs.heap_wait}
        w = cs.wait
        if w is not None:
            return {"reason": "sync-wait", "address": w.ptr, "value": w.value,
                    "condition": w.cond, "64bit": w.is_64}
        return None

    def _stream(self, cs: CsRuntime) -> dict[str, Any]:
        st = cs.st
        insert = st.insert if st is not None else 0
        extract = st.extract if st is not None else 0
        blocked = self._blocked_on(cs)
        if blocked is not None:
            state = "blocked"
        elif cs.runnable:
            state = "running"
        else:
            state = "idle"
        out: dict[str, Any] = {"index": cs.index, "state": state, "priority": cs.priority,
               "doorbell": cs.doorbell, "ring-base": cs.ring_base, "ring-size": cs.ring_size,
               "insert": insert, "extract": extract, "blocked-on": blocked}
        if st is not None:
            out["cmd-ptr"] = st.cmd_ptr
        return out

    def query_csg(self) -> dict[str, Any]:
        fw = self._firmware()
        slots = []
        for g in fw.csgs:
            slots.append({
                "index": g.index, "active": g.active,
                "state": ("idle" if g.idle_reported else "running") if g.active else "inactive",
                "priority": g.priority, "as": g.as_nr, "endpoint-req": g.endpoint_req,
                "suspend-buf": g.suspend_buf,
                "streams": [self._stream(cs) for cs in g.streams if cs.started],
            })
        return {"running": fw.running, "halted": fw.halted, "slots": slots}

    # -- query-mali-job-slots -------------------------------------------------------------------
    @staticmethod
    def _slot(s: JobSlot) -> dict[str, Any]:
        from ..jm import regs as jregs

        queued = s.command_next == jregs.JsCommand.START
        return {
            "js": s.js,
            "state": "running" if s.active else "idle",
            "HEAD": s.head, "TAIL": s.tail, "AFFINITY": s.affinity, "CONFIG": s.config,
            "as": s.config & jregs.JS_CONFIG_AS_MASK,
            "job-chain-flag": bool(s.config & jregs.JS_CONFIG_JOB_CHAIN_FLAG),
            "STATUS": s.status, "status-name": exception_name(s.status),
            "next": ({"HEAD": s.head_next, "AFFINITY": s.affinity_next,
                      "CONFIG": s.config_next, "as": s.config_next & jregs.JS_CONFIG_AS_MASK,
                      "FLUSH_ID": s.flush_id_next} if queued else None),
            "jobs-done": s.jobs_done, "chains-done": s.chains_done,
            "chains-failed": s.chains_failed,
        }

    def query_job_slots(self) -> dict[str, Any]:
        jobs = self._jobs()
        return {
            "JS_PRESENT": jobs.js_present,
            "JOB_INT_JS_STATE": jobs.js_state(),
            "irq": _irq(jobs.irq),
            "slots": [self._slot(s) for s in jobs.slots if jobs.js_present >> s.js & 1],
        }

    # -- query-mali-stats ----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        g = self.gpu.stats
        hits = misses = latched = dropped = 0
        for n in self._as_slots():
            s = self._state(n)
            hits += s["tlb"]["hits"]
            misses += s["tlb"]["misses"]
            latched += s["faults_latched"]
            dropped += s["faults_dropped"]
        out: dict[str, Any] = {
            "mmio": {"reads": g["mmio_reads"], "writes": g["mmio_writes"],
                     "unknown-reads": g["unknown_reads"], "unknown-writes": g["unknown_writes"],
                     "bad-accesses": g["bad_accesses"]},
            "irqs": {line: g[f"irq_{line}"] for line in ("gpu", "job", "mmu")},
            "tlb": {"hits": hits, "misses": misses},
            "mmu-faults": {"latched": latched, "dropped": dropped},
            "gpu": {"resets": g["gpu_resets"], "cache-flushes": g["cache_flushes"],
                    "doorbells": g["doorbells"]},
        }
        fw, jobs = self.fw, self.gpu.jobs
        if fw is not None:
            fw_stats = fw.stats
            out["cs"] = {"instructions": fw_stats.get("cs_instructions", 0),
                         "jobs": fw_stats.get("jobs", 0), "fatal": fw_stats.get("cs_fatal", 0),
                         "faults": fw_stats.get("cs_fault", 0),
                         "tiler-oom": fw_stats.get("tiler_oom", 0),
                         "lock-stalls": fw_stats.get("lock_stalls", 0),
                         "slices": fw.sched.slices}
        if jobs is not None:
            out["job-slots"] = jobs.totals()
        v = self.vfio
        if v is not None:
            def cmd_name(c: int) -> str:
                try:
                    return VuCommand(c).name
                except ValueError:
                    return f"UNKNOWN_{c}"

            st = v.stats
            out["vfio-user"] = {
                "connections": st.connections,
                "messages": {cmd_name(c): n for c, n in sorted(st.commands.items())},
                "errors": {errno.errorcode.get(e, str(e)): n for e, n in sorted(st.errors.items())},
                "resets": st.resets,
            }
        out["process"] = _process_stats()
        return out

    # -- x-mali-inject (test port, not GPU introspection) -----------------------------------------
    def inject(self, fault: str, as_: int | None = None, count: int = 1) -> dict[str, Any]:
        """Arm a one-shot fault through the test port, as a TP_INJECT write would."""
        port = self.device.testport
        if as_ is not None:
            if fault not in ("as-stuck", "as-wedged"):
                raise generic(f"Parameter 'as' is not valid with fault '{fault}'")
            self._check_as(as_)
        result = port.inject(encode(INJECT_FAULTS[fault], ANY_AS if as_ is None else as_, count))
        if result != Result.OK:
            raise generic(f"Fault '{fault}' cannot be armed: {result.name}")
        return port.state()

    # -- table -------------------------------------------------------------------------------------
    def register(self, table: CommandTable) -> None:
        as_arg = Arg("as", "int", doc="address space slot", minimum=0,
                     maximum=mregs.MAX_AS - 1)
        table.register(Command("query-mali-gpu", self.query_gpu, (),
                               "Model, identity registers, power, MCU, IRQ blocks."))
        table.register(Command(
            "query-mali-mmu", self.query_mmu,
            (Arg("as", "int", optional=True, doc="only this AS", minimum=0,
                 maximum=mregs.MAX_AS - 1),),
            "Per address space: registers, latched config, fault state, TLB counters."))
        table.register(Command(
            "x-query-mali-translate", self.translate,
            (as_arg, Arg("va", "int", doc="GPU virtual address", minimum=0,
                         maximum=(1 << 64) - 1),
             Arg("access", "str", optional=True, doc="access type (default read)",
                 choices=ACCESS_CHOICES)),
            "AS + VA -> PA and attributes, or the fault; no TLB fill, no fault latched."))
        table.register(Command(
            "x-query-mali-page-table", self.page_table,
            (as_arg, Arg("max-ranges", "int", optional=True, doc="at most this many ranges",
                         minimum=1, maximum=MAX_PAGE_TABLE_RANGES)),
            "An AS's active page tables as coalesced ranges."))
        table.register(Command("query-mali-csg", self.query_csg, (),
                               "CSG slots and their command streams (CSF GPUs)."))
        table.register(Command("query-mali-job-slots", self.query_job_slots, (),
                               "Job slots: current and _NEXT chains, AS, status (JM GPUs)."))
        table.register(Command("query-mali-stats", self.stats, (),
                               "Counters: MMIO, IRQs, TLB, CS, vfio-user; the backend's RSS "
                               "and open fds."))
        table.register(Command(
            "x-mali-inject", self.inject,
            (Arg("fault", "str", doc="fault to arm (disarm: clear every armed fault)",
                 choices=tuple(INJECT_FAULTS)),
             Arg("as", "int", optional=True, doc="as-stuck/as-wedged: only this AS (default any)",
                 minimum=0, maximum=mregs.MAX_AS - 1),
             Arg("count", "int", optional=True, doc="how many times it fires (default 1)",
                 minimum=1, maximum=0xFFFF)),
            "Test port: arm a one-shot fault (AS_ACTIVE stuck, dropped PING ack, hung work, "
            "failed firmware boot); returns the port's state."))
        table.register(Command("x-query-mali-schema", table.describe, (),
                               "Every command with its arguments."))


def _process_stats() -> dict[str, int]:
    """The backend process's resident memory and open file descriptors (for soak runs)."""
    rss = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = -1
    return {"rss-kib": rss, "fds": fds}


class MaliEvents:
    """Wires the models' hooks to ``emit(event, data)``; :meth:`detach` restores them."""

    def __init__(self, device: MaliPciFunction,
                 emit: Callable[[str, dict[str, Any]], None]) -> None:
        self.device = device
        self.emit = emit
        gpu, mmu, fw = device.gpu, device.gpu.mmu, device.firmware
        self._prev = (mmu.on_fault, fw.on_cs_fatal if fw is not None else None, gpu.on_reset)
        p_fault, p_fatal, p_reset = self._prev

        def on_fault(f: MmuFault, latched: bool) -> None:
            if p_fault is not None:
                p_fault(f, latched)
            self.emit("MALI_MMU_FAULT", {"as": f.as_nr, "va": f.va, "latched": latched}
                      | _fault_dict(f))

        def on_cs_fatal(csg: int, cs: int, exc: int, data: int, info: int) -> None:
            if p_fatal is not None:
                p_fatal(csg, cs, exc, data, info)
            self.emit("MALI_CS_FATAL", {"csg": csg, "cs": cs, "exception-type": exc,
                                        "exception-name": exception_name(exc),
                                        "exception-data": data, "info": info})

        def on_reset(kind: str) -> None:
            if p_reset is not None:
                p_reset(kind)
            self.emit("MALI_GPU_RESET", {"kind": kind})

        mmu.on_fault = on_fault
        if fw is not None:
            fw.on_cs_fatal = on_cs_fatal
        gpu.on_reset = on_reset

    def detach(self) -> None:
        gpu, mmu, fw = self.device.gpu, self.device.gpu.mmu, self.device.firmware
        mmu.on_fault, p_fatal, gpu.on_reset = self._prev
        if fw is not None:
            fw.on_cs_fatal = p_fatal


def version() -> dict[str, Any]:
    """query-version / greeting: qemu-panthor's version in QEMU's VersionInfo shape."""
    nums = [int(x) if x.isdigit() else 0 for x in __version__.split(".")[:3]]
    nums += [0] * (3 - len(nums))
    return {"qemu": {"major": nums[0], "minor": nums[1], "micro": nums[2]},
            "package": f"qemu-panthor {__version__}"}


def build_server(
    device: MaliPciFunction, vfio: VfioUserServer | None = None
) -> tuple[QmpServer, MaliEvents]:
    """A QMP server offering the Mali commands, and its event wiring (not yet listening)."""
    table = CommandTable()
    MaliIntrospection(device, vfio).register(table)
    server = QmpServer(table, version=version())
    return server, MaliEvents(device, server.emit)


__all__ = ["MaliEvents", "MaliIntrospection", "build_server", "version"]

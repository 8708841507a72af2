"""The qemu-panthor test port: host- and guest-armed fault injection (docs/test-port.md).

Not part of the Mali GPU the driver sees: a small register block in BAR2 (beside the MSI-X
table and PBA) and the QMP command ``x-mali-inject`` arm one-shot faults that a correct GPU
never produces, so tests can exercise the driver's error paths:

* ``AS_STUCK``: the next N AS_COMMAND writes (to one AS or any) hang. The command is not
  executed and AS_STATUS.AS_ACTIVE of that AS reads 1 for :data:`POLL_READS` reads, one whole
  driver poll (panthor polls every 10 us for 100 ms: 10001 or 10002 reads depending on the
  kernel's iopoll), so that poll gives up ("AS_ACTIVE bit stuck", a reset is scheduled) and
  the next command finds the MMU idle again. A GPU reset also ends the hang.
* ``AS_WEDGED``: the same, but AS_ACTIVE stays 1 until the next GPU reset (GPU_CMD
  SOFT/HARD_RESET or a device reset): every later poll of that AS times out too.
* ``PING_DROP``: the firmware does not acknowledge the next GLB PING request until the next
  GPU reset (panthor: "FW ping timeout, scheduling a reset").
* ``WORK_HANG``: the next N work items (RUN_*/FINISH_*) never complete, like a shader stuck
  in a loop: the stream waits on them, and the firmware's progress timer raises CSG
  PROGRESS_TIMER_EVENT (panthor: "CSG slot N progress timeout"). A GPU reset ends them.
* ``FW_BOOT_FAIL``: the next N firmware boots (MCU_CONTROL enable) fail: MCU_STATUS goes to
  FATAL with no boot interrupt (panthor: "Failed to boot MCU (status=fatal)"; after a reset,
  "Failed to boot MCU after reset, making device unusable" and the device is unplugged).

The models carry only tiny hooks (``Mmu.as_cmd_hook``, ``CsfFirmware.ping_hook``), ``None``
until something is armed, so the normal paths are untouched.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .csf.mcu import CsfFirmware
    from .gpu.device import MaliGpu
    from .timeline import Timeline

log = logging.getLogger(__name__)

#: Where the port lives in BAR2 (the MSI-X table is at 0x0, the PBA at 0x800).
PORT_BASE = 0xF00
PORT_SIZE = 0x100
#: TP_MAGIC: "QPTP" read as a little-endian u32.
MAGIC = 0x50545051
VERSION = 1
#: INJECT code field: AS number meaning "any AS".
ANY_AS = 0xFF
#: AS_STATUS reads an AS_STUCK hang lasts: one full driver poll. panthor's AS_ACTIVE wait is
#: read_poll_timeout_atomic(10 us, 100 ms), which counts iterations, not time: 10002 reads
#: before 6.17's iopoll rewrite, 10001 after. With 10002 a newer kernel's next poll sees one
#: more ACTIVE read and then idle, which is no timeout.
POLL_READS = 10002


class InjectOp(IntEnum):
    """INJECT bits [7:0]."""

    DISARM = 0
    AS_STUCK = 1
    PING_DROP = 2
    AS_WEDGED = 3
    WORK_HANG = 4
    FW_BOOT_FAIL = 5


#: the firmware faults and the counter (an attribute of FaultInjector) each one arms
_FIRMWARE_COUNTERS = {InjectOp.PING_DROP: "ping_armed", InjectOp.WORK_HANG: "work_armed",
                      InjectOp.FW_BOOT_FAIL: "boot_armed"}


class Result(IntEnum):
    """TP_RESULT: outcome of the last INJECT write."""

    OK = 0
    BAD_OP = 1
    BAD_AS = 2


@dataclass(frozen=True)
class PortReg:
    """One 32-bit port register: offset relative to PORT_BASE, writable or read-only."""

    name: str
    offset: int
    writable: bool = False
    doc: str = ""


REGISTERS: tuple[PortReg, ...] = (
    PortReg("TP_MAGIC", 0x00, doc="0x50545051 ('QPTP')"),
    PortReg("TP_VERSION", 0x04, doc="port version (1)"),
    PortReg("TP_INJECT", 0x08, writable=True,
            doc="write: arm; [7:0] op (0 disarm, 1 AS_STUCK, 2 PING_DROP, 3 AS_WEDGED, "
                "4 WORK_HANG, 5 FW_BOOT_FAIL), "
                "[15:8] AS (0xFF any), [31:16] count (0 = 1); "
                "read: last code accepted"),
    PortReg("TP_RESULT", 0x0C, doc="last INJECT write: 0 ok, 1 bad op, 2 bad AS"),
    PortReg("TP_FIRED", 0x10, doc="injected faults fired since power-on"),
    PortReg("TP_AS_ARMED", 0x14, doc="AS commands still to hang"),
    PortReg("TP_AS_ACTIVE", 0x18, doc="bitmask of AS slots whose AS_ACTIVE is stuck"),
    PortReg("TP_PING_ARMED", 0x1C, doc="PING requests still to drop"),
    PortReg("TP_GPU_RESETS", 0x20, doc="GPU_CMD SOFT/HARD_RESET commands since power-on"),
    PortReg("TP_WORK_ARMED", 0x24, doc="work items still to hang"),
    PortReg("TP_LOCK_STALLS", 0x28,
            doc="CS accesses that found their region locked (AS_COMMAND LOCK) and stalled"),
    PortReg("TP_MARK", 0x2C, writable=True,
            doc="a guest timestamp mark: the value written appears on --timeline's Guest track"),
    PortReg("TP_BOOT_ARMED", 0x30, doc="firmware boots still to fail (FW_BOOT_FAIL)"),
)
REG_BY_OFFSET = {r.offset: r for r in REGISTERS}
REG = {r.name: r.offset for r in REGISTERS}


def encode(op: InjectOp | int, as_nr: int = ANY_AS, count: int = 1) -> int:
    """The TP_INJECT value arming ``op``."""
    return (int(op) & 0xFF) | (as_nr & 0xFF) << 8 | (count & 0xFFFF) << 16


class FaultInjector:
    """Armed faults and their counters, hooked into one MaliGpu and its firmware model."""

    def __init__(self, gpu: MaliGpu, firmware: CsfFirmware | None = None) -> None:
        self.gpu = gpu
        self.mmu = gpu.mmu
        self.firmware = firmware
        self.last_code = 0
        self.result = Result.OK
        self.fired = 0
        self.as_filter = ANY_AS
        self.as_armed = 0
        self.as_hold = POLL_READS
        self.ping_armed = 0
        self.ping_holding = False
        self.work_armed = 0
        self.boot_armed = 0
        self.fired_log: deque[str] = deque(maxlen=64)
        #: --timeline: guest marks (TP_MARK) go here (None: off; the writes are ignored)
        self.tl: Timeline | None = None
        self.marks = 0
        prev = gpu.on_reset

        def on_reset(kind: str) -> None:
            self._on_reset()
            if prev is not None:
                prev(kind)

        gpu.on_reset = on_reset

    # -- arming ---------------------------------------------------------------------------------
    def inject(self, code: int) -> Result:
        """Decode and apply a TP_INJECT value (also what ``x-mali-inject`` uses)."""
        code &= 0xFFFF_FFFF
        op, as_nr, count = code & 0xFF, code >> 8 & 0xFF, max(code >> 16, 1)
        if op == InjectOp.DISARM:
            self.as_armed = self.ping_armed = self.work_armed = self.boot_armed = 0
            self._sync_hooks()
        elif op in (InjectOp.AS_STUCK, InjectOp.AS_WEDGED):
            if as_nr != ANY_AS and not self.mmu.as_present >> as_nr & 1:
                return self._result(Result.BAD_AS)
            self.as_filter, self.as_armed = as_nr, count
            self.as_hold = POLL_READS if op == InjectOp.AS_STUCK else -1
            self._sync_hooks()
        elif op in _FIRMWARE_COUNTERS:
            if self.firmware is None:  # a JM part has no firmware to make fail
                return self._result(Result.BAD_OP)
            setattr(self, _FIRMWARE_COUNTERS[InjectOp(op)], count)
            self._sync_hooks()
        else:
            return self._result(Result.BAD_OP)
        self.last_code = code
        log.info("test port: armed %#x", code)
        return self._result(Result.OK)

    def _result(self, r: Result) -> Result:
        self.result = r
        return r

    def _sync_hooks(self) -> None:
        """Install the model hooks only while something is armed or held."""
        self.mmu.as_cmd_hook = self._as_cmd if self.as_armed else None
        if self.firmware is not None:
            armed = self.ping_armed or self.ping_holding
            self.firmware.ping_hook = self._ping if armed else None
            self.firmware.work_hang_hook = self._work if self.work_armed else None
            self.firmware.boot_hook = self._boot if self.boot_armed else None

    # -- hooks ----------------------------------------------------------------------------------
    def _as_cmd(self, as_nr: int, cmd: int) -> int:
        """Mmu: an AS_COMMAND is being written; non-zero = it hangs for that many AS_STATUS
        reads (-1: until reset)."""
        if not self.as_armed or self.as_filter not in (ANY_AS, as_nr):
            return 0
        self.as_armed -= 1
        self.fired += 1
        self.fired_log.append(f"AS{as_nr} command {cmd} stuck")
        log.warning("test port: AS%d command %d hangs (AS_ACTIVE stuck for %s)", as_nr, cmd,
                    "until reset" if self.as_hold < 0 else f"{self.as_hold} reads")
        self._sync_hooks()
        return self.as_hold

    def _ping(self) -> bool:
        """Firmware: a GLB PING is pending; True = do not acknowledge it."""
        if self.ping_holding:
            return True
        if not self.ping_armed:
            return False
        self.ping_armed -= 1
        self.ping_holding = True
        self.fired += 1
        self.fired_log.append("GLB PING not acknowledged")
        log.warning("test port: GLB PING not acknowledged (until reset)")
        self._sync_hooks()
        return True

    def _work(self) -> bool:
        """Firmware: a work item is being issued; True = it never completes."""
        return self._fire("work_armed", "work item hangs")

    def _boot(self) -> bool:
        """Firmware: MCU_CONTROL asks for a boot; True = it fails (MCU_STATUS FATAL)."""
        return self._fire("boot_armed", "firmware boot failed")

    def _fire(self, armed: str, what: str) -> bool:
        """Take one shot of the counter ``armed`` (an attribute), if any is left."""
        left = getattr(self, armed)
        if not left:
            return False
        setattr(self, armed, left - 1)
        self.fired += 1
        self.fired_log.append(what)
        log.warning("test port: %s", what)
        self._sync_hooks()
        return True

    def _on_reset(self) -> None:
        """A GPU or device reset ends held faults (the Mmu clears AS_ACTIVE itself)."""
        if self.ping_holding:
            self.ping_holding = False
            self._sync_hooks()

    # -- registers ------------------------------------------------------------------------------
    def read32(self, off: int) -> int:
        """Port register at ``off`` (relative to PORT_BASE); unknown offsets read 0."""
        name = REG_BY_OFFSET[off].name if off in REG_BY_OFFSET else ""
        values = {
            "TP_MAGIC": MAGIC,
            "TP_VERSION": VERSION,
            "TP_INJECT": self.last_code,
            "TP_RESULT": int(self.result),
            "TP_FIRED": self.fired,
            "TP_AS_ARMED": self.as_armed,
            "TP_AS_ACTIVE": self.mmu.as_active,
            "TP_PING_ARMED": self.ping_armed,
            "TP_GPU_RESETS": self.gpu.stats["gpu_resets"],
            "TP_WORK_ARMED": self.work_armed,
            "TP_LOCK_STALLS": (self.firmware.stats["lock_stalls"]
                               if self.firmware is not None else 0),
            "TP_BOOT_ARMED": self.boot_armed,
        }
        return values.get(name, 0) & 0xFFFF_FFFF

    def write32(self, off: int, value: int) -> None:
        if off == REG["TP_INJECT"]:
            self.inject(value)
        elif off == REG["TP_MARK"]:
            self.marks += 1
            if self.tl is not None:
                self.tl.instant("Guest", f"mark {value:#x}", value=value)

    def state(self) -> dict[str, int | list[str]]:
        """Introspection (``x-mali-inject`` returns it)."""
        return {"fired": self.fired, "as-armed": self.as_armed,
                "as-filter": self.as_filter, "as-active": self.mmu.as_active,
                "ping-armed": self.ping_armed, "ping-holding": self.ping_holding,
                "work-armed": self.work_armed, "boot-armed": self.boot_armed,
                "gpu-resets": self.gpu.stats["gpu_resets"], "fired-log": list(self.fired_log)}


__all__ = ["ANY_AS", "MAGIC", "POLL_READS", "PORT_BASE", "PORT_SIZE", "REGISTERS",
           "FaultInjector", "InjectOp", "PortReg", "Result", "encode"]

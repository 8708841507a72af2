"""CSG and CS slot requests: start, resume, suspend, terminate, status update, doorbells.

panthor drives each CSG slot through CSG_REQ/CSG_ACK (STATE, ENDPOINT_CONFIG, STATUS_UPDATE)
and each CS through CS_REQ/CS_ACK (STATE, fault acks) plus its ring's insert pointer
(reference §7.3-§7.5). A suspended group's streams are saved into the suspend buffer the host
allocated, in our firmware's own record format below, and restored on RESUME, possibly in
another slot.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..exceptions import ExceptionType
from . import iface as I
from .cs_state import CsExecState
from .events import CsfEvents
from .runtime import CsgRuntime, CsRuntime, FwRuntime
from .section import SharedSection, ev, evlog

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger("qemu_panthor.csf")

# Suspend-buffer record (our firmware's private format; lives in guest memory between
# SUSPEND and RESUME): header then one record per started CS.
SUSPEND_MAGIC = 0x53435051  # "QPCS"
SUSPEND_VERSION = 1
_SUSP_HDR = struct.Struct("<IHHI")  # magic, version, cs count, total bytes
_SUSP_CS = struct.Struct("<HHI")  # cs index, flags, blob length
_SUSP_FLAG_FAULT_PENDING = 1
_SUSP_FLAG_FATAL = 2  # the CS raised CS_FATAL: it stays halted after RESUME
_U32 = struct.Struct("<I")

#: A saved stream: (flags, serialised CsExecState).
Record = tuple[int, bytes]


_CSG_STATES = ("TERMINATE", "START", "SUSPEND", "RESUME")


def _csg_req_name(req: int, ack: int) -> str:
    """--timeline: what a CSG request asks ("START", "STATUS_UPDATE", ...)."""
    pend = req ^ ack
    names = []
    if pend & I.CSG_STATE_MASK:
        st = req & I.CSG_STATE_MASK
        names.append(_CSG_STATES[st] if st < len(_CSG_STATES) else f"STATE {st}")
    if pend & I.CSG_ENDPOINT_CONFIG:
        names.append("ENDPOINT_CONFIG")
    if pend & I.CSG_STATUS_UPDATE:
        names.append("STATUS_UPDATE")
    return " ".join(names) or "req"


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


class CsgSlots:
    """Applies the host's CSG and CS requests to the firmware's slots."""

    def __init__(self, section: SharedSection, rt: FwRuntime, events: CsfEvents, *,
                 kick: Callable[[], None]) -> None:
        self.section = section
        self.bus = section.bus
        self.config = section.config
        self.rt = rt
        self.events = events
        self._kick = kick
        #: --timeline: CSG/CS requests and jobs entering rings (None: off)
        self.tl: Timeline | None = None

    def new_state(self) -> CsExecState:
        return CsExecState(self.config.reg_count, self.config.scoreboards)

    # -- CSG ----------------------------------------------------------------------------------
    def doorbells(self, pending: int) -> None:
        """GLB doorbell_req bits ``pending`` were rung: process those CSG slots."""
        for i in _bits(pending):
            self.process_csg(i)

    def process_csg(self, i: int) -> None:
        csg = self.rt.csgs[i]
        s = self.section
        inp = self.bus.read(s.csg_in(i), I.CSG_INPUT.size, f"CSG{i} input")
        out_va = s.csg_out(i)
        out = self.bus.read(out_va, I.CSG_OUTPUT.size, f"CSG{i} output")
        c_in, c_out = I.CSG_INPUT, I.CSG_OUTPUT
        req, ack = c_in.get(inp, "req"), c_out.get(out, "ack")
        new_ack = ack
        if self.tl is not None and (req ^ ack) & I.CSG_REQ_MASK:
            self.tl.instant(f"CSG{i}", _csg_req_name(req, ack), req=req, ack=ack)
        if evlog.isEnabledFor(logging.DEBUG):
            ev("CSG%d req=%#x ack=%#x pending=%#x doorbell_req=%#x", i, req, ack, req ^ ack,
               c_in.get(inp, "doorbell_req") ^ c_out.get(out, "doorbell_ack"))
        if (req ^ ack) & I.CSG_ENDPOINT_CONFIG:
            ep = c_in.get(inp, "endpoint_req")
            csg.endpoint_req = ep
            csg.priority = (ep >> I.CSG_EP_PRIORITY_SHIFT) & 0xF
            self.bus.write(out_va + c_out.off["status_endpoint_current"],
                           _U32.pack(ep) + _U32.pack(ep))
            new_ack ^= I.CSG_ENDPOINT_CONFIG
        st_req, st_ack = req & I.CSG_STATE_MASK, ack & I.CSG_STATE_MASK
        if st_req != st_ack:
            done = True
            if st_req == I.CSG_STATE_START:
                self._start(csg, inp, resume=False)
            elif st_req == I.CSG_STATE_RESUME:
                self._start(csg, inp, resume=True)
            elif st_req == I.CSG_STATE_SUSPEND:
                csg.suspend_buf = c_in.get(inp, "suspend_buf")  # where the host wants it now
                self._suspend(csg)
            elif st_req == I.CSG_STATE_TERMINATE:
                csg.reset()
                log.debug("CSG%d terminated", csg.index)
            else:
                log.warning("CSG%d: invalid STATE request %d: not acknowledged", i, st_req)
                done = False
            if done:
                new_ack = (new_ack & ~I.CSG_STATE_MASK) | st_req
        if (req ^ ack) & I.CSG_STATUS_UPDATE:
            self._refresh_status(csg)
            new_ack ^= I.CSG_STATUS_UPDATE
        if new_ack != ack:
            # applied as a change to what CSG_ACK holds now: starting or suspending streams
            # may have raised events in it meanwhile, which a write of the stale word would undo
            self.bus.write32(out_va, self.bus.read32(out_va) ^ (new_ack ^ ack))
            s.irq(1 << i)
        db_req, db_ack = c_in.get(inp, "doorbell_req"), c_out.get(out, "doorbell_ack")
        db_pend = (db_req ^ db_ack) & ((1 << self.config.stream_num) - 1)
        if db_pend:
            self.bus.write32(out_va + c_out.off["doorbell_ack"], db_ack ^ db_pend)
            if csg.active:
                for j in _bits(db_pend):
                    self._cs_update(csg, csg.streams[j])
        if csg.active:
            self.events.update_idle(csg)
            self._kick()

    def _start(self, csg: CsgRuntime, inp: bytes, *, resume: bool) -> None:
        c_in = I.CSG_INPUT
        csg.reset()
        csg.active = True
        csg.as_nr = c_in.get(inp, "config")
        csg.suspend_buf = c_in.get(inp, "suspend_buf")
        ep = c_in.get(inp, "endpoint_req")
        csg.endpoint_req = ep
        csg.priority = (ep >> I.CSG_EP_PRIORITY_SHIFT) & 0xF
        records = self._load_suspend(csg) if resume else {}
        self.bus.write32(self.section.csg_out(csg.index) + I.CSG_OUTPUT.off["status_state"], 0)
        for cs in csg.streams:
            self._cs_update(csg, cs, record=records.get(cs.index), fresh=True)
        log.debug("CSG%d %s on AS%d", csg.index, "resumed" if resume else "started", csg.as_nr)

    def _suspend(self, csg: CsgRuntime) -> None:
        """Stop the group and save every started CS into the suspend buffer (guest memory)."""
        self._refresh_status(csg)
        recs: list[bytes] = []
        budget = self.config.suspend_size - _SUSP_HDR.size
        for cs in csg.streams:
            if not cs.started or cs.st is None:
                continue
            try:
                blob = bytes(cs.st.serialise(self.events.clock()))
            except Exception:  # a broken interpreter state must not crash the MCU
                log.exception("CSG%d CS%d: cannot serialise state; it restarts from its "
                              "ring extract on resume", csg.index, cs.index)
                continue
            flags = ((_SUSP_FLAG_FAULT_PENDING if cs.fault_pending else 0)
                     | (_SUSP_FLAG_FATAL if cs.fatal else 0))
            rec = _SUSP_CS.pack(cs.index, flags, len(blob)) + blob
            if len(rec) > budget:
                log.error("CSG%d CS%d: state (%d bytes) exceeds the suspend buffer; it "
                          "restarts from its ring extract on resume", csg.index, cs.index,
                          len(blob))
                continue
            budget -= len(rec)
            recs.append(rec)
        body = b"".join(recs)
        hdr = _SUSP_HDR.pack(SUSPEND_MAGIC, SUSPEND_VERSION, len(recs), _SUSP_HDR.size + len(body))
        if csg.suspend_buf:
            self.bus.write(csg.suspend_buf, hdr + body, f"CSG{csg.index} suspend buffer")
        else:
            log.warning("CSG%d suspended without a suspend buffer: state lost", csg.index)
        csg.reset()
        log.debug("CSG%d suspended (%d CS records, %d bytes)", csg.index, len(recs),
                  len(hdr) + len(body))

    def _load_suspend(self, csg: CsgRuntime) -> dict[int, Record]:
        """Read back the records written at SUSPEND (from guest memory, via AS0)."""
        if not csg.suspend_buf:
            return {}
        size = self.config.suspend_size
        raw = self.bus.read(csg.suspend_buf, size, f"CSG{csg.index} suspend buffer")
        magic, version, count, total = _SUSP_HDR.unpack_from(raw, 0)
        if magic != SUSPEND_MAGIC or version != SUSPEND_VERSION or total > size:
            log.warning("CSG%d: suspend buffer holds no valid record (magic %#x); streams "
                        "restart from their ring extract", csg.index, magic)
            return {}
        out: dict[int, Record] = {}
        off = _SUSP_HDR.size
        for _ in range(count):
            if off + _SUSP_CS.size > total:
                break
            idx, flags, n = _SUSP_CS.unpack_from(raw, off)
            off += _SUSP_CS.size
            if off + n > total:
                break
            if idx < self.config.stream_num:
                out[idx] = (flags, raw[off:off + n])
            off += n
        return out

    def _refresh_status(self, csg: CsgRuntime) -> None:
        """STATUS_UPDATE: bring every CS status_* field and ring extract up to date."""
        for cs in csg.streams:
            if cs.started and cs.st is not None:
                self.events.write_cs_status(cs)

    # -- CS -----------------------------------------------------------------------------------
    def _cs_update(self, csg: CsgRuntime, cs: CsRuntime, *,
                   record: Record | None = None, fresh: bool = False) -> None:
        """Apply CS_REQ (STATE, config bits, fault acks) and re-read the ring insert pointer."""
        i, j = csg.index, cs.index
        s = self.section
        inp = self.bus.read(s.cs_in(i, j), I.CS_INPUT.size, f"CS{i}.{j} input")
        out_va = s.cs_out(i, j)
        ack = self.bus.read32(out_va)
        s_in = I.CS_INPUT
        req = s_in.get(inp, "req")
        cfg = s_in.get(inp, "config")
        cs.priority = cfg & I.CS_CONFIG_PRIORITY_MASK
        cs.doorbell = (cfg & I.CS_CONFIG_DOORBELL_MASK) >> I.CS_CONFIG_DOORBELL_SHIFT
        want = (req & I.CS_STATE_MASK) == I.CS_STATE_START
        if want and (fresh or not cs.started):
            self._cs_start(csg, cs, inp, record)
        elif not want and cs.started:
            cs.reset()
        if cs.fault_pending and not (req ^ ack) & I.CS_FAULT:
            cs.fault_pending = False  # host acknowledged the FAULT and rang us: resume
            cs.runnable = True
        if cs.oom_pending and not (req ^ ack) & I.CS_TILER_OOM:
            # the host answered TILER_OOM: heap_start..heap_end is a chunk range to link
            # into the heap (0: it has none); the draw is retried (csf/tiler_heap.py)
            cs.oom_pending = False
            if cs.st is not None:
                start, end = s_in.get(inp, "heap_start"), s_in.get(inp, "heap_end")
                cs.st.heap_reply = (start, end or start) if start else (0, 0)
                cs.st.oom_null = not start
            cs.runnable = True
        new_ack = (ack & ~I.CS_REQ_MASK) | (req & I.CS_REQ_MASK)
        if self.tl is not None and (req ^ ack) & (I.CS_REQ_MASK | I.CS_EVT_MASK):
            self.tl.instant(f"CS{i}.{j}", "req", req=req, ack=ack)
        if fresh:
            # a (re)started stream: events signalled before a suspend count as acknowledged
            # (kbase); a TILER_OOM still unanswered is raised again when the draw retries
            new_ack = (new_ack & ~I.CS_TILER_OOM) | (req & I.CS_TILER_OOM)
        if new_ack != ack:
            # as a change to CS_ACK as it is now: a stream that failed at start raised CS_FATAL
            # in it meanwhile, which a write of the word read before would lose
            self.bus.write32(out_va, self.bus.read32(out_va) ^ (new_ack ^ ack))
        if cs.started and cs.st is not None:
            self._refresh_insert(cs)

    def _cs_start(self, csg: CsgRuntime, cs: CsRuntime, inp: bytes,
                  record: Record | None) -> None:
        s_in = I.CS_INPUT
        cs.reset()
        cs.ring_base = s_in.get(inp, "ringbuf_base")
        cs.ring_size = s_in.get(inp, "ringbuf_size")
        cs.input_va = s_in.get(inp, "ringbuf_input")
        cs.output_va = s_in.get(inp, "ringbuf_output")
        st = None
        if record is not None:
            flags, blob = record
            try:
                st = CsExecState.deserialise(blob, self.events.clock())
            except ValueError as e:
                log.warning("CSG%d CS%d: saved state unreadable (%s); restarting from the "
                            "ring extract", csg.index, cs.index, e)
                st = None
            else:
                cs.fault_pending = bool(flags & _SUSP_FLAG_FAULT_PENDING)
                cs.fatal = bool(flags & _SUSP_FLAG_FATAL)
        if st is None:
            st = self.new_state()
            st.extract = self.bus.read64(cs.output_va)
        st.ring_base = cs.ring_base
        st.ring_size = cs.ring_size
        st.as_nr = csg.as_nr
        cs.st = st
        cs.started = True
        cs.written_extract = -1
        if cs.ring_size == 0 or cs.ring_size & (cs.ring_size - 1):
            # a configuration the stream cannot start with: CS_CONFIG_FAULT, as the
            # interpreter reports a bad ring met later (CS_UNRECOVERABLE would make panthor
            # reset the whole GPU for one bad queue)
            self.events.report_cs_fatal(cs, ExceptionType.CS_CONFIG_FAULT, 0, cs.ring_size,
                                        why=f"bad ringbuf_size {cs.ring_size:#x}")

    def _refresh_insert(self, cs: CsRuntime) -> None:
        st = cs.st
        if st is None:
            return
        insert = self.bus.read64(cs.input_va)
        if self.tl is not None and insert != st.insert:
            self.tl.job_submitted(f"CS{cs.csg}.{cs.index} jobs", insert)
        st.insert = insert
        if (not cs.fatal and not cs.fault_pending and cs.stalled_as is None and cs.wait is None
                and not cs.oom_pending and cs.heap_wait is None):
            cs.runnable = cs.runnable or st.insert != st.extract
        # A CS blocked on a sync wait stays blocked: waits are re-evaluated separately.

    def cs_doorbell(self, d: int) -> None:
        """CS doorbell d: every started CS whose CS_CONFIG.doorbell == d re-reads insert."""
        for csg in self.rt.csgs:
            if not csg.active:
                continue
            hit = False
            for cs in csg.streams:
                if cs.started and cs.doorbell == d and cs.st is not None:
                    self._refresh_insert(cs)
                    hit = True
            if hit:
                self.events.update_idle(csg)
        self._kick()

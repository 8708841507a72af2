"""JOB_CONTROL of a Job Manager Mali: job slots that walk job chains through the shared MMU.

Models (docs/jm.md; facts in docs/reference/mali-g52-jm.md section 3):
* per slot a current job (HEAD, CONFIG, STATUS, TAIL) and a double-buffered _NEXT set; the
  driver fills HEAD/AFFINITY/CONFIG/FLUSH_ID_NEXT and writes COMMAND_NEXT START; an idle slot
  takes the _NEXT set at once (COMMAND_NEXT reads 0 again), a busy one when its chain ends
  without error, with no acknowledgement (one DONE interrupt may then cover two chains);
* a chain runs job by job from HEAD through each header's Next pointer in the AS named by
  CONFIG[3:0]: NULL and CACHE_FLUSH do nothing the model can see, WRITE_VALUE stores its value,
  the shader job types complete without executing shaders; each job's header gets exception
  status DONE (1) unless CONFIG disables descriptor write-back;
* a chain that completes raises JOB_INT DONE(js); one that fails raises FAILED(js) with the
  code in JS_STATUS, HEAD at the failing job and the job's header holding the code and the
  fault pointer; the slot then stays stopped and the _NEXT set waits for a new START;
* COMMAND SOFT_STOP stops a chain between jobs (STOPPED, TAIL = the job to resume at),
  HARD_STOP ends it (TERMINATED); the _0/_1 forms act only on a chain whose JOB_CHAIN_FLAG
  matches; JOB_INT_JS_STATE shows which slots run and which hold a _NEXT job;
* an MMU fault stalls the job (the MMU latches it and raises MMU_INT): an AS command that
  restarts stalled transactions (UPDATE, UNLOCK, FLUSH_PT, FLUSH_MEM) retries the job if
  the AS still translates (the driver mapped the page: a heap BO growing on fault), and ends
  it with JOB_BUS_FAULT if the driver disabled the AS (panfrost's answer to an unhandled
  fault; the header is then not written, the AS being gone); a hard stop ends a stalled job.

A chain is executed in slices of ``budget`` jobs on the event loop (a job loop never ends by
itself, as on hardware: the driver's timeout soft-stops it), so MMIO replies are never held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..eventloop import running_loop
from ..exceptions import ExceptionType
from ..irqblock import IRQ_BLOCK_SIZE, IrqBlock
from ..mmu import Mmu, MmuFault
from ..mmu.types import AsBinding
from ..register import RegAccess
from . import regs as R

log = logging.getLogger(__name__)

_M32 = 0xFFFF_FFFF
_DONE = int(ExceptionType.DONE)
_STOPPED = int(ExceptionType.STOPPED)
_TERMINATED = int(ExceptionType.TERMINATED)
_JOB_CONFIG_FAULT = int(ExceptionType.JOB_CONFIG_FAULT)
_JOB_BUS_FAULT = int(ExceptionType.JOB_BUS_FAULT)
#: JS_STATUS while a chain runs (kbase BASE_JD_EVENT_ACTIVE; 0 is NOT_STARTED)
_ACTIVE = int(ExceptionType.ACTIVE)
#: jobs a slot runs before yielding to the event loop
SLICE_JOBS = 64
#: slot register word offset -> (register, HI word); JobSlot's fields are the names in lower case
_SLOT_WORDS = {w: (reg, i == 1) for reg in R.JS_REGS for i, w in enumerate(reg.words())}


@dataclass
class JobSlot:
    """One job slot's registers and chain state."""

    js: int
    head: int = 0
    tail: int = 0
    affinity: int = 0
    config: int = 0
    xaffinity: int = 0
    status: int = 0
    head_next: int = 0
    affinity_next: int = 0
    config_next: int = 0
    command_next: int = 0
    flush_id_next: int = 0
    #: a chain is loaded and not ended (JS_STATE bit js)
    active: bool = False
    #: the chain's first job is still to be fetched (even from VA 0: START has no "empty")
    first: bool = False
    #: the stop COMMAND waiting to act at the next job boundary (0: none)
    stop: int = 0
    #: the MMU fault the job at TAIL is stalled on, and the AS binding when it stalled
    stalled: MmuFault | None = None
    stalled_binding: AsBinding | None = None
    jobs_done: int = 0
    chains_done: int = 0
    chains_failed: int = 0


class JobControl:
    """The JOB_CONTROL register block (relative offsets) and its slots."""

    def __init__(self, mmu: Mmu, irq: IrqBlock, *, js_present: int,
                 timestamp: Callable[[], int] = lambda: 0,
                 cycle_count: Callable[[], int] = lambda: 0,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.mmu = mmu
        self.irq = irq
        self.js_present = js_present & ((1 << R.MAX_JS) - 1)
        self.slots = [JobSlot(js) for js in range(R.MAX_JS)]
        self.timestamp = timestamp
        self.cycle_count = cycle_count
        self._loop = loop
        self._task: asyncio.Task[None] | None = None
        self.stats = {"unknown_reads": 0, "unknown_writes": 0, "mmu_stalls": 0}

    # -- registers ------------------------------------------------------------------------
    def _slot(self, off: int) -> tuple[JobSlot, int] | None:
        js, reg = divmod(off - R.JS_BASE, R.JS_STRIDE)
        if off < R.JS_BASE or not self.js_present >> js & 1:
            return None
        return self.slots[js], reg

    def js_state(self) -> int:
        v = 0
        for s in self.slots:
            if s.active:
                v |= 1 << s.js
            if s.command_next == R.JsCommand.START:
                v |= 1 << (16 + s.js)
        return v

    def read32(self, off: int) -> int:
        if 0 <= off < IRQ_BLOCK_SIZE and not off & 3:
            return self.irq.read(off)
        if off == R.JOB_INT_JS_STATE:
            return self.js_state()
        if off == R.JOB_INT_THROTTLE:
            return 0
        hit = self._slot(off)
        word = None if hit is None else _SLOT_WORDS.get(hit[1])
        if word is None:
            self.stats["unknown_reads"] += 1
            return 0
        reg, hi = word
        if reg.access == RegAccess.WO:
            return 0
        assert hit is not None
        value: int = getattr(hit[0], reg.name.lower())
        return (value >> 32 if hi else value) & _M32

    def write32(self, off: int, value: int) -> None:
        value &= _M32
        if 0 <= off < IRQ_BLOCK_SIZE and not off & 3:
            self.irq.write(off, value)
            return
        hit = self._slot(off)
        word = None if hit is None else _SLOT_WORDS.get(hit[1])
        if hit is None or word is None:
            self.stats["unknown_writes"] += 1
            return
        s = hit[0]
        reg, hi = word
        if reg.access == RegAccess.RO:
            return
        if reg.offset == R.JS_COMMAND_NEXT:
            self._command_next(s, value)
        elif reg.offset == R.JS_COMMAND:
            self._command(s, value)
        else:
            name = reg.name.lower()
            old: int = getattr(s, name)
            setattr(s, name, (old & _M32 | value << 32) if hi else (old & ~_M32 | value))

    def _command_next(self, s: JobSlot, cmd: int) -> None:
        if cmd == R.JsCommand.START:
            s.command_next = int(R.JsCommand.START)
            if not s.active:
                self._take_next(s)
        elif cmd == R.JsCommand.NOP:
            s.command_next = 0  # the queued job is withdrawn
        # other values: no effect (inferred)

    def _command(self, s: JobSlot, cmd: int) -> None:
        # START only through COMMAND_NEXT; a stop of an idle slot does nothing
        stop = R.JS_STOPS.get(cmd)
        if stop is None or not s.active:
            return
        kind, flag = stop
        if flag is not None and bool(s.config & R.JS_CONFIG_JOB_CHAIN_FLAG) != bool(flag):
            return
        if s.stalled is not None and kind == R.JsCommand.HARD_STOP:
            self._end(s, _TERMINATED)  # a stalled job cannot reach a boundary: killed
            return
        # a hard stop overrides a pending soft stop, not the other way round
        if s.stop != R.JsCommand.HARD_STOP:
            s.stop = int(kind)
        self.kick()

    # -- execution ------------------------------------------------------------------------
    def _take_next(self, s: JobSlot) -> None:
        """The slot takes its _NEXT set as the current chain; the _NEXT registers read 0 again
        (kbase reads HEAD_NEXT after a COMMAND_NEXT NOP to learn whether the queued chain was
        taken; ARM's NoMali model clears HEAD/AFFINITY/CONFIG_NEXT the same way)."""
        s.head = s.tail = s.head_next
        s.affinity = s.affinity_next
        s.config = s.config_next
        s.head_next = s.affinity_next = s.config_next = 0
        s.status = _ACTIVE
        s.stop = 0
        s.command_next = 0
        s.active = True
        s.first = True
        self.kick()

    def kick(self) -> None:
        """A chain may be runnable: schedule the execution task (if a loop runs)."""
        if self._task is not None and not self._task.done():
            return
        loop = running_loop(self._loop)
        if loop is None or loop.is_closed():
            return  # synchronous use: the caller pumps
        self._task = loop.create_task(self._run(), name="jm-job-slots")
        self._task.add_done_callback(_log_crash)

    async def _run(self) -> None:
        while self.pump(SLICE_JOBS):
            await asyncio.sleep(0)

    def pump(self, budget: int = SLICE_JOBS) -> bool:
        """Run up to ``budget`` jobs on every active slot; True while a slot can still run
        (a slot stalled on an MMU fault waits for :meth:`on_as_update`)."""
        busy = False
        for s in self.slots:
            if s.active and s.stalled is None:
                self._run_slot(s, budget)
                busy = busy or (s.active and s.stalled is None)
        return busy

    def totals(self) -> dict[str, int]:
        """Jobs run, chains completed and chains failed or stopped, over every slot."""
        return {"jobs": sum(s.jobs_done for s in self.slots),
                "chains-done": sum(s.chains_done for s in self.slots),
                "chains-failed": sum(s.chains_failed for s in self.slots)}

    def on_as_update(self, as_nr: int) -> None:
        """The driver issued an AS command on ``as_nr`` or cleared its MMU_INT bit: a job
        stalled in that AS retries if the command restarts stalled transactions, or fails
        with JOB_BUS_FAULT if the AS no longer translates (the MMU's on_as_update hook)."""
        binding = self.mmu.binding(as_nr)
        woke = False
        for s in self.slots:
            if s.stalled is None or s.stalled.as_nr != as_nr:
                continue
            then = s.stalled_binding
            if then is not None and binding.restarts == then.restarts:
                continue  # MMU_INT_CLEAR alone restarts nothing
            s.stalled = s.stalled_binding = None
            if binding.enabled:
                woke = True  # retried from the job's start (jobs are atomic here)
            else:
                self._fail(s, _JOB_BUS_FAULT, s.tail)
        if woke:
            self.kick()

    def _run_slot(self, s: JobSlot, budget: int) -> None:
        for _ in range(max(1, budget)):
            if s.stop:
                if s.stop == R.JsCommand.SOFT_STOP:
                    s.head = s.tail  # kbase: a soft-stopped chain has HEAD == TAIL
                    self._end(s, _STOPPED)
                else:
                    self._end(s, _TERMINATED)
                return
            if s.tail or s.first:
                self._run_job(s)
                if not s.active or s.stalled is not None:
                    return
            if s.tail == 0:  # the chain ended: a stop arriving now finds nothing to stop
                self._chain_done(s)
                return

    def _run_job(self, s: JobSlot) -> None:
        """One job at TAIL (the next job to run): execute it, write its status back, move on."""
        as_nr = s.config & R.JS_CONFIG_AS_MASK
        va = s.tail
        s.head = va
        raw = self.mmu.read(as_nr, va, R.JOB_HEADER_SIZE)
        if isinstance(raw, MmuFault):
            self._mmu_fault(s, raw, va, write_back=False)
            return
        # The exception status already in the header is not checked: Mesa's panvk resubmits
        # chains whose headers say DONE (vkmark on the G52), which must run (docs/jm.md).
        _status, _first, _fault_ptr, control, _dep1, _dep2, nxt = R.JOB_HEADER.unpack(raw)
        jtype = control >> R.HDR_TYPE_SHIFT & R.HDR_TYPE_MASK
        if not control & R.HDR_IS_64B or jtype == R.JobType.NOT_STARTED or jtype > max(R.JobType):
            self._fail(s, _JOB_CONFIG_FAULT, va)
            return
        if jtype == R.JobType.WRITE_VALUE:
            res = self._write_value(as_nr, va)
            if isinstance(res, MmuFault):
                self._mmu_fault(s, res, va)
                return
            if res:
                self._fail(s, res, va)
                return
        # NULL, CACHE_FLUSH (caches are coherent here) and the shader jobs: nothing to do
        if not s.config & R.JS_CONFIG_DISABLE_DESCRIPTOR_WR_BK:
            f = self.mmu.write_u32(as_nr, va + R.HDR_EXCEPTION_STATUS, _DONE)
            if f is not None:
                self._mmu_fault(s, f, va, write_back=False)
                return
        s.jobs_done += 1
        s.first = False
        s.tail = nxt

    def _write_value(self, as_nr: int, job: int) -> int | MmuFault:
        """The Write Value payload at job+32: 0, a job fault code, or the MMU fault."""
        raw = self.mmu.read(as_nr, job + R.JOB_HEADER_SIZE, R.WRITE_VALUE_PAYLOAD.size)
        if isinstance(raw, MmuFault):
            return raw
        address, wtype, _pad, imm = R.WRITE_VALUE_PAYLOAD.unpack(raw)
        size = R.WRITE_VALUE_SIZE.get(wtype)
        if size is None:
            return _JOB_CONFIG_FAULT  # an unknown value type (inferred)
        if wtype == R.WriteValueType.ZERO:
            imm = 0
        elif wtype == R.WriteValueType.CYCLE_COUNTER:
            imm = self.cycle_count()
        elif wtype == R.WriteValueType.SYSTEM_TIMESTAMP:
            imm = self.timestamp()
        data = (imm & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        f = self.mmu.write(as_nr, address, data)
        return 0 if f is None else f

    def _mmu_fault(self, s: JobSlot, f: MmuFault, job: int, *, write_back: bool = True) -> None:
        """A job's access faulted: a bus fault, or a fault in an AS that does not translate,
        fails the job at once (JOB_BUS_FAULT); a translation/permission fault stalls it until
        the driver restarts or disables the AS (on_as_update)."""
        binding = self.mmu.binding(f.as_nr)
        if f.bus or not binding.enabled:
            self._fail(s, _JOB_BUS_FAULT, job, write_back=write_back)
            return
        s.stalled = f
        s.stalled_binding = binding
        self.stats["mmu_stalls"] += 1
        log.debug("JS%d: job %#x stalled on %s", s.js, job, f)

    def _fail(self, s: JobSlot, code: int, job: int, *, write_back: bool = True) -> None:
        """The job at ``job`` failed with ``code``: its header records it (when it can be
        written), the chain ends with FAILED."""
        if write_back and not s.config & R.JS_CONFIG_DISABLE_DESCRIPTOR_WR_BK:
            as_nr = s.config & R.JS_CONFIG_AS_MASK
            self.mmu.write_u32(as_nr, job + R.HDR_EXCEPTION_STATUS, code, report=False)
            self.mmu.write_u64(as_nr, job + R.HDR_FAULT_POINTER, job, report=False)
        log.debug("JS%d: job %#x failed: %#x", s.js, job, code)
        self._end(s, code)

    def _end(self, s: JobSlot, code: int) -> None:
        """The chain stops with ``code`` (a fault, STOPPED or TERMINATED): FAILED(js)."""
        s.status = code
        s.active = False
        s.first = False
        s.stop = 0
        s.stalled = s.stalled_binding = None
        s.chains_failed += 1
        self.irq.raise_bits(R.JOB_INT_FAILED(s.js))

    def _chain_done(self, s: JobSlot) -> None:
        """The chain ran to its end: DONE(js); a queued _NEXT chain starts at once."""
        s.status = _DONE
        s.active = False
        s.chains_done += 1
        self.irq.raise_bits(R.JOB_INT_DONE(s.js))
        if s.command_next == R.JsCommand.START:
            self._take_next(s)

    def reset(self) -> None:
        """GPU soft/hard reset: every slot idle, its registers at their reset values."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self.slots = [JobSlot(js) for js in range(R.MAX_JS)]
        self.irq.reset()


def _log_crash(task: asyncio.Task[None]) -> None:
    """A model bug must not vanish with its task: log it (the slots stay as they were)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("job slots crashed", exc_info=task.exception())

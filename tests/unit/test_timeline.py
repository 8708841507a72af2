"""--timeline (docs/perf.md): the trace is a Perfetto ``Trace`` whose tracks and events name
what the device did. The bytes are parsed back with Perfetto's own protobuf classes (the
schema check the Perfetto UI and trace processor apply to the same file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent
from support import cs_asm as A
from support import panthor_fw as pf
from support.csf_host import SYNCOBJ_VA, USER_VA, Host, as_base, kernel_job

from qemu_panthor.testport import REG, FaultInjector
from qemu_panthor.timeline import Timeline


def _parse(data: bytes) -> tuple[dict[int, str], list[tuple[str, str, int, dict[str, object]]]]:
    """(track uuid -> name, [(track, event name, type, annotations)])."""
    trace = Trace.FromString(data)
    tracks: dict[int, str] = {}
    events = []
    for p in trace.packet:
        if p.HasField("track_descriptor"):
            tracks[p.track_descriptor.uuid] = p.track_descriptor.name
    for p in trace.packet:
        if p.HasField("track_event"):
            e = p.track_event
            args: dict[str, object] = {}
            for a in e.debug_annotations:
                args[a.name] = a.int_value if a.HasField("int_value") else (
                    a.string_value if a.HasField("string_value") else a.bool_value)
            events.append((tracks.get(e.track_uuid, "?"), e.name, e.type, args))
    return tracks, events


def _job_with_work(h: Host) -> None:
    """A user stream with a compute work item, called from the kernel's job ring."""
    prog = [A.set_sb_entry(1, 0), A.run_compute(), A.wait(1 << 1), A.move48(0, USER_VA + 0x800),
            A.move32(2, 7), A.store_multiple(2, 0, 0x1, 0)]
    for k, wd in enumerate(prog):
        h.ram.write_u64(h.user_pa + 8 * k, wd)
    h.push(kernel_job(USER_VA, 8 * len(prog), SYNCOBJ_VA))


def test_the_trace_names_every_kind_of_event(tmp_path: Path) -> None:
    h = Host.booted(work_scale=0.001)
    port = FaultInjector(h.gpu, h.fw)
    tl = Timeline(str(tmp_path / "t.pftrace"))
    h.gpu.attach_timeline(tl)
    h.fw.attach_timeline(tl)
    port.tl = tl
    port.write32(REG["TP_MARK"], 0x10000001)  # the guest marks a submit
    h.toggle(h.glb["input_va"], h.glb["output_va"], pf.GLB_PING)  # panthor's watchdog
    h.w(0x80000, 1)  # doorbell 0
    h.start_group(0)
    _job_with_work(h)
    h.fw.sched.pump()
    h.now += 1.0
    h.fw.sched.wake_due()
    h.fw.sched.pump()
    assert h.ram.read_u64(h.sync_pa) == 1
    h.job_irq()  # JOB_INT cleared
    # an AS command with a lock region around it, then a fault and a reset
    base = as_base(1)
    h.w(base + 0x10, (0x3000000 | 14) & 0xFFFFFFFF)  # LOCKADDR: 32 KiB at 0x3000000
    h.w(base + 0x18, 2)  # LOCK
    h.w(base + 0x18, 3)  # UNLOCK
    h.gpu.mmu.read(1, 0x7654320, 4)  # unmapped: a reported fault
    h.w(0x30, 0x101)  # GPU_COMMAND: RESET, SOFT
    for _ in range(2000):
        h.r(0x0)  # MMIO traffic (sampled into counters)
    tracks, events = _parse(tl.drain())
    names = set(tracks.values())
    for t in ("Doorbells", "IRQ job", "IRQ job line", "GLB", "CSG0", "CS0.0", "CS0.0 jobs",
              "CS0.0 compute", "AS1", "MMU faults", "GPU", "Guest", "MMIO reads"):
        assert t in names, f"no {t!r} track in {sorted(names)}"
    kinds = {(t, n) for t, n, _, _ in events}
    assert ("GLB", "req") in kinds
    assert any(t == "CSG0" and "START" in n for t, n in kinds)
    assert ("CSG0", "SYNC_UPDATE event") in kinds
    assert ("IRQ job", "raise") in kinds and ("IRQ job", "clear") in kinds
    assert ("CS0.0", "slice") in kinds
    assert ("CS0.0 compute", "compute") in kinds
    assert ("CS0.0 jobs", "job") in kinds
    assert ("AS1", "locked") in kinds and ("AS1", "LOCK") in kinds and ("AS1", "UNLOCK") in kinds
    assert any(t == "MMU faults" and "TRANSLATION_FAULT" in n for t, n in kinds)
    assert ("GPU", "soft reset") in kinds
    assert ("Guest", "mark 0x10000001") in kinds
    slices = [a for t, n, k, a in events if t == "CS0.0" and k == TrackEvent.TYPE_SLICE_END]
    assert slices and all("result" in a and "instructions" in a for a in slices)
    # every slice begun on a track ends on it (the UI draws them as nested boxes)
    depth: dict[str, int] = {}
    for t, _n, k, _a in events:
        if k == TrackEvent.TYPE_SLICE_BEGIN:
            depth[t] = depth.get(t, 0) + 1
        elif k == TrackEvent.TYPE_SLICE_END:
            depth[t] = depth.get(t, 0) - 1
            assert depth[t] >= 0, f"an end without a begin on {t}"


def test_every_hook_is_off_until_a_timeline_is_attached() -> None:
    h = Host.booted()
    assert h.gpu.tl is None and h.gpu.job_irq.tl is None and h.gpu.mmu.tl is None
    assert h.fw.executor.tl is None and h.fw.executor.interp.tl is None


async def test_the_writer_puts_the_trace_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.pftrace"
    tl = Timeline(str(path))
    tl.start()
    for k in range(1000):
        tl.instant("Doorbells", f"doorbell {k % 3}", index=k % 3)
        if k % 100 == 0:
            await asyncio.sleep(0)
    await tl.aclose()
    tracks, events = _parse(path.read_bytes())
    assert "Doorbells" in tracks.values()
    assert len(events) == 1000


def test_arch14_pwr_commands_are_on_the_pwr_track(tmp_path: Path) -> None:
    """A G1-Pro's PWR_COMMANDs as panthor issues them at probe and reset, by name."""
    from qemu_panthor.gpu.device import MaliGpu
    from qemu_panthor.gpu.models import MODELS
    from qemu_panthor.memory import SparseRam

    gpu = MaliGpu(MODELS["g1-pro"], SparseRam(), on_irq=lambda name, level: None)
    assert gpu.pwr is not None and gpu.pwr.tl is None
    tl = Timeline(str(tmp_path / "t.pftrace"))
    gpu.attach_timeline(tl)
    for off, value in ((0x830, 1), (0x834, 0), (0x828, 0x10), (0x828, 0x820), (0x828, 0x31),
                       (0x828, 0x55)):
        gpu.mmio_write(off, 4, value)
    _tracks, events = _parse(tl.drain())
    pwr = [(name, args) for track, name, _t, args in events if track == "PWR"]
    assert [n for n, _a in pwr] == ["POWER_UP L2", "DELEGATE SHADER", "RESET_SOFT",
                                    "command 0x55"]
    assert pwr[0][1] == {"command": 0x10, "arg": 1}
    assert any(t == "GPU" and n == "soft reset" for t, n, _ty, _a in events)

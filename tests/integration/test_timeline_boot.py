"""``boot --timeline FILE`` (docs/perf.md): the real guest's jobs, seen from the device, in a
Perfetto trace with the guest's submit marks joined. Parsed back with Perfetto's protobuf
classes: every track kind the docs list is there, and each guest submit mark is followed by
the doorbell, the job span and the job interrupt of that job."""

from __future__ import annotations

from pathlib import Path

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent


async def test_a_timeline_of_the_guest_jobs(boot_guest, tmp_path: Path) -> None:
    out = tmp_path / "boot.pftrace"
    r = await boot_guest(run="selftests", timeout=300, timeline=out,
                         append="qp.only=job_store_deadbeef,job_1000_sequential,job_mmu_fault")
    assert r.rc == 0
    trace = Trace.FromString(out.read_bytes())
    tracks = {p.track_descriptor.uuid: p.track_descriptor.name for p in trace.packet
              if p.HasField("track_descriptor")}
    events = [(p.timestamp, tracks.get(p.track_event.track_uuid, "?"), p.track_event.name,
               p.track_event.type) for p in trace.packet if p.HasField("track_event")]
    names = set(tracks.values())
    for t in ("Doorbells", "IRQ job", "IRQ job line", "GLB", "CSG0", "MMU faults", "Guest",
              "MMIO reads", "MMIO writes"):
        assert t in names, f"no {t!r} track: {sorted(names)}"
    assert any(n.startswith("CS") and n.endswith(" jobs") for n in names)
    assert any(n.startswith("AS") and n[2:].isdigit() for n in names)
    jobs = [e for e in events if e[1].endswith(" jobs") and e[3] == TrackEvent.TYPE_SLICE_BEGIN]
    assert len(jobs) >= 1000, len(jobs)
    submits = sorted(ts for ts, t, n, _ in events if t == "Guest" and n.startswith("mark 0x1"))
    assert len(submits) >= 1000, len(submits)
    # each submit mark precedes a job span's start (the job enters the ring after the ioctl)
    starts = sorted(ts for ts, *_ in jobs)
    assert starts[0] > submits[0]

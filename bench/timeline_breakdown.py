"""Where one job's time goes, from a ``boot --timeline`` trace of ``bench_job_latency``.

Reads the Perfetto trace with Perfetto's protobuf classes and, for every job the guest
submitted (its TP_MARK submit mark), follows it through the device: the doorbell, the
stream's execution slice, the job interrupt raised and cleared, and the guest's SYNCOBJ_WAIT
returning (its mark). Prints the median and p90 of each phase (docs/perf.md).

    qemu-panthor boot --timeline /tmp/t.pftrace --append qp.only=bench_job_latency
    .venv/bin/python bench/timeline_breakdown.py /tmp/t.pftrace
"""

from __future__ import annotations

import statistics
import sys

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent

PHASES = ("guest: submit ioctl entered -> doorbell",
          "model: doorbell -> stream slice starts",
          "model: the slice (the job's instructions)",
          "model: slice end -> JOB_INT raised",
          "guest: JOB_INT raised -> cleared by panthor",
          "guest: JOB_INT cleared -> SYNCOBJ_WAIT returns",
          "total: submit -> SYNCOBJ_WAIT returns")


def _is_stream(track: str) -> bool:
    return track.startswith("CS") and " " not in track


def breakdown(data: bytes) -> dict[str, list[float]]:
    trace = Trace.FromString(data)
    tracks = {p.track_descriptor.uuid: p.track_descriptor.name for p in trace.packet
              if p.HasField("track_descriptor")}
    ev = sorted((p.timestamp, tracks.get(p.track_event.track_uuid, "?"), p.track_event.name,
                 p.track_event.type) for p in trace.packet if p.HasField("track_event"))
    out: dict[str, list[float]] = {k: [] for k in PHASES}
    for i, (t0, track, name, _k) in enumerate(ev):
        if track != "Guest" or not name.startswith("mark 0x1"):
            continue
        marks: list[int] = []
        want = [lambda t, n, k: t == "Doorbells" and n != "doorbell 0",
                lambda t, n, k: _is_stream(t) and k == TrackEvent.TYPE_SLICE_BEGIN,
                lambda t, n, k: _is_stream(t) and k == TrackEvent.TYPE_SLICE_END,
                lambda t, n, k: t == "IRQ job" and n == "raise",
                lambda t, n, k: t == "IRQ job" and n == "clear",
                lambda t, n, k: t == "Guest" and n.startswith("mark 0x3")]
        for ts, t, n, k in ev[i + 1:i + 2000]:
            if t == "Guest" and n.startswith("mark 0x1"):
                break
            if want[len(marks)](t, n, k):
                marks.append(ts)
                if len(marks) == len(want):
                    break
        if len(marks) < len(want):
            continue
        points = [t0, *marks]
        for phase, a, b in zip(PHASES, points, points[1:], strict=False):
            out[phase].append((b - a) / 1000)
        out[PHASES[-1]].append((marks[-1] - t0) / 1000)
    return out


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with open(sys.argv[1], "rb") as fh:
        out = breakdown(fh.read())
    n = len(out[PHASES[-1]])
    if not n:
        print("no complete job in the trace (boot with --timeline and qp.only=bench_job_latency)")
        return 1
    print(f"{n} jobs followed; microseconds")
    print(f"{'phase':48} {'median':>8} {'p90':>8}")
    for phase in PHASES:
        v = sorted(out[phase])
        print(f"{phase:48} {statistics.median(v):8.0f} {v[int(len(v) * 0.9)]:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

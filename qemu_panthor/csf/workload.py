"""Endpoint work items take time: the cost model, and the scoreboards that track them.

A RUN_*/FINISH_* instruction hands a work item to an endpoint (compute, tiler, fragment) and
the command stream goes on; the scoreboard entry SET_SB_ENTRY selected counts the item until
the endpoint completes it. Items on one endpoint of a stream run one after another. WAIT
blocks the stream until the entries of its mask are drained; deferred operations
(FLUSH_CACHE2, SYNC_ADD/SET, HEAP_OPERATION, TRACE_POINT) take effect only once their wait
mask is drained (the model holds the stream on them; hardware queues them, with the same
order of effects); PROGRESS_WAIT blocks until enough progress-incrementing items have
completed; a stream whose ring is empty stays busy (not idle) while its items run.
CS_STATUS_SCOREBOARDS reads the entries with items in flight (docs/command-streams.md,
"Work items take time").

The cost model is deterministic: each kind of work item takes a fixed time
(:data:`COST_US`), multiplied by a scale (``serve --work-scale``; 0 makes every item
complete at once). The model runs no shaders and reads no descriptors, so the size of the
work does not enter (inferred: a documented stand-in, not hardware timing).
"""

from __future__ import annotations

from .cs_state import CsExecState

#: Duration of one work item of each kind at scale 1.0, in microseconds (a deterministic
#: stand-in: the order of magnitude of a small dispatch or draw on a G610).
COST_US: dict[str, float] = {
    "compute": 20.0,
    "compute_indirect": 20.0,
    "tiling": 30.0,
    "idvs": 40.0,
    "fragment": 60.0,
    "fullscreen": 60.0,
    "finish_tiling": 5.0,
    "finish_fragment": 10.0,
}

#: Endpoint each kind occupies (index into ``CsExecState.ep_until``).
ENDPOINT = {"compute": 0, "compute_indirect": 0, "tiling": 1, "idvs": 1, "finish_tiling": 1,
            "fragment": 2, "fullscreen": 2, "finish_fragment": 2}
ENDPOINTS = 3

NEVER = float("inf")


def start_item(st: CsExecState, kind: str, now: float, scale: float, progress: bool,
               hang: bool = False, slot: int | None = None) -> float:
    """Issue one work item of ``kind`` at ``now``: it completes after the endpoint's previous
    item plus its cost; the current scoreboard entry (SET_SB_ENTRY endpoint) tracks it, or
    ``slot`` for an instruction with a signal slot of its own (FINISH_FRAGMENT). A
    hung item (a shader that never ends; the test port's WORK_HANG) never completes, and
    neither does anything queued behind it on its endpoint. Returns when the item starts
    (its endpoint's previous item done); ``st.ep_until[ENDPOINT[kind]]`` is when it ends."""
    ep = ENDPOINT[kind]
    start = max(now, st.ep_until[ep])
    done = NEVER if hang else start + COST_US[kind] * scale * 1e-6
    st.ep_until[ep] = done
    if slot is None:
        slot = st.sb_endpoint
    if done > st.sb_until[slot]:
        st.sb_until[slot] = done
    if progress:
        st.progress_due.append(done)
    return start


def settle(st: CsExecState, now: float) -> None:
    """Retire what has completed by ``now``: drained entries read 0, completed
    progress-incrementing items advance the progress counter."""
    sb = st.sb_until
    for i, t in enumerate(sb):
        if t and t <= now:
            sb[i] = 0.0
    due = st.progress_due
    if due:
        done = [t for t in due if t <= now]
        if done:
            st.progress = (st.progress + len(done)) & 0xFFFFFFFFFFFFFFFF
            st.progress_due = [t for t in due if t > now]


def pending(st: CsExecState, mask: int, now: float) -> float:
    """When the scoreboard entries of ``mask`` are drained (0: they are)."""
    settle(st, now)
    until = 0.0
    sb = st.sb_until
    for i in range(len(sb)):
        if mask >> i & 1 and sb[i] > until:
            until = sb[i]
    return until


def busy_mask(st: CsExecState, now: float) -> int:
    """CS_STATUS_SCOREBOARDS: the entries with items in flight at ``now``."""
    settle(st, now)
    return sum(1 << i for i, t in enumerate(st.sb_until) if t)


def progress_reached(st: CsExecState, target: int, now: float) -> float:
    """When the progress counter reaches ``target`` (0: it has; :data:`NEVER`: the items in
    flight will not get it there)."""
    settle(st, now)
    missing = target - st.progress
    if missing <= 0:
        return 0.0
    due = sorted(st.progress_due)
    return due[missing - 1] if missing <= len(due) else NEVER


def drained(st: CsExecState, now: float) -> float:
    """When every item in flight has completed (0: none is)."""
    return pending(st, (1 << len(st.sb_until)) - 1, now)


__all__ = ["COST_US", "ENDPOINT", "ENDPOINTS", "NEVER", "busy_mask", "drained", "pending",
           "progress_reached", "settle", "start_item"]

"""Random MMIO traffic never raises out of MaliGpu and never breaks its invariants."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gpu_doubles import FakeClock, RecordingMcu, Rig

from qemu_panthor.gpu.models import MODELS

# Offsets near every decoded region plus anywhere in (and just outside) the window.
_hot = st.sampled_from(
    [
        0x0,
        0x20,
        0x24,
        0x28,
        0x30,
        0x88,
        0x90,
        0x98,
        0x160,
        0x180,
        0x1A0,
        0x1E0,
        0x220,
        0x304,
        0x700,
        0x704,
        0x1000,
        0x1004,
        0x1008,
        0x2000,
        0x2418,
        0x10000,
        0x80000,
        0x90000,
    ]
)
_offset = st.one_of(
    st.builds(lambda b, d: b + d, _hot, st.integers(-3, 7)),
    st.integers(-8, 0x200010),
)
_size = st.sampled_from([0, 1, 2, 3, 4, 5, 8, 16])
_op = st.tuples(st.booleans(), _offset, _size, st.integers(0, 2**64 - 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(_op, max_size=60),
    model=st.sampled_from(sorted(MODELS)),
)
def test_random_accesses_never_raise(ops: list[tuple[bool, int, int, int]], model: str) -> None:
    rig = Rig(MODELS[model], clock=FakeClock(step=7))
    rig.gpu.mcu = RecordingMcu(rig.gpu)
    for is_write, off, size, value in ops:
        if is_write:
            rig.gpu.mmio_write(off, size, value)
        else:
            v = rig.gpu.mmio_read(off, size)
            assert 0 <= v < (1 << (8 * max(size, 1)))
    assert rig.gpu.stats["errors"] == 0
    assert rig.gpu.stats["mcu_hook_errors"] == 0
    # invariants the driver relies on
    l2_ready = rig.gpu.mmio_read(0x160, 8)
    assert l2_ready & ~MODELS[model].l2_present == 0
    assert rig.gpu.mmio_read(0x220, 8) == 0  # PWRTRANS never observed set
    assert rig.gpu.mmio_read(0x0, 4) == MODELS[model].gpu_id
    assert rig.gpu.latest_flush_id & 0x7F000000 == 0 and rig.gpu.latest_flush_id != 0

"""The launcher's console filter: repeated lines and blocks collapse, the output is capped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qemu_panthor.launcher.console import ByteCap, ConsoleFilter, RepeatCollapser, repeat_note


def collapse(lines: list[str], max_period: int = 8) -> list[str]:
    c = RepeatCollapser(max_period)
    out = [o for line in lines for o in c.feed(line)]
    return out + c.flush()


def test_distinct_lines_pass_unchanged() -> None:
    lines = [f"line {i}" for i in range(100)]
    assert collapse(lines) == lines


def test_a_repeated_line_is_shown_twice_then_counted() -> None:
    assert collapse(["x"] * 1000 + ["y"]) == ["x", "x", "... repeated 998 times", "y"]


def test_two_identical_lines_need_no_note() -> None:
    assert collapse(["x", "x", "y"]) == ["x", "x", "y"]


def test_one_repetition_is_singular() -> None:
    assert collapse(["x", "x", "x"]) == ["x", "x", "... repeated 1 time"]


def test_open_cycle_is_reported_at_flush() -> None:
    c = RepeatCollapser()
    out = [o for line in ["a"] * 5 for o in c.feed(line)]
    assert out == ["a", "a"]
    assert c.flush() == ["... repeated 3 times"]
    assert c.flush() == []


def test_dead_backend_spam_collapses() -> None:
    # What QEMU 11.1 prints for each register a driver polls once its vfio-user server died:
    # a pair of lines per access, a 64-bit register polled as LO/HI (4 lines per cycle).
    qemu = "qemu-system-aarch64: "
    bp = qemu + "vfio_user_device_io_region_read: Unable to write to socket: Broken pipe"
    lo = qemu + "vfio_region_read(vfio-user:gpu.sock:region0+0x220, 4) failed: Bad address"
    hi = lo.replace("0x220", "0x224")
    cycle = [bp, lo, bp, hi]
    out = collapse(["booting"] + cycle * 10_000 + ["done"])
    assert out == ["booting", *cycle, *cycle, "... last 4 lines repeated 9998 times", "done"]


def test_smallest_period_wins() -> None:
    # "ab" repeated is also "abab" repeated: the note names the 2-line block.
    assert collapse(list("ab" * 10)) == [*"abab", "... last 2 lines repeated 8 times"]


def test_block_containing_a_repeated_line() -> None:
    out = collapse([*"aab" * 20, "z"])
    assert out[-2:] == ["... last 3 lines repeated 18 times", "z"]
    assert "".join(out[:-2]) == "aabaab"


def test_leaving_a_cycle_mid_block_shows_the_partial_repetition() -> None:
    out = collapse([*"abcabcabcab", "x"])
    assert out == [*"abcabc", "... last 3 lines repeated 1 time", "a", "b", "x"]


def test_cycle_detected_but_never_repeated_keeps_history() -> None:
    # "aa" starts a 1-line cycle that "b" ends before any repetition: no note, no loss.
    assert collapse(list("aabaac")) == list("aabaac")


def test_period_longer_than_max_is_not_collapsed() -> None:
    block = [f"l{i}" for i in range(5)]
    assert collapse(block * 4, max_period=4) == block * 4


def test_note_wording() -> None:
    assert repeat_note(3, 1) == "... repeated 3 times"
    assert repeat_note(1, 2) == "... last 2 lines repeated 1 time"


def expand(out: list[str]) -> list[str]:
    """Undo the notes (for the property test): each note repeats the block before it."""
    lines: list[str] = []
    for o in out:
        if o.startswith("... "):
            words = o.split()
            period = 1 if words[1] == "repeated" else int(words[2])
            count = int(words[-2])
            lines.extend(lines[-period:] * count)
        else:
            lines.append(o)
    return lines


@given(st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=300),
       st.integers(min_value=1, max_value=6))
def test_collapsing_loses_nothing(lines: list[str], period: int) -> None:
    out = collapse(lines, period)
    assert expand(out) == lines
    assert len(out) <= len(lines) + 1


def test_cap_truncates_with_one_note_and_reports_at_close() -> None:
    cap = ByteCap(100)
    out: list[str] = []
    for i in range(50):
        out += cap.admit(f"line {i:04d}")  # 10 bytes with the newline
    assert out[:10] == [f"line {i:04d}" for i in range(10)]
    assert len(out) == 11 and "truncated after 100 bytes" in out[10]
    assert cap.truncated and cap.written == 100
    assert cap.close() == ["[qemu-panthor: 40 console lines (400 bytes) were dropped by the cap]"]


def test_cap_not_reached_says_nothing() -> None:
    cap = ByteCap(100)
    assert cap.admit("short") == ["short"]
    assert cap.close() == [] and not cap.truncated


def test_filter_bounds_any_stream() -> None:
    f = ConsoleFilter(cap=4096)
    total = 0
    for i in range(100_000):
        total += sum(len(o) + 1 for o in f.feed(f"kernel: message {i}"))
    total += sum(len(o) + 1 for o in f.close())
    assert total < 4096 + 200  # the cap, its note and the closing count


def test_filter_collapses_before_capping() -> None:
    f = ConsoleFilter(cap=1000)
    out = [o for _ in range(100_000) for o in f.feed("same")]
    out += f.close()
    assert out == ["same", "same", "... repeated 99998 times"]
    assert not f.cap.truncated

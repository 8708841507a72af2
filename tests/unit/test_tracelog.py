"""The --trace log handler writes every record, in order, through its writer task."""

from __future__ import annotations

import logging
from pathlib import Path

from qemu_panthor.tracelog import AsyncTraceHandler


async def test_records_reach_the_file_in_order(tmp_path: Path) -> None:
    path = tmp_path / "trace.log"
    h = AsyncTraceHandler(str(path))
    log = logging.getLogger("qemu_panthor.test_tracelog")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    log.addHandler(h)
    h.start()
    try:
        for i in range(2000):  # a burst, emitted without yielding to the writer
            log.debug("R32 GPU_ID #%d", i)
        await h.aclose()
    finally:
        log.removeHandler(h)
    lines = path.read_text().splitlines()
    assert len(lines) == 2000 and h.written == 2000
    assert [int(line.rsplit("#", 1)[1]) for line in lines] == list(range(2000))
    assert "qemu_panthor.test_tracelog: R32 GPU_ID #0" in lines[0]


async def test_emit_never_blocks_or_raises_on_bad_records(tmp_path: Path) -> None:
    h = AsyncTraceHandler(str(tmp_path / "t.log"))
    h.start()
    rec = logging.LogRecord("x", logging.DEBUG, __file__, 1, "%d", ("not a number",), None)
    h.emit(rec)  # formatting fails: counted, not raised
    await h.aclose()
    assert h.dropped == 1

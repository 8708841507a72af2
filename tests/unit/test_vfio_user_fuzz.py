"""The vfio-user fuzzer (fuzz/fuzz_vfio_user.py) runs clean on a short seeded budget against the
real `qemu-panthor serve` process: checked here so it never rots; the full campaign and its
figures are in docs/fuzzing.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_short_seeded_campaign_runs_clean(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO / "tests"))
    p = subprocess.run(
        [sys.executable, "-m", "fuzz.fuzz_vfio_user", "--seed", "7", "--cases", "4000",
         "--seconds", "60", "--lanes", "1", "--sequences", "0.2",
         "--findings", str(tmp_path / "findings"), "--report", str(report)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads(report.read_text())
    assert summary["findings"] == []
    assert summary["cases"] >= 4000 and summary["messages_answered"] > summary["cases"] // 2
    assert summary["probe_ms"]["n"] > 0

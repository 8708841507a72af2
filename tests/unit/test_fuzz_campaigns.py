"""The fuzz campaigns of `make fuzz` run clean on a short seeded budget (they are checked here
so they never rot; the full campaigns and their figures are in docs/fuzzing.md).

The hang bound is generous here (a real hang never returns; a loaded CI machine is slow):
the campaigns' own 5 ms bounds are measured by `make fuzz`, not asserted in a timed test."""

from __future__ import annotations

import re
from types import ModuleType

import pytest

from fuzz import fuzz_cs, fuzz_mmio, fuzz_pgtable


@pytest.mark.parametrize(
    ("campaign", "cases"), [(fuzz_pgtable, 300), (fuzz_mmio, 2000), (fuzz_cs, 1000)]
)
def test_campaign_finds_nothing(campaign: ModuleType, cases: int,
                                capsys: pytest.CaptureFixture[str]) -> None:
    rc = campaign.main(["--seed", "7", "--cases", str(cases), "--seconds", "60",
                        "--hang-ms", "2000"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"{cases} cases" in out and "0 crashes, 0 hangs, 0 tracebacks" in out
    if campaign is fuzz_mmio:  # the JM model (first in turn) ran chains, not just registers
        jobs = re.search(r"JM jobs run (\d+)", out)
        assert jobs is not None and int(jobs.group(1)) > 0, out

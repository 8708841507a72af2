"""Parse the guest's KTAP selftest output and summarise it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_RESULT = re.compile(r"^\s*(ok|not ok)\s+(\d+)\s*(?:-\s*)?([^#]*?)\s*(?:#\s*(.*))?$")


@dataclass
class KtapSummary:
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    planned: int | None = None

    @property
    def total(self) -> int:
        return len(self.passed) + len(self.failed) + len(self.skipped)

    def line(self) -> str:
        return f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"


def parse_ktap(lines: list[str]) -> KtapSummary:
    """Top-level results only (subtests are indented); a SKIP directive counts as skipped."""
    s = KtapSummary()
    for line in lines:
        if line.startswith(("1..", "  1..")) and s.planned is None and not line.startswith(" "):
            try:
                s.planned = int(line[3:].split()[0])
            except (ValueError, IndexError):
                pass
            continue
        if line.startswith(" "):
            continue
        m = _RESULT.match(line)
        if not m:
            continue
        status, _num, name, directive = m.groups()
        directive = directive or ""
        if directive.upper().startswith("SKIP"):
            s.skipped.append((name, directive[4:].strip()))
        elif status == "ok":
            s.passed.append(name)
        else:
            s.failed.append(name)
    if s.planned is not None and s.planned > s.total:
        s.failed.extend(f"(missing result {i})" for i in range(s.total + 1, s.planned + 1))
    return s

"""The private tool root: a Debian sid tree holding QEMU >= 10.1 (aarch64 and x86_64 system
emulators, SeaBIOS), make, the aarch64 cross compiler and the guest kernel's headers. It is
never chroot'ed into to run QEMU: QEMU runs from outside through the root's own dynamic loader
(the root's glibc is newer than the host's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .recipes import GuestArch, guest_arch

ENV_OVERRIDE = "QEMU_PANTHOR_TOOLROOT"


@dataclass(frozen=True)
class ToolRoot:
    path: Path

    @property
    def loader(self) -> Path:
        return self.path / "usr/lib64/ld-linux-x86-64.so.2"

    @property
    def libdir(self) -> Path:
        return self.path / "usr/lib/x86_64-linux-gnu"

    def run_argv(self, binary: str) -> list[str]:
        """argv prefix that runs ``binary`` (a path inside the root) with the root's loader."""
        return [str(self.loader), "--library-path", str(self.libdir), str(self.path / binary)]

    def qemu_argv(self, arch: GuestArch | None = None) -> list[str]:
        """argv prefix for the guest architecture's QEMU (qemu-system-aarch64 by default),
        including ``-L`` for the ROM files (QEMU's own, and SeaBIOS for x86)."""
        qemu = self.run_argv(f"usr/bin/{(arch or guest_arch()).qemu}")
        return [*qemu, "-L", str(self.path / "usr/share/qemu"),
                "-L", str(self.path / "usr/share/seabios")]

    def check(self, arch: GuestArch | None = None) -> None:
        for p in (self.loader, self.path / "usr/bin" / (arch or guest_arch()).qemu):
            if not p.exists():
                raise UserError(
                    f"tool root {self.path} is incomplete ({p} missing); run `make setup`"
                )


def from_env() -> ToolRoot | None:
    """A tool root named by $QEMU_PANTHOR_TOOLROOT (developer override), if set."""
    p = os.environ.get(ENV_OVERRIDE)
    return ToolRoot(Path(p)) if p else None

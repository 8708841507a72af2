"""Commands run inside a tool root that see host directories at their own paths.

Kernel trees are addressed by absolute paths that kbuild writes into its output (the O=
directory's ``source`` link, ``.cmd`` files), so a tree must have the same path inside the
tool root as outside. :func:`root_argv` runs a command chrooted into the root in a private
mount namespace (``unshare --mount``) where each directory of ``binds`` is bind-mounted at its
own path and ``/proc`` is mounted: the mounts vanish with the command, whatever ends it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

ROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/root",
            "DEBIAN_FRONTEND": "noninteractive"}

# Runs as `sh -c SCRIPT sh ROOT CWD NBINDS BIND... ARGV...`.
_SCRIPT = """\
set -e
root=$1 cwd=$2 n=$3; shift 3
mount -t proc proc "$root/proc"
while [ "$n" -gt 0 ]; do
    mkdir -p "$root$1"
    mount --bind "$1" "$root$1"
    shift; n=$((n - 1))
done
exec chroot "$root" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$cwd" "$@"
"""


def root_argv(root: Path, argv: Sequence[str], *, binds: Sequence[Path] = (),
              cwd: str = "/") -> list[str]:
    """The host argv that runs ``argv`` inside ``root`` with ``binds`` visible (absolute,
    resolved host directories, each at its own path)."""
    paths = []
    for b in binds:
        p = str(Path(b).resolve())
        if p == "/" or p in paths:
            continue
        paths.append(p)
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _SCRIPT, "sh",
            str(root), cwd, str(len(paths)), *paths, *argv]


def describe(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


__all__ = ["ROOT_ENV", "describe", "root_argv"]

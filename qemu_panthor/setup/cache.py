"""The image cache outside the repo: ``${XDG_CACHE_HOME:-~/.cache}/qemu-panthor``.

Every artefact is built in ``tmp/`` and renamed into place only when complete, so an
interrupted download or build never leaves a half-written entry. A lock file serialises
concurrent set-ups (``make run`` and ``make test`` at once). ``manifest.json`` records the
package versions resolved at set-up time, so later runs reuse the cache without the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ENV_CACHE = "QEMU_PANTHOR_CACHE"


def cache_dir() -> Path:
    override = os.environ.get(ENV_CACHE)
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qemu-panthor"


def progress(msg: str) -> None:
    """One set-up progress line on stderr (set-up is interactive: always shown)."""
    print(f"[setup] {msg}", file=sys.stderr, flush=True)


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir()
        self.tmp = self.root / "tmp"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                progress(f"waiting for another set-up holding {self.root / '.lock'} ...")
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._sweep_tmp()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _sweep_tmp(self) -> None:
        """Remove leftovers of interrupted builds (we hold the lock: nobody else builds)."""
        if self.tmp.exists():
            for p in self.tmp.iterdir():
                remove_tree(p)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def new_tmp(self, name: str) -> Path:
        p = self.tmp / f"{name}.{os.getpid()}.{time.monotonic_ns()}"
        p.mkdir(parents=True)
        return p

    def commit(self, tmp: Path, final: Path) -> Path:
        """Atomically move a finished build into place (replacing an older one)."""
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            old = self.tmp / f"old-{final.name}.{time.monotonic_ns()}"
            final.rename(old)
            tmp.rename(final)
            remove_tree(old)
        else:
            tmp.rename(final)
        return final

    # -- manifest -----------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def update_manifest(self, key: str, value: Any) -> None:
        data = self.manifest()
        data[key] = value
        tmp = self.manifest_path.with_suffix(f".tmp.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.manifest_path)


def remove_tree(p: Path) -> None:
    """rm -rf that also copes with read-only directories left by dpkg-deb/mmdebstrap."""
    if not p.exists() and not p.is_symlink():
        return
    if p.is_symlink() or p.is_file():
        p.unlink()
        return

    def onerror(func: Callable[[str], object], path: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o755)
            func(path)

    shutil.rmtree(p, onerror=onerror)

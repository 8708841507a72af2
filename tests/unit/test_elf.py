"""setup/elf.py against the ELF64 format (System V gABI): PT_INTERP names the loader,
DT_NEEDED entries are offsets into the DT_STRTAB string table, addressed by virtual address
through the PT_LOAD segments. Images are built here by an encoder of our own; real binaries
are checked against binutils' readelf when the host has it."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.elf_writer import make_elf

from qemu_panthor.setup.elf import elf_deps


def test_interp_and_needed_in_order() -> None:
    img = make_elf("/lib64/ld-linux-x86-64.so.2", ["libigt.so.0", "libc.so.6"])
    d = elf_deps(img)
    assert d.interp == "/lib64/ld-linux-x86-64.so.2"
    assert d.needed == ["libigt.so.0", "libc.so.6"]


def test_strtab_is_found_through_the_load_segment_mapping() -> None:
    """DT_STRTAB is a virtual address: a segment loaded from a non-zero file offset maps it
    to another file offset."""
    img = make_elf(None, ["libvulkan.so.1"], load_offset=0x40)
    d = elf_deps(img)
    assert d.interp is None and d.needed == ["libvulkan.so.1"]


def test_not_elf_static_and_damaged_images_give_nothing_and_never_raise() -> None:
    assert elf_deps(b"#!/bin/sh\n").needed == []
    assert elf_deps(b"").interp is None
    img = make_elf("/lib/ld-linux-aarch64.so.1", ["libc.so.6"])
    assert elf_deps(img[:40]).needed == []  # truncated header
    rng = random.Random(7)
    for _ in range(2000):
        b = bytearray(img)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cut = rng.randrange(len(b) + 1)
        elf_deps(bytes(b[:cut]))  # must not raise


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils' readelf not installed")
@pytest.mark.parametrize("path", ["/bin/ls", "/bin/true", "/usr/bin/env"])
def test_real_binaries_match_readelf(path: str) -> None:
    p = Path(path).resolve()
    dyn = subprocess.run(["readelf", "-dlW", str(p)], capture_output=True, text=True,
                         check=True).stdout
    want_needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    m = re.search(r"Requesting program interpreter: ([^\]]+)\]", dyn)
    d = elf_deps(p.read_bytes())
    assert d.needed == want_needed
    assert d.interp == (m.group(1) if m else None)

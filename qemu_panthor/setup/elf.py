"""What a dynamically linked ELF file needs to run: its interpreter (PT_INTERP) and the shared
libraries it names (DT_NEEDED). Read from the file, never by running it, so userlands of
another architecture (arm64 on this amd64 host) are trimmed the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
DT_NULL, DT_NEEDED, DT_STRTAB = 0, 1, 5
ELF_MAGIC = b"\x7fELF"


@dataclass
class ElfDeps:
    interp: str | None = None
    needed: list[str] = field(default_factory=list)


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


def elf_deps(data: bytes) -> ElfDeps:
    """PT_INTERP and DT_NEEDED of a 64-bit little-endian ELF image; empty for anything else
    (a static binary, a script, a truncated file)."""
    out = ElfDeps()
    if len(data) < 64 or data[:4] != ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return out
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 56 > len(data):
            return out
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, off)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_INTERP:
            out.interp = data[p_offset:p_offset + p_filesz].split(b"\0", 1)[0].decode(
                errors="replace")
    if dynamic is None:
        return out
    needed_offsets: list[int] = []
    strtab_vaddr = None
    doff, dsize = dynamic
    for off in range(doff, min(doff + dsize, len(data) - 15), 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            needed_offsets.append(val)
        elif tag == DT_STRTAB:
            strtab_vaddr = val
    if strtab_vaddr is None:
        return out
    strtab = next((o + strtab_vaddr - v for v, o, n in loads if v <= strtab_vaddr < v + n), None)
    if strtab is None:
        return out
    for n in needed_offsets:
        start = strtab + n
        end = data.find(b"\0", start)
        if 0 <= start < len(data) and end > start:
            out.needed.append(data[start:end].decode(errors="replace"))
    return out


__all__ = ["ElfDeps", "elf_deps", "is_elf"]

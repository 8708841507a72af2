"""A minimal ELF64 encoder (System V gABI), independent of qemu_panthor.setup.elf: what the
userland trimming and the --igt-build check read."""

from __future__ import annotations

import struct

VADDR = 0x400000


def make_elf(interp: str | None, needed: list[str], *, load_offset: int = 0) -> bytes:
    """A minimal little-endian ELF64: header, program headers (PT_LOAD covering the file,
    PT_INTERP, PT_DYNAMIC), the interpreter string, a string table and the dynamic section."""
    strtab = b"\0"
    offsets = []
    for n in needed:
        offsets.append(len(strtab))
        strtab += n.encode() + b"\0"
    phnum = 3
    ph_off = 64
    data_off = ph_off + phnum * 56
    interp_b = (interp.encode() + b"\0") if interp else b""
    strtab_off = data_off + len(interp_b)
    dyn_off = (strtab_off + len(strtab) + 7) & ~7
    dyn = b"".join(struct.pack("<qQ", 1, o) for o in offsets)  # DT_NEEDED
    dyn += struct.pack("<qQ", 5, VADDR + strtab_off - load_offset)  # DT_STRTAB
    dyn += struct.pack("<qQ", 0, 0)  # DT_NULL
    size = dyn_off + len(dyn)
    hdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    hdr += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, VADDR, ph_off, 0, 0, 64, 56, phnum, 64, 0, 0)
    phs = struct.pack("<IIQQQQQQ", 1, 5, load_offset, VADDR, VADDR, size - load_offset,
                      size - load_offset, 0x1000)
    if interp:
        phs += struct.pack("<IIQQQQQQ", 3, 4, data_off, VADDR + data_off, 0, len(interp_b),
                           len(interp_b), 1)
    else:
        phs += struct.pack("<IIQQQQQQ", 4, 4, 0, 0, 0, 0, 0, 1)  # PT_NOTE placeholder
    phs += struct.pack("<IIQQQQQQ", 2, 6, dyn_off, VADDR + dyn_off, 0, len(dyn), len(dyn), 8)
    body = hdr + phs + interp_b + strtab
    return body + bytes(dyn_off - len(body)) + dyn

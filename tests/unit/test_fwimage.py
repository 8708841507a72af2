"""CSF firmware container: our builder, the driver's checks (reference §6), fw-info."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from qemu_panthor.cli import main as cli_main
from qemu_panthor.csf.fwimage import (
    CODE_SIGNATURE,
    FirmwareError,
    build_image,
    default_git_sha,
    parse_image,
)
from qemu_panthor.csf.iface import FwConfig
from qemu_panthor.gpu.models import G610

# Reference §6.4, byte for byte.
MINIMAL = bytes.fromhex(
    "6E3AF1C3" "00000000" "00000000" "00000000" "2C000000"
    "00180000" "030000C0" "00000004" "00000104" "2C000000" "2C000000"
)

RD, WR, EX, PROT, SHARED, ZERO = 1, 2, 4, 1 << 5, 1 << 30, 1 << 31


# -- an independent image writer (from the §6 tables, not from the module under test) -------
def ent(etype: int, body: bytes, *, size: int | None = None, optional: bool = False) -> bytes:
    size = 4 + len(body) if size is None else size
    return struct.pack("<I", etype | (size << 8) | (1 << 31 if optional else 0)) + body


def iface(flags: int, va0: int, va1: int, d0: int, d1: int, name: bytes = b"") -> bytes:
    return ent(0, struct.pack("<5I", flags, va0, va1, d0, d1) + name)


SHARED_OK = (RD | WR | SHARED | ZERO, 0x04000000, 0x04010000)


def image(*entries: bytes, hsize: int | None = None, magic: int = 0xC3F13A6E, major: int = 0,
          tail: bytes = b"") -> bytes:
    body = b"".join(entries)
    size = 20 + len(body) if hsize is None else hsize
    return struct.pack("<IBBHIII", magic, 0, major, 0, 0, 0, size) + body + tail


def shared(d0: int = 0, d1: int = 0) -> bytes:
    return iface(*SHARED_OK, d0, d1)


def err(data: bytes) -> str:
    with pytest.raises(FirmwareError) as e:
        parse_image(data)
    return str(e.value)


# -- builder -----------------------------------------------------------------------------------
def test_minimal_reference_image_is_accepted() -> None:
    assert len(MINIMAL) == 0x2C
    img = parse_image(MINIMAL)
    sh = img.shared_section
    assert (sh.va_start, sh.va_end, sh.flags) == (0x04000000, 0x04010000, 0xC0000003)
    assert sh.cache_mode == 0 and sh.data == b"" and img.build_info is None


def test_build_parse_round_trip() -> None:
    data = build_image()
    img = parse_image(data)
    assert img.magic == 0xC3F13A6E and img.major == 0 and img.size <= len(data)
    sh = img.shared_section
    assert sh.va_start == 0x04000000 and sh.va_size == 64 * 1024
    assert sh.flags == RD | WR | SHARED | ZERO  # cache mode NONE -> mapped uncached
    code = [s for s in img.sections if s.va_start == 0]
    assert len(code) == 1
    c = code[0]
    assert c.flags & EX and not c.flags & WR and c.va_size == 0x10000
    assert c.data.startswith(CODE_SIGNATURE) and len(c.data) <= c.va_size
    # BUILD_INFO_METADATA points at "git_sha: <sha>\0" inside the file.
    assert img.build_info == default_git_sha()
    assert b"git_sha: " + default_git_sha().encode() + b"\0" in data
    assert [e.type for e in img.entries] == [0, 0, 6]
    assert img.warnings == []


@pytest.mark.parametrize(("groups", "size"), [(3, 64), (8, 64), (16, 128)])
def test_shared_section_sized_for_group_count(groups: int, size: int) -> None:
    config = dataclasses.replace(FwConfig.from_model(G610), group_num=groups)
    img = parse_image(build_image(config=config))
    assert img.shared_section.va_size == size * 1024


def test_build_for_a_model_uses_its_counts() -> None:
    from qemu_panthor.gpu.models import lookup_model

    img = parse_image(build_image(model=lookup_model("g720"), git_sha="abc"))
    assert img.shared_section.va_size == 128 * 1024 and img.build_info == "abc"


# -- the driver's checks, one crafted image each ------------------------------------------------
def test_header_checks() -> None:
    assert err(MINIMAL[:19]) == "Firmware too small"
    assert err(image(shared(), magic=0x12345678)) == "Invalid firmware magic"
    assert err(image(shared(), major=1)) == (
        "Unsupported firmware binary header version 1.0 (expected 0.x)")
    assert err(image(shared(), hsize=0x2C + 4)) == "Firmware image is truncated"


def test_entry_alignment_and_size() -> None:
    assert err(image(ent(0, bytes(22)))) == (
        "Firmware entry isn't 32 bit aligned, offset=0x14 size=0x1a")
    # The entry must fit in hdr.size (not the file size).
    assert err(image(shared(), hsize=0x2C - 4, tail=bytes(4))) == "Firmware entry too long"
    assert err(image(ent(0, bytes(24), size=0))) == "Firmware entry too long"
    # An entry header cut by hdr.size.
    assert err(image(shared(), bytes(2), hsize=0x2E)) == "Firmware too small"


def test_unknown_entry_types() -> None:
    assert err(image(shared(), ent(5, bytes(4)))) == (
        "Unsupported non-optional entry type 5 in firmware")
    img = parse_image(image(shared(), ent(5, bytes(4), optional=True), ent(1, b""),
                            ent(3, bytes(8))))
    assert [e.type for e in img.entries] == [0, 5, 1, 3]


def test_iface_body_checks_in_driver_order() -> None:
    assert err(image(ent(0, bytes(16)))) == "Firmware too small"
    # data.end < data.start is reported before the misaligned VA in the same entry.
    assert err(image(iface(RD, 0x1001, 0x2000, 8, 4))) == (
        "Firmware corrupted, data.end < data.start (0x4 < 0x8)")
    assert err(image(iface(RD, 0x2000, 0x1000, 0, 0))) == (
        "Firmware corrupted, hdr.va.end < hdr.va.start (0x1000 < 0x2000)")
    assert err(image(iface(RD, 0, 0x1000, 0, 0x100))) == (
        "Firmware corrupted, file truncated? data_end=0x100 > fw size=0x2c")
    assert err(image(iface(RD, 0x800, 0x1000, 0, 0))) == (
        "Firmware corrupted, virtual addresses not page aligned: 0x800-0x1000")
    assert err(image(iface(RD | (1 << 6), 0, 0x1000, 0, 0))) == (
        "Firmware contains interface with unsupported flags (0x41)")
    assert err(image(iface(RD | WR, 0x04000000, 0x04010000, 0, 0))) == (
        "Interface at 0x4000000 must be shared")
    assert "does not fit its virtual range" in err(
        image(shared(), iface(RD, 0, 0x1000, 0, 0x1004), tail=bytes(0x1004)))


def test_protected_section_is_skipped_before_the_shared_check() -> None:
    # A PROT entry at 0x04000000 without SHARED is ignored (warned), not rejected ...
    prot = iface(RD | PROT, 0x04000000, 0x04010000, 0, 0)
    assert err(image(prot)) == "Shared interface region not found"
    img = parse_image(image(prot, shared()))
    assert img.warnings == ["Firmware protected mode entry not be supported, ignoring"]
    assert img.sections[0].skipped == "protected"


def test_overlapping_sections_and_missing_shared_section() -> None:
    assert "overlaps" in err(image(shared(), iface(RD, 0x04008000, 0x04009000, 0, 0)))
    assert err(image(iface(RD | EX, 0, 0x1000, 0, 0))) == "Shared interface region not found"
    # A zero-sized section is not mapped, so it overlaps nothing.
    parse_image(image(shared(), iface(RD, 0x04004000, 0x04004000, 0, 0)))


def test_build_info_entry() -> None:
    meta = b"git_sha: 0123abc\0"
    off = 20 + 24 + 12
    assert parse_image(image(shared(), ent(6, struct.pack("<II", off, len(meta))),
                             tail=meta)).build_info == "0123abc"
    assert err(image(shared(), ent(6, bytes(4)))) == "Firmware too small"
    bad = parse_image(image(shared(), ent(6, struct.pack("<II", 0x1000, 4))))
    assert bad.warnings == ["Firmware build info corrupt"] and bad.build_info is None
    unterminated = parse_image(image(shared(), ent(6, struct.pack("<II", off, 16)), tail=meta))
    assert unterminated.warnings == ["Firmware's git sha is not NULL terminated"]
    other = parse_image(image(shared(), ent(6, struct.pack("<II", off, 4)), tail=b"abcd"))
    assert other.build_info is None and other.warnings == []


def test_garbage_never_escapes_as_other_exceptions() -> None:
    import random

    rnd = random.Random(1234)
    base = bytearray(build_image())
    for _ in range(500):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        data = data[: rnd.randint(0, len(data))] if rnd.random() < 0.2 else data
        try:
            parse_image(bytes(data))
        except FirmwareError:
            pass


# -- fw-info -------------------------------------------------------------------------------
def test_fw_info_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "mali_csffw.bin"
    f.write_bytes(build_image(git_sha="feedc0de"))
    assert cli_main(["fw-info", str(f)]) == 0
    out = capsys.readouterr().out
    assert "magic 0xc3f13a6e" in out and "0x04000000-0x04010000" in out
    assert "RD|WR|SHARED|ZERO|CACHE=NONE" in out and "RD|EX|ZERO|CACHE=CACHED" in out
    assert "BUILD_INFO_METADATA" in out and "git_sha feedc0de" in out


def test_fw_info_invalid_and_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.bin"
    f.write_bytes(image(iface(RD | WR, 0x04000000, 0x04010000, 0, 0)))
    assert cli_main(["fw-info", str(f)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{f}: invalid CSF firmware image: Interface at 0x4000000 must be shared"]
    assert cli_main(["fw-info", str(tmp_path / "nope.bin")]) == 2
    err_out = capsys.readouterr().err
    assert err_out.startswith("qemu-panthor: ") and "nope.bin" in err_out
    assert "Traceback" not in err_out


def test_build_info_entry_is_optional_for_older_drivers() -> None:
    """6.12's panthor rejects unknown non-optional entries (type 6 came later): ours is
    flagged OPTIONAL (entry header bit 31) so both driver generations accept the image."""
    data = build_image()
    size = struct.unpack_from("<I", data, 0x10)[0]
    off, seen = 0x14, []
    while off < size:
        hdr = struct.unpack_from("<I", data, off)[0]
        seen.append((hdr & 0xFF, bool(hdr >> 31 & 1)))
        off += (hdr >> 8) & 0xFF
    assert (6, True) in seen
    assert all(opt is False for etype, opt in seen if etype == 0)

"""The CSF firmware container (``mali_csffw.bin``) as the panthor 7.2 driver parses it (§6).

Layouts are declared with ``construct`` (not a hot path). :func:`build_image` writes *our*
firmware image: a shared interface section at MCU VA 0x04000000 (filled at run time by the
Python MCU model in :mod:`.mcu`), an executable code section holding a recognisable payload,
and a BUILD_INFO_METADATA entry. :func:`parse_image` applies the driver's checks in the
driver's order and raises :class:`FirmwareError` with the driver's message text.
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from construct import Int8ul, Int16ul, Int32ul, Struct

from .. import __version__ as _pkg_version
from ..errors import UserError
from ..gpu.models import DEFAULT_MODEL, GpuModel
from .iface import SHARED_SECTION_VA, FwConfig, SharedLayout

# ---------------------------------------------------------------------------------------------
# Format declarations
# ---------------------------------------------------------------------------------------------
FW_MAGIC = 0xC3F13A6E
FW_HEADER_MAJOR_MAX = 0
FwHeader = Struct(
    "magic" / Int32ul,
    "minor" / Int8ul,
    "major" / Int8ul,
    "padding1" / Int16ul,
    "version_hash" / Int32ul,
    "padding2" / Int32ul,
    "size" / Int32ul,
)
FW_HEADER_SIZE = FwHeader.sizeof()  # 20

EntryHeader = Struct("raw" / Int32ul)
ENTRY_TYPE_IFACE = 0
ENTRY_TYPE_CONFIG = 1
ENTRY_TYPE_FUTF_TEST = 2
ENTRY_TYPE_TRACE_BUFFER = 3
ENTRY_TYPE_TIMELINE_METADATA = 4
ENTRY_TYPE_BUILD_INFO_METADATA = 6
ENTRY_TYPE_NAMES = {0: "IFACE", 1: "CONFIG", 2: "FUTF_TEST", 3: "TRACE_BUFFER",
                    4: "TIMELINE_METADATA", 6: "BUILD_INFO_METADATA"}
ENTRY_UPDATE = 1 << 30
ENTRY_OPTIONAL = 1 << 31
ENTRY_MAX_SIZE = 0xFC

SectionEntryHeader = Struct(
    "flags" / Int32ul,
    "va_start" / Int32ul,
    "va_end" / Int32ul,
    "data_start" / Int32ul,
    "data_end" / Int32ul,
)
SECTION_HDR_SIZE = SectionEntryHeader.sizeof()  # 20
BuildInfoHeader = Struct("meta_start" / Int32ul, "meta_size" / Int32ul)
BUILD_INFO_HDR_SIZE = BuildInfoHeader.sizeof()  # 8
GIT_SHA_PREFIX = b"git_sha: "

IFACE_RD = 1 << 0
IFACE_WR = 1 << 1
IFACE_EX = 1 << 2
IFACE_CACHE_MODE_SHIFT = 3
IFACE_CACHE_MODE_MASK = 0x3 << 3
CACHE_NONE, CACHE_CACHED, CACHE_UNCACHED_COHERENT, CACHE_CACHED_COHERENT = 0, 1, 2, 3
CACHE_MODE_NAMES = ("NONE", "CACHED", "UNCACHED_COHERENT", "CACHED_COHERENT")
IFACE_PROT = 1 << 5
IFACE_SHARED = 1 << 30
IFACE_ZERO = 1 << 31
IFACE_SUPPORTED_FLAGS = (IFACE_RD | IFACE_WR | IFACE_EX | IFACE_CACHE_MODE_MASK | IFACE_PROT
                         | IFACE_SHARED | IFACE_ZERO)
MCU_PAGE_SIZE = 0x1000

CODE_SECTION_VA = 0x00000000
CODE_SECTION_SIZE = 0x10000
CODE_SIGNATURE = b"qemu-panthor CSF firmware model"
CODE_PAYLOAD_SIZE = 0x1000  # signature + description, zero-padded to one page


class FirmwareError(ValueError):
    """The image would be rejected by panthor; the message is the driver's drm_err text."""


# ---------------------------------------------------------------------------------------------
# Parsed representation
# ---------------------------------------------------------------------------------------------
@dataclass
class Entry:
    offset: int
    raw: int

    @property
    def type(self) -> int:
        return self.raw & 0xFF

    @property
    def size(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def update(self) -> bool:
        return bool(self.raw & ENTRY_UPDATE)

    @property
    def optional(self) -> bool:
        return bool(self.raw & ENTRY_OPTIONAL)

    @property
    def type_name(self) -> str:
        return ENTRY_TYPE_NAMES.get(self.type, f"unknown({self.type})")


@dataclass
class Section:
    entry_offset: int
    flags: int
    va_start: int
    va_end: int
    data_start: int
    data_end: int
    name: str
    data: bytes
    skipped: str | None = None  # "protected" for PROT sections (driver ignores them)

    @property
    def va_size(self) -> int:
        return self.va_end - self.va_start

    @property
    def cache_mode(self) -> int:
        return (self.flags & IFACE_CACHE_MODE_MASK) >> IFACE_CACHE_MODE_SHIFT

    @property
    def is_shared(self) -> bool:
        return self.va_start == SHARED_SECTION_VA

    def describe_flags(self) -> str:
        names = [n for bit, n in ((IFACE_RD, "RD"), (IFACE_WR, "WR"), (IFACE_EX, "EX"),
                                  (IFACE_PROT, "PROT"), (IFACE_SHARED, "SHARED"),
                                  (IFACE_ZERO, "ZERO")) if self.flags & bit]
        names.append(f"CACHE={CACHE_MODE_NAMES[self.cache_mode]}")
        return "|".join(names)


@dataclass
class FirmwareImage:
    magic: int
    minor: int
    major: int
    version_hash: int
    size: int
    file_size: int
    entries: list[Entry] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    build_info: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def shared_section(self) -> Section:
        for s in self.sections:
            if s.is_shared and s.skipped is None:
                return s
        raise FirmwareError("Shared interface region not found")

    @property
    def loaded_sections(self) -> list[Section]:
        return [s for s in self.sections if s.skipped is None]


# ---------------------------------------------------------------------------------------------
# Parser: panthor_fw_load() / panthor_fw_load_entry() / panthor_fw_load_section_entry()
# ---------------------------------------------------------------------------------------------
class _Iter:
    """panthor_fw_binary_iter: a bounded cursor over (a window of) the file."""

    __slots__ = ("base", "offset", "size")

    def __init__(self, base: int, size: int) -> None:
        self.base, self.size, self.offset = base, size, 0

    def read(self, data: bytes, n: int) -> bytes:
        new = self.offset + n
        if new > self.size:
            raise FirmwareError("Firmware too small")
        out = data[self.base + self.offset:self.base + new]
        self.offset = new
        return out

    def sub(self, n: int) -> _Iter:
        new = self.offset + n
        if n < 0 or new > self.size:
            raise FirmwareError("Firmware entry too long")
        it = _Iter(self.base + self.offset, n)
        self.offset = new
        return it


def parse_image(data: bytes) -> FirmwareImage:
    """Validate ``data`` exactly as panthor 7.2 does and describe it.

    Raises :class:`FirmwareError` (message = the driver's) for an image the driver rejects.
    """
    data = bytes(data)
    it = _Iter(0, len(data))
    hdr = FwHeader.parse(it.read(data, FW_HEADER_SIZE))
    if hdr.magic != FW_MAGIC:
        raise FirmwareError("Invalid firmware magic")
    if hdr.major != FW_HEADER_MAJOR_MAX:
        raise FirmwareError(
            f"Unsupported firmware binary header version {hdr.major}.{hdr.minor} "
            f"(expected {FW_HEADER_MAJOR_MAX}.x)")
    if hdr.size > len(data):
        # The driver logs this and bails out of the load (with ret still 0, so probe only
        # fails later); report it as the error it is.
        raise FirmwareError("Firmware image is truncated")
    img = FirmwareImage(magic=hdr.magic, minor=hdr.minor, major=hdr.major,
                        version_hash=hdr.version_hash, size=hdr.size, file_size=len(data))
    it.size = hdr.size
    while it.offset < hdr.size:
        _load_entry(img, data, it)
    if not any(s.is_shared and s.skipped is None for s in img.sections):
        raise FirmwareError("Shared interface region not found")
    shared = img.shared_section
    if shared.va_size == 0:
        # Not a driver check: the driver would dereference the missing BO and oops.
        raise FirmwareError("Shared interface region is empty (va.start == va.end)")
    return img


def _load_entry(img: FirmwareImage, data: bytes, it: _Iter) -> None:
    start = it.offset
    raw = EntryHeader.parse(it.read(data, 4)).raw
    ent = Entry(start, raw)
    if it.offset % 4 or ent.size % 4:
        raise FirmwareError(
            f"Firmware entry isn't 32 bit aligned, offset={start:#x} size={ent.size:#x}")
    body = it.sub(ent.size - 4)
    img.entries.append(ent)
    if ent.type == ENTRY_TYPE_IFACE:
        _load_section(img, data, body, ent)
    elif ent.type == ENTRY_TYPE_BUILD_INFO_METADATA:
        _read_build_info(img, data, body)
    elif ent.type in (ENTRY_TYPE_CONFIG, ENTRY_TYPE_FUTF_TEST, ENTRY_TYPE_TRACE_BUFFER,
                      ENTRY_TYPE_TIMELINE_METADATA):
        return
    elif not ent.optional:
        raise FirmwareError(f"Unsupported non-optional entry type {ent.type} in firmware")


def _load_section(img: FirmwareImage, data: bytes, it: _Iter, ent: Entry) -> None:
    h = SectionEntryHeader.parse(it.read(data, SECTION_HDR_SIZE))
    if h.data_end < h.data_start:
        raise FirmwareError(f"Firmware corrupted, data.end < data.start "
                            f"({h.data_end:#x} < {h.data_start:#x})")
    if h.va_end < h.va_start:
        raise FirmwareError(f"Firmware corrupted, hdr.va.end < hdr.va.start "
                            f"({h.va_end:#x} < {h.va_start:#x})")
    if h.data_end > len(data):
        raise FirmwareError(f"Firmware corrupted, file truncated? data_end={h.data_end:#x} "
                            f"> fw size={len(data):#x}")
    if h.va_start % MCU_PAGE_SIZE or h.va_end % MCU_PAGE_SIZE:
        raise FirmwareError(f"Firmware corrupted, virtual addresses not page aligned: "
                            f"{h.va_start:#x}-{h.va_end:#x}")
    if h.flags & ~IFACE_SUPPORTED_FLAGS:
        raise FirmwareError(
            f"Firmware contains interface with unsupported flags ({h.flags:#x})")
    name = data[it.base + it.offset:it.base + it.size].decode("latin-1")
    sec = Section(ent.offset, h.flags, h.va_start, h.va_end, h.data_start, h.data_end, name,
                  data[h.data_start:h.data_end])
    if h.flags & IFACE_PROT:
        img.warnings.append("Firmware protected mode entry not be supported, ignoring")
        sec.skipped = "protected"
        img.sections.append(sec)
        return
    if h.va_start == SHARED_SECTION_VA and not h.flags & IFACE_SHARED:
        raise FirmwareError(f"Interface at {SHARED_SECTION_VA:#x} must be shared")
    if h.data_end - h.data_start > h.va_end - h.va_start:
        raise FirmwareError(
            f"Firmware corrupted, section data (size {h.data_end - h.data_start:#x}) does not "
            f"fit its virtual range (size {h.va_end - h.va_start:#x})")
    if sec.va_size:
        for other in img.loaded_sections:
            if other.va_size and sec.va_start < other.va_end and other.va_start < sec.va_end:
                # Inferred: the fixed-address drm_mm reservation in the MCU VM fails.
                raise FirmwareError(
                    f"Firmware section {sec.va_start:#x}-{sec.va_end:#x} overlaps section "
                    f"{other.va_start:#x}-{other.va_end:#x}")
    img.sections.append(sec)


def _read_build_info(img: FirmwareImage, data: bytes, it: _Iter) -> None:
    h = BuildInfoHeader.parse(it.read(data, BUILD_INFO_HDR_SIZE))
    size = len(data)
    if h.meta_start > size or h.meta_start + h.meta_size > size:
        img.warnings.append("Firmware build info corrupt")
        return
    meta = data[h.meta_start:h.meta_start + h.meta_size]
    if data[h.meta_start:h.meta_start + len(GIT_SHA_PREFIX)] != GIT_SHA_PREFIX:
        return  # not metadata the driver understands
    if h.meta_size == 0 or meta[-1] != 0:
        img.warnings.append("Firmware's git sha is not NULL terminated")
        return
    sha = meta[len(GIT_SHA_PREFIX):].split(b"\0", 1)[0]
    img.build_info = sha.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# Builder: our firmware image
# ---------------------------------------------------------------------------------------------
def default_git_sha() -> str:
    """A stable identifier of this model's version, shaped like a git SHA."""
    return hashlib.sha1(f"qemu-panthor {_pkg_version}".encode()).hexdigest()


def _entry(etype: int, body: bytes, *, optional: bool = False, update: bool = False) -> bytes:
    size = 4 + len(body)
    if size % 4 or size > ENTRY_MAX_SIZE:
        raise ValueError(f"entry size {size} not encodable")
    raw = etype | (size << 8) | (ENTRY_OPTIONAL if optional else 0) | (
        ENTRY_UPDATE if update else 0)
    return EntryHeader.build({"raw": raw}) + body


def _pad_name(name: bytes) -> bytes:
    # The name is the rest of the entry body; pad with NULs to keep the entry 4-aligned.
    return name + b"\0" * (-len(name) % 4)


def code_payload(arch: tuple[int, int], config: FwConfig) -> bytes:
    """Contents of the code section: a signature and a description (the MCU model ignores it)."""
    text = (CODE_SIGNATURE + b"\0" + (
        f"arch {arch[0]}.{arch[1]}; interface v{config.version >> 24}."
        f"{(config.version >> 16) & 0xFF}.{config.version & 0xFFFF}; "
        f"{config.group_num} CSGs x {config.stream_num} CSs; "
        f"qemu-panthor {_pkg_version}\0").encode())
    return text + b"\0" * max(-len(text) % 16, CODE_PAYLOAD_SIZE - len(text))


def build_image(*, arch: tuple[int, int] = (10, 8), config: FwConfig | None = None,
                git_sha: str | None = None, version_hash: int | None = None,
                minor: int = 1, model: GpuModel | None = None) -> bytes:
    """Build our ``mali_csffw.bin`` for a GPU of architecture ``arch``.

    Sections: the shared interface section at 0x04000000 (RD|WR|SHARED|ZERO, cache mode NONE,
    size from :class:`SharedLayout`: 64 KiB for <= 8 CSGs x 8 CSs, 128 KiB for 16 CSGs) and
    a code section at 0x0 (RD|EX|CACHED|ZERO, 64 KiB) with a recognisable payload; plus a
    BUILD_INFO_METADATA entry "git_sha: <sha>". Pass ``model`` (a GpuModel) to size the
    shared section for that model's CSG/CS counts, as :class:`.mcu.CsfFirmware` will use.
    """
    if model is not None:  # its arch and CSG/CS counts
        arch = (model.arch_major, model.arch_minor)
    config = config or FwConfig.from_model(model or DEFAULT_MODEL)
    layout = SharedLayout(config.group_num, config.stream_num)
    layout.check()
    sha = git_sha or default_git_sha()
    payload = code_payload(arch, config)
    build_info = GIT_SHA_PREFIX + sha.encode() + b"\0"
    if version_hash is None:
        version_hash = int(hashlib.sha1(sha.encode()).hexdigest()[:8], 16)

    shared_name = _pad_name(b"qemu-panthor-shared-iface")
    code_name = _pad_name(b"qemu-panthor-mcu-code")
    entries_size = ((4 + SECTION_HDR_SIZE + len(shared_name))
                    + (4 + SECTION_HDR_SIZE + len(code_name)) + (4 + BUILD_INFO_HDR_SIZE))
    hdr_size = FW_HEADER_SIZE + entries_size
    code_off = hdr_size
    info_off = code_off + len(payload)
    total = info_off + len(build_info)
    total += -total % 4

    shared = SectionEntryHeader.build({
        "flags": IFACE_RD | IFACE_WR | IFACE_SHARED | IFACE_ZERO | (CACHE_NONE << 3),
        "va_start": SHARED_SECTION_VA, "va_end": SHARED_SECTION_VA + layout.section_size,
        "data_start": code_off, "data_end": code_off})
    code = SectionEntryHeader.build({
        "flags": IFACE_RD | IFACE_EX | IFACE_ZERO | (CACHE_CACHED << 3),
        "va_start": CODE_SECTION_VA, "va_end": CODE_SECTION_VA + CODE_SECTION_SIZE,
        "data_start": code_off, "data_end": code_off + len(payload)})
    binfo = BuildInfoHeader.build({"meta_start": info_off, "meta_size": len(build_info)})
    out = bytearray(FwHeader.build({
        "magic": FW_MAGIC, "minor": minor, "major": 0, "padding1": 0,
        "version_hash": version_hash, "padding2": 0, "size": hdr_size}))
    out += _entry(ENTRY_TYPE_IFACE, shared + shared_name)
    out += _entry(ENTRY_TYPE_IFACE, code + code_name)
    # OPTIONAL: drivers older than build-info support (6.12) skip it instead of failing.
    out += _entry(ENTRY_TYPE_BUILD_INFO_METADATA, binfo, optional=True)
    assert len(out) == hdr_size
    out += payload + build_info
    out += b"\0" * (total - len(out))
    return bytes(out)


def firmware_path(arch: tuple[int, int]) -> str:
    """Where the driver asks for the image: ``arm/mali/arch<major>.<minor>/mali_csffw.bin``."""
    return f"arm/mali/arch{arch[0]}.{arch[1]}/mali_csffw.bin"


# ---------------------------------------------------------------------------------------------
# fw-info
# ---------------------------------------------------------------------------------------------
def describe(img: FirmwareImage) -> str:
    lines = [
        f"CSF firmware image: {img.file_size} bytes",
        f"  header: magic {img.magic:#010x}, version {img.major}.{img.minor}, "
        f"version_hash {img.version_hash:#010x}, size {img.size:#x}",
        f"  entries: {len(img.entries)}",
    ]
    for e in img.entries:
        extra = []
        if e.optional:
            extra.append("OPTIONAL")
        if e.update:
            extra.append("UPDATE")
        lines.append(f"    @{e.offset:#06x} {e.type_name} size {e.size}"
                     + (f" [{' '.join(extra)}]" if extra else ""))
    lines.append("  sections:")
    for s in img.sections:
        tag = " (shared interface)" if s.is_shared else ""
        if s.skipped:
            tag += f" (skipped: {s.skipped})"
        lines.append(
            f"    {s.va_start:#010x}-{s.va_end:#010x} ({s.va_size // 1024} KiB) "
            f"{s.describe_flags()} data {s.data_start:#x}-{s.data_end:#x} "
            f"({len(s.data)} bytes) name {s.name.rstrip(chr(0))!r}{tag}")
    lines.append(f"  build info: git_sha {img.build_info}" if img.build_info
                 else "  build info: none")
    for w in img.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


def fw_info_main(args: argparse.Namespace) -> int:
    """``qemu-panthor fw-info FILE``: validate and describe an image (exit 0 valid, 1 invalid)."""
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        img = parse_image(data)
    except FirmwareError as e:
        print(f"{path}: invalid CSF firmware image: {e}")
        return 1
    print(describe(img))
    return 0

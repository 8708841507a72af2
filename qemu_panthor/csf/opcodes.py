"""Mali v10 (arch 10.x) command-stream instruction set, declared as data.

Every CS instruction is one little-endian u64 with the opcode in bits [63:56] (Mesa
``v10.xml`` "CS Base"). This module holds the opcode numbers, the enums the operand fields use
and, per opcode, the operand field layout ``name[start:size]`` exactly as the hardware
reference (docs/reference/cs-instructions.md) lists it. The interpreter decodes with shifts and
masks on its hot path; this table drives the disassembler used for logging and documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Op(IntEnum):
    """CS opcodes (bits [63:56])."""

    NOP = 0
    MOVE48 = 1
    MOVE32 = 2
    WAIT = 3
    RUN_COMPUTE = 4
    RUN_TILING = 5
    RUN_IDVS = 6
    RUN_FRAGMENT = 7
    RUN_FULLSCREEN = 8
    FINISH_TILING = 9
    FINISH_FRAGMENT = 11
    ADD_IMMEDIATE32 = 16
    ADD_IMMEDIATE64 = 17
    UMIN32 = 18  # COMPARE_SELECT32
    LOAD_MULTIPLE = 20
    STORE_MULTIPLE = 21
    BRANCH = 22
    SET_SB_ENTRY = 23
    PROGRESS_WAIT = 24
    SET_EXCEPTION_HANDLER = 25
    CALL = 32
    JUMP = 33
    REQ_RESOURCE = 34
    FLUSH_CACHE2 = 36
    SYNC_ADD32 = 37
    SYNC_SET32 = 38
    SYNC_WAIT32 = 39
    STORE_STATE = 40
    PROT_REGION = 41
    PROGRESS_STORE = 42
    PROGRESS_LOAD = 43
    RUN_COMPUTE_INDIRECT = 44
    ERROR_BARRIER = 47
    HEAP_SET = 48
    HEAP_OPERATION = 49
    TRACE_POINT = 50
    SYNC_ADD64 = 51
    SYNC_SET64 = 52
    SYNC_WAIT64 = 53


class Cond(IntEnum):
    """CS Condition enum (BRANCH, SYNC_WAIT)."""

    LEQUAL = 0
    GREATER = 1
    EQUAL = 2
    NEQUAL = 3
    LESS = 4
    GEQUAL = 5
    ALWAYS = 6


class StoreState(IntEnum):
    """STORE_STATE State[32:2]."""

    TIMESTAMP = 0
    CYCLE_COUNT = 1
    DISJOINT_COUNT = 2
    ERROR_STATUS = 3


class SyncScope(IntEnum):
    """SYNC_ADD/SET Scope[1:2]."""

    SYSTEM = 0
    CSG = 2


class HeapOp(IntEnum):
    """HEAP_OPERATION Operation[32:2]."""

    VT_START = 0
    VT_END = 1
    FRAG_END = 3


@dataclass(frozen=True)
class OperandField:
    """One operand field: ``name[start:size]``; kind is imm, simm, reg, pair, enum or flag."""

    name: str
    start: int
    size: int
    kind: str = "imm"

    def get(self, word: int) -> int:
        v = (word >> self.start) & ((1 << self.size) - 1)
        if self.kind == "simm" and v >> (self.size - 1):
            v -= 1 << self.size
        return v


def _f(name: str, start: int, size: int, kind: str = "imm") -> OperandField:
    return OperandField(name, start, size, kind)


_WAIT = _f("wait_mask", 16, 16)
_SIGNAL = _f("signal_slot", 48, 4)
_PROGRESS = _f("progress_inc", 32, 1, "flag")
_SELECTS = (
    _f("srt_select", 40, 2),
    _f("spd_select", 42, 2),
    _f("tsd_select", 44, 2),
    _f("fau_select", 46, 2),
)
_SYNC_UPD = (
    _f("error_propagate", 0, 1, "flag"),
    _f("scope", 1, 2, "enum"),
    _WAIT,
    _SIGNAL,
)
_MULTI = (
    _f("offset", 0, 16, "simm"),
    _f("mask", 16, 16),
    _f("address", 40, 8, "pair"),
    _f("base", 48, 8, "reg"),
)

#: Operand layout per opcode (docs/reference/cs-instructions.md).
FIELDS: dict[int, tuple[OperandField, ...]] = {
    Op.NOP: (),
    Op.MOVE48: (_f("immediate", 0, 48), _f("dst", 48, 8, "pair")),
    Op.MOVE32: (_f("immediate", 0, 32), _f("dst", 48, 8, "reg")),
    Op.WAIT: (_f("wait_mask", 16, 8), _PROGRESS),
    Op.RUN_COMPUTE: (_f("task_increment", 0, 14), _f("task_axis", 14, 2), _PROGRESS, *_SELECTS),
    Op.RUN_TILING: (_f("flags_override", 0, 32), _PROGRESS, *_SELECTS),
    Op.RUN_IDVS: (
        _f("flags_override", 0, 32),
        _PROGRESS,
        _f("malloc_enable", 33, 1, "flag"),
        _f("draw_id_reg_enable", 34, 1, "flag"),
        _f("draw_id", 40, 8, "reg"),
    ),
    Op.RUN_FRAGMENT: (_f("enable_tem", 0, 1, "flag"), _f("tile_order", 4, 4), _PROGRESS),
    Op.RUN_FULLSCREEN: (_f("flags_override", 0, 32), _PROGRESS, _f("dcd", 40, 8, "pair")),
    Op.FINISH_TILING: (_PROGRESS,),
    Op.FINISH_FRAGMENT: (
        _f("increment_frag_completed", 0, 1, "flag"),
        _WAIT,
        _f("last_heap_chunk", 32, 8, "pair"),
        _f("first_heap_chunk", 40, 8, "pair"),
        _SIGNAL,
    ),
    Op.ADD_IMMEDIATE32: (
        _f("immediate", 0, 32, "simm"),
        _f("src", 40, 8, "reg"),
        _f("dst", 48, 8, "reg"),
    ),
    Op.ADD_IMMEDIATE64: (
        _f("immediate", 0, 32, "simm"),
        _f("src", 40, 8, "pair"),
        _f("dst", 48, 8, "pair"),
    ),
    Op.UMIN32: (_f("src1", 32, 8, "reg"), _f("src0", 40, 8, "reg"), _f("dst", 48, 8, "reg")),
    Op.LOAD_MULTIPLE: _MULTI,
    Op.STORE_MULTIPLE: _MULTI,
    Op.BRANCH: (
        _f("offset", 0, 16, "simm"),
        _f("condition", 28, 3, "enum"),
        _f("value", 40, 8, "reg"),
    ),
    Op.SET_SB_ENTRY: (_f("endpoint_entry", 0, 4), _f("other_entry", 4, 4)),
    Op.PROGRESS_WAIT: (_f("queue", 0, 5), _f("src", 40, 8, "pair")),
    Op.SET_EXCEPTION_HANDLER: (
        _f("exception_type", 0, 8),
        _f("length", 32, 8, "reg"),
        _f("address", 40, 8, "pair"),
    ),
    Op.CALL: (_f("length", 32, 8, "reg"), _f("address", 40, 8, "pair")),
    Op.JUMP: (_f("length", 32, 8, "reg"), _f("address", 40, 8, "pair")),
    Op.REQ_RESOURCE: (
        _f("compute", 0, 1, "flag"),
        _f("fragment", 1, 1, "flag"),
        _f("tiler", 2, 1, "flag"),
        _f("idvs", 3, 1, "flag"),
    ),
    Op.FLUSH_CACHE2: (
        _f("l2_flush_mode", 0, 4),
        _f("lsc_flush_mode", 4, 4),
        _f("other_flush_mode", 8, 4),
        _WAIT,
        _f("latest_flush_id", 40, 8, "reg"),
        _SIGNAL,
    ),
    Op.SYNC_ADD32: (*_SYNC_UPD, _f("data", 32, 8, "reg"), _f("address", 40, 8, "pair")),
    Op.SYNC_SET32: (*_SYNC_UPD, _f("data", 32, 8, "reg"), _f("address", 40, 8, "pair")),
    Op.SYNC_WAIT32: (
        _f("error_reject", 0, 1, "flag"),
        _f("condition", 28, 4, "enum"),
        _f("data", 32, 8, "reg"),
        _f("address", 40, 8, "pair"),
    ),
    Op.STORE_STATE: (
        _f("offset", 0, 16, "simm"),
        _WAIT,
        _f("state", 32, 2, "enum"),
        _f("address", 40, 8, "pair"),
        _SIGNAL,
    ),
    Op.PROT_REGION: (_f("size", 0, 16),),
    Op.PROGRESS_STORE: (_f("src", 40, 8, "pair"),),
    Op.PROGRESS_LOAD: (_f("dst", 48, 8, "pair"),),
    Op.RUN_COMPUTE_INDIRECT: (_f("workgroups_per_task", 0, 16), _PROGRESS, *_SELECTS),
    Op.ERROR_BARRIER: (),
    Op.HEAP_SET: (_f("address", 40, 8, "pair"),),
    Op.HEAP_OPERATION: (_WAIT, _f("operation", 32, 2, "enum"), _SIGNAL),
    Op.TRACE_POINT: (
        _WAIT,
        _f("base", 32, 8, "reg"),
        _f("count", 40, 8),
        _SIGNAL,
    ),
    Op.SYNC_ADD64: (*_SYNC_UPD, _f("data", 32, 8, "pair"), _f("address", 40, 8, "pair")),
    Op.SYNC_SET64: (*_SYNC_UPD, _f("data", 32, 8, "pair"), _f("address", 40, 8, "pair")),
    Op.SYNC_WAIT64: (
        _f("error_reject", 0, 1, "flag"),
        _f("condition", 28, 4, "enum"),
        _f("data", 32, 8, "pair"),
        _f("address", 40, 8, "pair"),
    ),
}


def decode(word: int) -> tuple[str, dict[str, int]]:
    """Split an instruction word into its mnemonic and operand fields (unknown -> 'INVALID_xx')."""
    op = (word >> 56) & 0xFF
    fields = FIELDS.get(op)
    if fields is None:
        return f"INVALID_{op:02X}", {"raw": word & ((1 << 56) - 1)}
    return Op(op).name, {f.name: f.get(word) for f in fields}


def disasm(word: int) -> str:
    """One-line disassembly, e.g. ``MOVE32 immediate=0x5 dst=r94``."""
    name, fields = decode(word)
    parts = [name]
    for f in FIELDS.get((word >> 56) & 0xFF, ()):
        v = fields[f.name]
        if f.kind in ("reg", "pair"):
            parts.append(f"{f.name}=r{v}")
        elif f.kind == "simm":
            parts.append(f"{f.name}={v}")
        else:
            parts.append(f"{f.name}={v:#x}")
    if name.startswith("INVALID"):
        parts.append(f"raw={fields['raw']:#x}")
    return " ".join(parts)

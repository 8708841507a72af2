"""JOB_CONTROL of a Job Manager Mali (Midgard/Bifrost), declared as data.

Offsets relative to JOB_CONTROL (GPU window 0x1000), names from panfrost's
``panfrost_regs.h``; docs/reference/mali-g52-jm.md section 3. The JOB_INT quartet is the
block's :class:`~qemu_panthor.irqblock.IrqBlock` at +0x000.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from ..register import Reg, RegAccess

JOB_INT_JS_STATE = 0x010  # bit j: slot j runs a job; bit 16+j: slot j has a job in _NEXT
JOB_INT_THROTTLE = 0x014
JS_BASE = 0x800
JS_STRIDE = 0x80
MAX_JS = 16  # JOB_INT has 16 DONE and 16 FAILED bits


def JOB_INT_DONE(js: int) -> int:
    return 1 << js


def JOB_INT_FAILED(js: int) -> int:
    return 1 << (16 + js)


# Per-slot registers, relative to JS_BASE + js * JS_STRIDE.
JS_HEAD = 0x00
JS_TAIL = 0x08
JS_AFFINITY = 0x10
JS_CONFIG = 0x18
JS_XAFFINITY = 0x1C
JS_COMMAND = 0x20
JS_STATUS = 0x24
JS_HEAD_NEXT = 0x40
JS_AFFINITY_NEXT = 0x50
JS_CONFIG_NEXT = 0x58
JS_COMMAND_NEXT = 0x60
JS_FLUSH_ID_NEXT = 0x70

JS_REGS = (
    Reg("HEAD", JS_HEAD, 64),
    Reg("TAIL", JS_TAIL, 64),
    Reg("AFFINITY", JS_AFFINITY, 64),
    Reg("CONFIG", JS_CONFIG),
    Reg("XAFFINITY", JS_XAFFINITY),
    Reg("COMMAND", JS_COMMAND, access=RegAccess.WO),
    Reg("STATUS", JS_STATUS),
    Reg("HEAD_NEXT", JS_HEAD_NEXT, 64, RegAccess.RW),
    Reg("AFFINITY_NEXT", JS_AFFINITY_NEXT, 64, RegAccess.RW),
    Reg("CONFIG_NEXT", JS_CONFIG_NEXT, access=RegAccess.RW),
    Reg("COMMAND_NEXT", JS_COMMAND_NEXT, access=RegAccess.RW),
    Reg("FLUSH_ID_NEXT", JS_FLUSH_ID_NEXT, access=RegAccess.RW),
)


class JsCommand(IntEnum):
    """JS_COMMAND / JS_COMMAND_NEXT. The _0/_1 stops act only on a job whose JS_CONFIG
    JOB_CHAIN_FLAG is 0 / 1."""

    NOP = 0
    START = 1
    SOFT_STOP = 2
    HARD_STOP = 3
    SOFT_STOP_0 = 4
    HARD_STOP_0 = 5
    SOFT_STOP_1 = 6
    HARD_STOP_1 = 7


#: the stop commands: (SOFT_STOP or HARD_STOP, the JOB_CHAIN_FLAG a chain must have for it
#: to act; None: any chain)
JS_STOPS: dict[int, tuple[JsCommand, int | None]] = {
    JsCommand.SOFT_STOP: (JsCommand.SOFT_STOP, None),
    JsCommand.HARD_STOP: (JsCommand.HARD_STOP, None),
    JsCommand.SOFT_STOP_0: (JsCommand.SOFT_STOP, 0),
    JsCommand.HARD_STOP_0: (JsCommand.HARD_STOP, 0),
    JsCommand.SOFT_STOP_1: (JsCommand.SOFT_STOP, 1),
    JsCommand.HARD_STOP_1: (JsCommand.HARD_STOP, 1),
}

# JS_CONFIG bits. The low 4 bits are the address space the chain runs in.
JS_CONFIG_AS_MASK = 0xF
JS_CONFIG_JOB_CHAIN_FLAG = 1 << 11
JS_CONFIG_DISABLE_DESCRIPTOR_WR_BK = 1 << 15


class JobType(IntEnum):
    """Job Header Type (Bifrost genxml v7)."""

    NOT_STARTED = 0
    NULL = 1
    WRITE_VALUE = 2
    CACHE_FLUSH = 3
    COMPUTE = 4
    VERTEX = 5
    GEOMETRY = 6
    TILER = 7
    FUSED = 8
    FRAGMENT = 9
    INDEXED_VERTEX = 10


class WriteValueType(IntEnum):
    """Write Value Job Payload Type."""

    CYCLE_COUNTER = 1
    SYSTEM_TIMESTAMP = 2
    ZERO = 3
    IMMEDIATE_8 = 4
    IMMEDIATE_16 = 5
    IMMEDIATE_32 = 6
    IMMEDIATE_64 = 7


#: bytes a Write Value job stores, by type (Zero, the counters: 64-bit, inferred)
WRITE_VALUE_SIZE = {
    WriteValueType.CYCLE_COUNTER: 8, WriteValueType.SYSTEM_TIMESTAMP: 8,
    WriteValueType.ZERO: 8, WriteValueType.IMMEDIATE_8: 1, WriteValueType.IMMEDIATE_16: 2,
    WriteValueType.IMMEDIATE_32: 4, WriteValueType.IMMEDIATE_64: 8,
}

# Job Header (32 bytes, 64-byte aligned): exception status (written back), first incomplete
# task, fault pointer (written back), then the control word, dependencies and next.
JOB_HEADER = struct.Struct("<IIQIHHQ")
JOB_HEADER_SIZE = JOB_HEADER.size  # 32
HDR_EXCEPTION_STATUS = 0x00
HDR_FAULT_POINTER = 0x08
HDR_IS_64B = 1 << 0
HDR_TYPE_SHIFT = 1
HDR_TYPE_MASK = 0x7F
# Write Value Job Payload at +32: address, type, (pad), immediate.
WRITE_VALUE_PAYLOAD = struct.Struct("<QIIQ")

"""The GPU's exception code space, declared once (docs/reference/exceptions.md).

One 8-bit code space is shared by every unit that reports a fault: AS_FAULTSTATUS
EXCEPTION_TYPE (MMU), CS_FATAL/CS_FAULT EXCEPTION_TYPE (command streams) and GPU_FAULTSTATUS.
The names are panthor's ``enum drm_panthor_exception_type`` (panthor_device.h; a JM name of
the same code, from panfrost's enum, is an alias: names resolve to panthor's), plus the
TRANSTAB_BUS_FAULT_n codes of the same space (kbase/panfrost) that the MMU reports for a
page-table walk that hits no RAM. The MMU fault families are ``base + level``.
"""

from __future__ import annotations

from enum import IntEnum


class ExceptionType(IntEnum):
    """Exception type codes (``enum drm_panthor_exception_type``, and the Job Manager codes of
    panfrost's ``enum drm_panfrost_exception_type`` that panthor does not name)."""

    OK = 0x00
    DONE = 0x01  # JM: a job or chain completed (JS_STATUS, a job's exception status)
    INTERRUPTED = 0x02
    STOPPED = 0x03  # JM: soft-stopped; JS_TAIL is where the chain resumes
    TERMINATED = 0x04
    KABOOM = 0x05
    EUREKA = 0x06
    ACTIVE = 0x08
    CS_RES_TERM = 0x0F
    MAX_NON_FAULT = 0x3F
    CS_CONFIG_FAULT = 0x40
    JOB_CONFIG_FAULT = 0x40  # the JM name of the same code (panfrost)
    CS_UNRECOVERABLE = 0x41
    JOB_READ_FAULT = 0x42
    JOB_WRITE_FAULT = 0x43
    CS_ENDPOINT_FAULT = 0x44
    CS_BUS_FAULT = 0x48
    JOB_BUS_FAULT = 0x48  # the JM name of the same code (panfrost)
    CS_INSTR_INVALID = 0x49
    CS_CALL_STACK_OVERFLOW = 0x4A
    CS_INHERIT_FAULT = 0x4B
    INSTR_INVALID_PC = 0x50
    INSTR_INVALID_ENC = 0x51
    INSTR_BARRIER_FAULT = 0x55
    DATA_INVALID_FAULT = 0x58
    TILE_RANGE_FAULT = 0x59
    ADDR_RANGE_FAULT = 0x5A
    IMPRECISE_FAULT = 0x5B
    OOM = 0x60
    CSF_FW_INTERNAL_ERROR = 0x68
    CSF_RES_EVICTION_TIMEOUT = 0x69
    GPU_BUS_FAULT = 0x80
    GPU_SHAREABILITY_FAULT = 0x88
    SYS_SHAREABILITY_FAULT = 0x89
    GPU_CACHEABILITY_FAULT = 0x8A
    TRANSLATION_FAULT_0 = 0xC0
    TRANSLATION_FAULT_1 = 0xC1
    TRANSLATION_FAULT_2 = 0xC2
    TRANSLATION_FAULT_3 = 0xC3
    TRANSLATION_FAULT_4 = 0xC4
    PERM_FAULT_0 = 0xC8
    PERM_FAULT_1 = 0xC9
    PERM_FAULT_2 = 0xCA
    PERM_FAULT_3 = 0xCB
    TRANSTAB_BUS_FAULT_0 = 0xD0
    TRANSTAB_BUS_FAULT_1 = 0xD1
    TRANSTAB_BUS_FAULT_2 = 0xD2
    TRANSTAB_BUS_FAULT_3 = 0xD3
    ACCESS_FLAG_1 = 0xD9
    ACCESS_FLAG_2 = 0xDA
    ACCESS_FLAG_3 = 0xDB
    ADDR_SIZE_FAULT_IN = 0xE0
    ADDR_SIZE_FAULT_OUT0 = 0xE4
    ADDR_SIZE_FAULT_OUT1 = 0xE5
    ADDR_SIZE_FAULT_OUT2 = 0xE6
    ADDR_SIZE_FAULT_OUT3 = 0xE7
    MEM_ATTR_FAULT_0 = 0xE8
    MEM_ATTR_FAULT_1 = 0xE9
    MEM_ATTR_FAULT_2 = 0xEA
    MEM_ATTR_FAULT_3 = 0xEB


#: Base codes of the per-level MMU fault families: code = base + level. Plain ints, like every
#: code the MMU produces: its hot paths tell a fault code from a TLB entry by ``is int``.
TRANSLATION_FAULT = int(ExceptionType.TRANSLATION_FAULT_0)
PERM_FAULT = int(ExceptionType.PERM_FAULT_0)
TRANSTAB_BUS_FAULT = int(ExceptionType.TRANSTAB_BUS_FAULT_0)
ACCESS_FLAG = int(ExceptionType.ACCESS_FLAG_1) - 1
ADDR_SIZE_FAULT_IN = int(ExceptionType.ADDR_SIZE_FAULT_IN)
ADDR_SIZE_FAULT_OUT = int(ExceptionType.ADDR_SIZE_FAULT_OUT0)
#: The bus fault of a GPU access (not a table walk) that hits no RAM.
GPU_BUS_FAULT = int(ExceptionType.GPU_BUS_FAULT)

_NAMES: dict[int, str] = {int(e): e.name for e in ExceptionType}


def exception_name(code: int) -> str:
    """The code's name, for logs and introspection (``UNKNOWN_0x..`` if it has none)."""
    return _NAMES.get(code, f"UNKNOWN_{code:#04x}")

"""GPU models: identity decoding, firmware path, and panthor's model-name table (§1.3, §1.5)."""

from __future__ import annotations

import dataclasses

import pytest

from qemu_panthor.csf.iface import FwConfig
from qemu_panthor.gpu.models import (
    G610,
    MODELS,
    GpuModel,
    lookup_model,
    panfrost_model_name,
    panthor_model_name,
)
from qemu_panthor.gpu.regs import Family

CSF_MODELS = sorted(k for k, m in MODELS.items() if m.family == Family.CSF)
JM_MODELS = sorted(k for k, m in MODELS.items() if m.family == Family.JM)

# MODULE_FIRMWARE entries of panthor 7.2 (§1.3).
MODULE_FIRMWARE = {
    f"arm/mali/arch{v}/mali_csffw.bin"
    for v in ("10.8", "10.10", "10.12", "11.8", "12.8", "13.8", "14.8")
}


def oracle_name(gpu_id: int, shader_present: int, gpu_features: int) -> str:
    """§1.5 table written out independently of the product code."""
    arch = gpu_id >> 28
    prod = (gpu_id >> 16) & 0xF
    cores = bin(shader_present).count("1")
    ray = (gpu_features >> 2) & 1 == 1
    if arch == 10:
        return {2: "Mali-G710", 3: "Mali-G510", 4: "Mali-G310", 7: "Mali-G610"}.get(
            prod, "(Unknown Mali GPU)"
        )
    if arch == 11:
        if prod == 2:
            if cores >= 10 and ray:
                return "Mali-G715-Immortalis"
            if cores >= 7:
                return "Mali-G715"
            return "Mali-G615"
        return "Mali-G615" if prod == 3 else "(Unknown Mali GPU)"
    if arch == 12:
        if prod == 0:
            if cores >= 10 and ray:
                return "Mali-G720-Immortalis"
            return "Mali-G720" if cores >= 6 else "Mali-G620"
        return "Mali-G620" if prod == 1 else "(Unknown Mali GPU)"
    if arch == 13:
        if prod == 0:
            if cores >= 10 and ray:
                return "Mali-G925-Immortalis"
            return "Mali-G725" if cores >= 6 else "Mali-G625"
        return "Mali-G625" if prod == 1 else "(Unknown Mali GPU)"
    if arch == 14:
        return {0: "Mali-G1-Ultra", 1: "Mali-G1-Premium", 3: "Mali-G1-Pro"}.get(
            prod, "(Unknown Mali GPU)"
        )
    return "(Unknown Mali GPU)"


def test_g610_identity_matches_reference_values() -> None:
    m = MODELS["g610"]
    # §2.8 / §11 example set
    assert m.gpu_id == 0xA8670005
    assert m.mmu_features == 0x2830
    assert m.as_present == 0xFF
    assert m.shader_present == 0x50005
    assert (m.l2_present, m.tiler_present) == (1, 1)
    assert m.l2_features == 0x07120306
    assert m.tiler_features == 0x809
    assert m.mem_features == 0x301
    assert m.gpu_features == 0
    assert (m.arch_major, m.arch_minor, m.arch_rev, m.prod_major) == (10, 8, 6, 7)
    assert (m.va_bits, m.pa_bits) == (48, 40)
    assert m.firmware_path == "arm/mali/arch10.8/mali_csffw.bin"
    assert m.model_name == "Mali-G610"
    # firmware interface as G610 firmware reports it (§2.8): v1.1.0, instr features 0x71
    assert FwConfig.from_model(m).version == 0x01010000
    assert m.instr_features == 0x71
    # §7.4 suggested CS features for 96 regs / 8 scoreboards
    assert FwConfig.from_model(m).cs_features == 0x0007085F
    assert 1 << 6 == 64 == 1 << (m.l2_features & 0xFF)  # 64-byte cache lines


@pytest.mark.parametrize("key", CSF_MODELS)
def test_every_model_is_accepted_by_the_driver_rules(key: str) -> None:
    m = MODELS[key]
    assert 10 <= m.arch_major <= 14  # panthor_hw_match: v10 ops for 10..13, v14 for 14
    assert m.firmware_path in MODULE_FIRMWARE
    assert m.as_present & 1 and m.as_present & 0xFFFFFFFE
    assert m.as_present & (m.as_present + 1) == 0  # contiguous from bit 0
    assert m.pa_bits in (32, 36, 40, 42, 44) or m.pa_bits >= 48
    assert m.va_bits <= 48
    assert m.model_name == oracle_name(m.gpu_id, m.shader_present, m.gpu_features)
    assert m.model_name != "(Unknown Mali GPU)"
    assert 3 <= m.csg_count <= 31 and 8 <= m.cs_per_csg <= 32
    assert m.csg_suspend_size > 0 and m.csg_protm_suspend_size > 0


def test_g52_identity_is_the_rk3568_boot_log() -> None:
    """The values panfrost prints at boot on a real RK3568 (reference/mali-g52-jm.md §1):
    "mali-g52 id 0x7402 major 0x1 minor 0x0 status 0x0", "Features: L2:0x07110206
    Shader:0x00000002 Tiler:0x00000209 Mem:0x1 MMU:0x00002823 AS:0xff JS:0x7",
    "shader_present=0x1 l2_present=0x1"."""
    m = MODELS["g52"]
    assert m.family == Family.JM and m.driver == "panfrost"
    assert m.gpu_id >> 16 == 0x7402
    rev = m.gpu_id & 0xFFFF
    assert ((rev >> 12) & 0xF, (rev >> 4) & 0xFF, rev & 0xF) == (1, 0, 0)
    assert (m.l2_features, m.core_features, m.tiler_features, m.mem_features) == (
        0x07110206, 0x2, 0x209, 0x1)
    assert (m.mmu_features, m.as_present, m.js_present) == (0x2823, 0xFF, 0x7)
    assert (m.shader_present, m.l2_present) == (0x1, 0x1)
    assert m.model_name == "mali-g52"
    assert len(m.js_features) == 3 and m.csf_id == 0
    assert lookup_model("RK3568") is m


def test_panfrost_model_lookup() -> None:
    """panfrost_model_eq: an id with bits 15:12 set matches a model under mask 0xF00F; older
    Midgard ids match exactly; T60x's 0x6956 is read as 0x600."""
    assert panfrost_model_name(0x74021000) == "mali-g52"  # G52 r1 (RK3568)
    assert panfrost_model_name(0x72120000) == "mali-g52"  # G52 r0: 0x7212 & 0xF00F = 0x7002
    assert panfrost_model_name(0x70930000) == "mali-g31"
    assert panfrost_model_name(0x60000000) == "mali-g71"
    assert panfrost_model_name(0x08600000) == "mali-t860"
    assert panfrost_model_name(0x69560000) == "mali-t600"
    assert panfrost_model_name(0x08610000) == "(unknown)"  # Midgard ids match exactly
    assert panfrost_model_name(0x7FF40000) == "(unknown)"


@pytest.mark.parametrize("key", JM_MODELS)
def test_jm_models_are_consistent(key: str) -> None:
    m = MODELS[key]
    assert 6 <= m.arch_major <= 9
    assert m.js_present & 1 and m.js_present & (m.js_present + 1) == 0
    assert len(m.js_features) == bin(m.js_present).count("1")
    assert m.csf_id == 0 and m.gpu_features == 0
    with pytest.raises(ValueError, match="JS_PRESENT"):
        dataclasses.replace(m, js_present=0x5)
    with pytest.raises(ValueError, match="one value per slot"):
        dataclasses.replace(m, js_features=m.js_features[:-1])
    with pytest.raises(ValueError, match="no job slots"):
        dataclasses.replace(G610, js_present=1, js_features=(0x7E,))


def test_second_model_is_another_arch_with_its_own_firmware() -> None:
    other = [m for m in MODELS.values() if m.arch_major != 10]
    assert other, "need a non-arch-10 model so nothing is G610-only by accident"
    g720 = MODELS["g720"]
    assert (g720.arch_major, g720.arch_minor) == (12, 8)
    assert g720.firmware_path == "arm/mali/arch12.8/mali_csffw.bin"
    assert g720.model_name == "Mali-G720"
    assert g720.firmware_path != G610.firmware_path


def test_model_name_table() -> None:
    shapes = [
        (0x1, 0),
        (0x3F, 0),
        (0x7F, 0),
        (0x3FF, 0),
        (0x3FF, 0x4),
        (0x1FF, 0x4),
        (0xFFFF, 0x20),
    ]
    for arch in range(9, 16):
        for prod in range(16):
            for shader_present, features in shapes:
                gpu_id = (arch << 28) | (8 << 24) | (prod << 16) | 0x5
                want = oracle_name(gpu_id, shader_present, features)
                assert panthor_model_name(gpu_id, shader_present, features) == want, hex(gpu_id)


def test_known_names_spot_checks() -> None:
    assert panthor_model_name(0xA8670005, 0x50005, 0) == "Mali-G610"
    assert panthor_model_name(0xB8020000, 0x3FF, 0x4) == "Mali-G715-Immortalis"
    assert panthor_model_name(0xB8020000, 0x3FF, 0x0) == "Mali-G715"
    assert panthor_model_name(0xB8020000, 0x3F, 0x4) == "Mali-G615"
    assert panthor_model_name(0xE8030000, 0x1, 0) == "Mali-G1-Pro"
    assert panthor_model_name(0xA8090000, 0x1, 0) == "(Unknown Mali GPU)"


@pytest.mark.parametrize(
    "change",
    [
        {"gpu_id": 0},
        {"gpu_id": 0x98670005},  # arch 9
        {"gpu_id": 0xF8000000},  # arch 15: panthor 7.2 drives 10..14
        {"as_present": 0x1},  # needs an AS besides the MCU's
        {"as_present": 0x5},  # not contiguous
        {"mmu_features": 0x2730},  # PA 39
        {"mmu_features": 0x2831},  # VA 49
        {"gpu_features": 0x4},  # arch 10 has no GPU_FEATURES
        {"csg_count": 2},
        {"cs_per_csg": 4},
        {"csg_suspend_size": 0},
        {"l2_present": 0},
        {"scoreboards": 9},  # WAIT's mask has 8 bits (v10.xml)
        {"glb_version": (4, 0, 0)},  # CSG priority moves to endpoint_req2 (not modelled)
    ],
)
def test_inconsistent_models_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="inconsistent"):
        dataclasses.replace(G610, **change)  # type: ignore[arg-type]


def test_lookup_by_key_and_alias() -> None:
    assert lookup_model("G610") is G610
    assert lookup_model("rk3588") is G610
    assert lookup_model("mali-g720") is MODELS["g720"]
    with pytest.raises(KeyError, match="g610"):
        lookup_model("g999")
    assert isinstance(G610, GpuModel)

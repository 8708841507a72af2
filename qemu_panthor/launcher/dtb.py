"""A boot device tree that already describes the GPU, for kernels without CONFIG_OF_DYNAMIC
(Debian 6.12), where the glue module cannot create its nodes at run time.

QEMU's own tree for the exact machine is dumped (``-machine dumpdtb=``), the GPU's nodes are
added as the glue expects them (guest/glue/README.md) and the result is passed with ``-dtb``.
QEMU still fills in /chosen (command line, initrd) itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..errors import UserError
from ..setup.toolroot import ToolRoot

# PCI 0000:00:02.0, where the launcher places the GPU function: the glue's node id is
# (domain << 16) | (bus << 8) | devfn.
GPU_PCI_ADDR = "02.0"
GPU_NODE_ID = 0x10
CLOCK_HZ = 800_000_000
MICROVOLT = 800_000


#: the gpu node's compatible and clock name for each driver (as the glue builds them)
_GPU_NODE = {
    "panthor": ('"rockchip,rk3588-mali", "arm,mali-valhall-csf"', "core"),
    "panfrost": ('"rockchip,rk3568-mali", "arm,mali-bifrost"', "gpu"),
}


def gpu_fragment(*, coherent: bool, driver: str = "panthor", node_id: int = GPU_NODE_ID,
                 clock_hz: int = CLOCK_HZ) -> str:
    """The glue's nodes, plus a fixed "mali" supply (a root-level regulator-fixed device, so
    it is populated at boot; 6.12's panthor requires the supply, 7.2's tolerates its absence).
    The gpu node says dma-coherent or dma-noncoherent: QEMU's virt root node is dma-coherent
    and would otherwise make the GPU coherent.
    """
    nid = f"{node_id:x}"
    compatible, clock_name = _GPU_NODE[driver]
    return f"""
/ {{
    qp_vdd_{nid}: qemu-panthor-vdd-{nid} {{
        compatible = "regulator-fixed";
        regulator-name = "qemu-panthor-{nid}-vdd";
        regulator-min-microvolt = <{MICROVOLT}>;
        regulator-max-microvolt = <{MICROVOLT}>;
        regulator-always-on;
    }};
    qemu-panthor@{nid} {{
        qp_clk_{nid}: core-clock {{
            compatible = "fixed-clock";
            #clock-cells = <0>;
            clock-frequency = <{clock_hz}>;
            clock-output-names = "qemu-panthor-{nid}-core";
        }};
        qp_opp_{nid}: opp-table {{
            compatible = "operating-points-v2";
            opp-{clock_hz} {{
                opp-hz = /bits/ 64 <{clock_hz}>;
                opp-microvolt = <{MICROVOLT}>;
            }};
        }};
        gpu {{
            compatible = {compatible};
            clocks = <&qp_clk_{nid}>;
            clock-names = "{clock_name}";
            operating-points-v2 = <&qp_opp_{nid}>;
            mali-supply = <&qp_vdd_{nid}>;
            {"dma-coherent;" if coherent else "dma-noncoherent;"}
        }};
    }};
}};
"""


async def _run(argv: list[str], what: str, stdin: bytes | None = None) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    if proc.returncode != 0:
        raise UserError(f"{what} failed (exit {proc.returncode}): {err.decode().strip()}")
    return out


async def build_boot_dtb(root: ToolRoot, machine_argv: list[str], out: Path, *,
                         coherent: bool, driver: str = "panthor") -> Path:
    """``machine_argv``: the QEMU command line without the GPU device and QMP."""
    raw = out.with_suffix(".qemu.dtb")
    await _run([*machine_argv, "-machine", f"dumpdtb={raw}"], "QEMU dumpdtb")
    dtc = root.run_argv("usr/bin/dtc")
    dts = await _run([*dtc, "-q", "-I", "dtb", "-O", "dts", str(raw)], "dtc (decompile)")
    dts += gpu_fragment(coherent=coherent, driver=driver).encode()
    await _run([*dtc, "-q", "-I", "dts", "-O", "dtb", "-o", str(out), "-"], "dtc (compile)",
               stdin=dts)
    return out

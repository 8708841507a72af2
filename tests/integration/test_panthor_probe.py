"""[gpu]/[glue]/[firmware] seen from the host: the unmodified panthor probes our emulated
GPU through firmware boot ("first light"), with no timeouts or errors in its log."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.integration

# The one error line panthor prints on every board without a "mali" supply: the OPP core
# reports the missing regulator, and panthor tolerates -ENODEV (reference §1.2).
HARMLESS = re.compile(r"no regulator \(mali\) found")


async def test_panthor_probes_g610(boot_guest, images) -> None:
    r = await boot_guest(run="none", timeout=240)
    text = "\n".join(r.console)
    assert r.rc == 0, text[-3000:]
    assert "panthor_glue 0000:00:02.0: created device-tree nodes" in text, text[-3000:]
    assert re.search(r"panthor qemu-panthor\.\d+: \[drm\] Mali-G610 id 0xa867 major 0x0 "
                     r"minor 0x0 status 0x5", text)
    assert "Features: L2:0x7120306 Tiler:0x809 Mem:0x301 MMU:0x2830 AS:0xff" in text
    assert "shader_present=0x50005 l2_present=0x1 tiler_present=0x1" in text
    assert "CSF FW using interface v1.1.0, Features 0x0 Instrumentation features 0x71" in text
    assert re.search(r"Initialized panthor 1\.\d+\.\d+ for qemu-panthor\.\d+ on minor 0", text)
    bad = [line for line in r.console
           if re.search(r"\bpanthor qemu-panthor\.\d+:", line)
           and re.search(r"timeout|timed out|failed|error", line, re.I)
           and not HARMLESS.search(line)]
    assert not bad, "\n".join(bad)
    # query-pci through qemu.qmp listed our function (Arm vendor, processing accelerator).
    gpu = [d for d in r.pci if d["id"]["vendor"] == 0x13B5]
    assert gpu and gpu[0]["id"]["device"] == 0xC5F0


async def test_coherent_option_marks_the_gpu_dma_coherent(boot_guest) -> None:
    """boot --coherent: the glue adds dma-coherent (the GPU reports ACE-Lite) and panthor
    probes and runs a job that way too."""
    r = await boot_guest(run="selftests", timeout=240, coherent=True,
                         append="qp.only=kmsg_probe_clean,job_store_deadbeef")
    text = "\n".join(r.console)
    assert r.rc == 0, text[-3000:]
    bound = [line for line in r.console if "panthor_glue: bound" in line]
    assert bound and "COHERENCY_FEATURES 0x1 dma-coherent" in bound[0], bound


async def test_second_model_probes(boot_guest) -> None:
    """A part of another architecture (arch 12) probes too: nothing is G610-only."""
    r = await boot_guest(run="none", gpu="g720", timeout=240)
    text = "\n".join(r.console)
    assert r.rc == 0, text[-3000:]
    assert re.search(r"\[drm\] Mali-G720 id 0xc", text), text[-3000:]
    assert "Initialized panthor" in text


async def test_arch14_part_runs_through_pwr_control(boot_guest) -> None:
    """An arch 14 part (Mali-G1-Pro): panthor 7.2 takes its PWR_CONTROL path (power-up of L2
    and delegation at probe, RESET_SOFT through PWR_COMMAND on a GPU reset) and runs jobs,
    runtime PM cycles and a reset on it."""
    r = await boot_guest(run="selftests", gpu="g1-pro", timeout=300,
                         append="qp.only=kmsg_probe_clean,query_gpu_info,job_store_deadbeef,"
                                "runtime_pm_cycles,gpu_reset_recovery")
    text = "\n".join(r.console)
    assert r.rc == 0, text[-3000:]
    assert re.search(r"\[drm\] Mali-G1-Pro id 0xe803 ", text), text[-3000:]
    assert "shader_present=0x30003 l2_present=0x1 tiler_present=0x1" in text, text[-3000:]
    for t in ("kmsg_probe_clean", "query_gpu_info", "job_store_deadbeef", "runtime_pm_cycles",
              "gpu_reset_recovery"):
        assert re.search(rf"^ok \d+ {t}$", text, re.M), t
    assert not re.search(r"PWR_IRQ|domain (power in transition|retract pending)|RESET timed "
                         r"out|not allowed", text), text[-3000:]


async def test_panthor_probes_on_612_line(boot_guest_612, images_612) -> None:
    """Debian 6.12: the glue takes its nodes from the boot device tree (no OF_DYNAMIC) and
    the older panthor needs a "mali" supply; it probes through firmware boot too."""
    r = await boot_guest_612(run="none", timeout=240)
    text = "\n".join(r.console)
    assert r.rc == 0, text[-3000:]
    assert f"kernel={images_612.kver}" in text
    assert "using boot device-tree node /qemu-panthor@10/gpu" in text, text[-3000:]
    assert "CSF FW v1.1.0, Features 0x0 Instrumentation features 0x71" in text, text[-3000:]
    assert re.search(r"Initialized panthor 1\.\d+\.\d+ for qemu-panthor\.\d+ on minor 0", text)
    bad = [line for line in r.console
           if re.search(r"\bpanthor qemu-panthor\.\d+:", line)
           and re.search(r"timeout|timed out|failed|error", line, re.I)]
    assert not bad, "\n".join(bad)


async def test_trace_shows_panthor_probe_reads(images) -> None:
    """`boot --trace`: the backend log names panthor's first GPU_CONTROL reads, in the order
    panthor_hw_init issues them (reference §1.4)."""
    import shutil

    from qemu_panthor.launcher.boot import Boot

    b = Boot(images, gpu="g610", run="none", qmp=None, trace=True, timeout=240, append="",
             echo=False, keep=True)
    try:
        r = await b.run()
        assert r.rc == 0, "\n".join(r.console[-30:])
        log = (b.run_dir / "backend.log").read_text()
    finally:
        shutil.rmtree(b.run_dir, ignore_errors=True)
    reads = re.findall(r"R32 (\w+) = (0x[0-9a-f]+)", log)
    names = [n for n, _ in reads]
    assert ("GPU_ID", "0xa8670005") in reads
    order = ["GPU_ID", "CSF_ID", "GPU_REVID", "CORE_FEATURES", "L2_FEATURES",
             "TILER_FEATURES", "MEM_FEATURES", "MMU_FEATURES"]
    start = names.index("CSF_ID") - 1
    assert names[start:start + len(order)] == order, names[:40]
    assert re.search(r"IRQ|irq", log), "no interrupt trace lines"

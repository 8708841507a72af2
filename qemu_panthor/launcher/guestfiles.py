"""What the launcher puts into the guest's initramfs besides the image pipeline's base (busybox,
modules, /init): our firmware image, the selftests and what they must find."""

from __future__ import annotations

import re

from ..setup import recipes
from ..setup.pipeline import Images

# The virtio-9p mount tag of a userland (setup/userland.py) the guest chroots into.
USERLAND_TAG = "qpuserland"


def firmware_files(gpu: str) -> dict[str, bytes]:
    """Our firmware image, at the path panthor requests for this GPU's architecture (none
    for a Job Manager GPU: panfrost loads no firmware)."""
    from ..csf.fwimage import build_image
    from ..gpu.models import MODELS
    from ..gpu.regs import Family

    model = MODELS[gpu]
    if model.family != Family.CSF:
        return {}
    return {model.firmware_path: build_image(model=model)}


def gpu_driver(gpu: str) -> str:
    """The Linux driver that binds this GPU model (panthor or panfrost)."""
    from ..gpu.models import MODELS

    return MODELS[gpu].driver


def gpu_expectations(gpu: str) -> bytes:
    """What the in-guest selftests must find (KEY=VALUE lines): the GPU model's identity."""
    from ..gpu.models import MODELS

    m = MODELS[gpu]
    values = {
        "GPU_MODEL": m.key, "GPU_NAME": m.model_name, "DRIVER": m.driver, "GPU_ID": m.gpu_id,
        "GPU_REV": m.gpu_revid, "CSF_ID": m.csf_id, "L2_FEATURES": m.l2_features,
        "TILER_FEATURES": m.tiler_features, "MEM_FEATURES": m.mem_features,
        "MMU_FEATURES": m.mmu_features, "THREAD_FEATURES": m.thread_features,
        "MAX_THREADS": m.thread_max_threads, "THREAD_MAX_WORKGROUP_SIZE":
        m.thread_max_workgroup_size, "THREAD_MAX_BARRIER_SIZE": m.thread_max_barrier_size,
        "COHERENCY_FEATURES": m.coherency_features, "AS_PRESENT": m.as_present,
        "SHADER_PRESENT": m.shader_present, "L2_PRESENT": m.l2_present,
        "TILER_PRESENT": m.tiler_present, "CORE_FEATURES": m.core_features,
        "CSG_COUNT": m.csg_count,
        "CS_PER_CSG": m.cs_per_csg, "CS_REG_COUNT": m.cs_reg_count,
        "SCOREBOARDS": m.scoreboards, "TIMESTAMP_HZ": m.timestamp_hz,
        "JS_PRESENT": m.js_present, "STACK_PRESENT": m.stack_present,
        "THREAD_TLS_ALLOC": m.thread_tls_alloc, "AFBC_FEATURES": m.afbc_features,
        **{f"JS_FEATURES{n}": v for n, v in enumerate(m.js_features)},
        **{f"TEXTURE_FEATURES{n}": v for n, v in enumerate(m.texture_features)},
    }
    lines = [f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v}" for k, v in values.items()]
    return ("\n".join(lines) + "\n").encode()


def guest_files(images: Images, gpu: str) -> dict[str, tuple[bytes, int]]:
    """The selftest suite (the built C binary, else the shell probe) and its expectations."""
    files = {"etc/qp/gpu.env": (gpu_expectations(gpu), 0o644)}
    st = images.selftests or recipes.GUEST_DIR / "selftests" / "qp-selftests"
    if st.is_file():
        files["bin/qp-selftests"] = (st.read_bytes(), 0o755)
    return files


def userland_guest_files(runner: str) -> dict[str, tuple[bytes, int]]:
    """A userland runner (guest/<runner>, installed as /bin/qp-<runner>) and the shell library
    that mounts the share (guest/userland.sh)."""
    return {f"bin/qp-{runner}": ((recipes.GUEST_DIR / runner).read_bytes(), 0o755),
            "lib/qp/userland.sh": ((recipes.GUEST_DIR / "userland.sh").read_bytes(), 0o644)}


def runner_output(console: list[str], runner: str) -> tuple[list[str], int | None]:
    """What a userland runner printed, by the protocol of guest/vulkaninfo and guest/vkmark:
    its program's lines as ``# RUNNER LINE``, then ``# RUNNER-exit rc=N``. The lines and N
    (None: the runner never finished)."""
    line_re = re.compile(rf"^# {re.escape(runner)} (.*)$")
    exit_re = re.compile(rf"^# {re.escape(runner)}-exit rc=(-?\d+)")
    out: list[str] = []
    rc = None
    for line in console:
        m = exit_re.match(line)
        if m:
            rc = int(m.group(1))
            continue
        m = line_re.match(line)
        if m:
            out.append(m.group(1))
    return out, rc


__all__ = ["USERLAND_TAG", "firmware_files", "gpu_driver", "gpu_expectations", "guest_files",
           "runner_output", "userland_guest_files"]

"""[devkernel] `boot --kernel PATH` and `kernel build`, without building or booting: the config
check names what is missing in one line, the module chain comes from the tree, fragments
merge and are checked, the build key follows source, patches and config."""

from __future__ import annotations

from pathlib import Path

import pytest

from qemu_panthor.cli import main
from qemu_panthor.errors import UserError
from qemu_panthor.setup import kconfig
from qemu_panthor.setup.cache import Cache
from qemu_panthor.setup.initramfs import InitramfsSpec, build_initramfs, parse_modules_dep
from qemu_panthor.setup.kernel import kernel_version, plan
from qemu_panthor.setup.recipes import guest_arch, guest_arches
from qemu_panthor.setup.tree import (
    _userspace_header,
    chain_modules_dep,
    find_tree,
    is_tree_arg,
    stage_modules,
)

CHAIN = {  # path in the build dir -> depends= (module names as modinfo gives them)
    "drivers/gpu/drm/drm.ko": "",
    "drivers/gpu/drm/drm_exec.ko": "",
    "drivers/gpu/drm/scheduler/gpu-sched.ko": "drm",
    "drivers/gpu/drm/drm_gpuvm.ko": "drm,drm_exec",
    "drivers/gpu/drm/panthor/panthor.ko": "drm,drm_exec,gpu-sched,drm_gpuvm",
    "drivers/gpu/drm/unrelated.ko": "drm",
}


def base_values(**changes: str) -> dict[str, str]:
    values = kconfig.merge(kconfig.resolve_fragments(["default"]))
    values.update(ARM64="y", SYSFS="y", PROC_FS="y", PCI="y")
    for k, v in changes.items():
        if v == "n":
            values.pop(k, None)
        else:
            values[k] = v
    return values


def fake_ko(name: str, depends: str) -> bytes:
    return (b"\x7fELF" + b"\0" * 60 + b"license=GPL\0" + f"depends={depends}\0".encode()
            + b"vermagic=7.2.13-qp SMP preempt mod_unload aarch64\0" + f"name={name}\0".encode())


def make_build_dir(tmp: Path, chain: dict[str, str] | None = None, **changes: str) -> Path:
    d = tmp / "out"
    (d / "arch/arm64/boot").mkdir(parents=True)
    (d / "arch/arm64/boot/Image").write_bytes(b"ARM\x64")
    (d / "Makefile").write_text("include /src/Makefile\n")
    (d / "include/config").mkdir(parents=True)
    (d / "include/config/kernel.release").write_text("7.2.13-qp\n")
    (d / ".config").write_text(kconfig.render_fragment(base_values(**changes)))
    order = []
    for rel, deps in (CHAIN if chain is None else chain).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(fake_ko(Path(rel).stem, deps))
        order.append(rel.removesuffix(".ko") + ".o")
    (d / "modules.order").write_text("\n".join(order) + "\n")
    (d / "modules.builtin").write_text("kernel/drivers/devfreq/governor_simpleondemand.ko\n")
    return d


def test_missing_panthor_is_one_clear_error(tmp_path, capsys) -> None:
    d = make_build_dir(tmp_path, DRM_PANTHOR="n", PCI_MSI="n")
    rc = main(["boot", "--kernel", str(d)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1, err
    assert f"kernel tree {d} (.config) cannot run on qemu-panthor" in err
    assert "CONFIG_DRM_PANTHOR (the driver under test)" in err
    assert "CONFIG_PCI_MSI" in err
    assert "Traceback" not in err


def test_no_of_dynamic_needs_the_boot_dtb_path() -> None:
    v = base_values(OF_DYNAMIC="n", OF_OVERLAY="n")
    assert kconfig.check_boot_config(v, "t").boot_dtb_nodes
    v.pop("REGULATOR_FIXED_VOLTAGE")
    with pytest.raises(UserError, match="CONFIG_OF_DYNAMIC or CONFIG_REGULATOR_FIXED_VOLTAGE"):
        kconfig.check_boot_config(v, "t")
    assert not kconfig.check_boot_config(base_values(), "t").boot_dtb_nodes


def test_clang_trees_are_refused() -> None:
    with pytest.raises(UserError, match="configured for clang"):
        kconfig.check_boot_config(base_values(CC_IS_CLANG="y"), "t")


def test_recommended_options_only_warn() -> None:
    bc = kconfig.check_boot_config(base_values(PM="n", UDMABUF="n"), "t")
    assert any("CONFIG_PM " in w for w in bc.warnings)
    assert any("CONFIG_UDMABUF" in w for w in bc.warnings)


def _initramfs_inputs(tmp: Path) -> tuple[Path, Path]:
    """A stand-in busybox and /init for building an initramfs."""
    busybox = tmp / "busybox"
    busybox.write_bytes(b"bb")
    init = tmp / "init"
    init.write_text("#!/bin/sh\n")
    return busybox, init


def test_module_chain_of_a_build_directory(tmp_path) -> None:
    d = make_build_dir(tmp_path)
    tree = find_tree(str(d))
    assert (tree.layout, tree.release, tree.image) == ("build", "7.2.13-qp",
                                                       d / "arch/arm64/boot/Image")
    deps = parse_modules_dep(chain_modules_dep(tree))
    names = {Path(p).name for p in deps}
    assert names == {"drm.ko", "drm_exec.ko", "gpu-sched.ko", "drm_gpuvm.ko", "panthor.ko"}
    panthor = next(p for p in deps if p.endswith("/panthor.ko"))
    assert {Path(p).name for p in deps[panthor]} == {"drm.ko", "drm_exec.ko", "gpu-sched.ko",
                                                     "drm_gpuvm.ko"}
    assert all(Path(p).is_absolute() for p in deps)


def test_initramfs_from_a_staged_build_directory(tmp_path) -> None:
    d = make_build_dir(tmp_path)
    staged = stage_modules(Cache(tmp_path / "cache"), find_tree(str(d)))
    busybox, init = _initramfs_inputs(tmp_path)
    cpio = build_initramfs(InitramfsSpec(modules_dir=staged, busybox=busybox, init_script=init))
    order = cpio.split(b"etc/qp/modules\0", 1)[1]
    listed = order[order.index(b"drm"):].split(b"\0", 1)[0].decode().split()
    assert listed[-1] == "panthor" and set(listed) == {"drm", "drm_exec", "gpu_sched",
                                                       "drm_gpuvm", "panthor"}
    assert listed.index("drm") < listed.index("gpu_sched")


def test_a_tree_with_panfrost_serves_the_job_manager_gpu(tmp_path) -> None:
    """panfrost's chain joins panthor's when the tree built it; an initramfs for a JM GPU
    (--gpu g52) loads panfrost's chain and not panthor."""
    chain = CHAIN | {"drivers/gpu/drm/drm_shmem_helper.ko": "drm",
                     "drivers/gpu/drm/panfrost/panfrost.ko": "drm,gpu-sched,drm_shmem_helper",
                     "drivers/gpu/drm/drm_kms_helper.ko": "drm",
                     "drivers/gpu/drm/tiny/cirrus-qemu.ko": "drm,drm_kms_helper,drm_shmem_helper"}
    d = make_build_dir(tmp_path, chain)
    names = {Path(p).name for p in parse_modules_dep(chain_modules_dep(find_tree(str(d))))}
    assert {"panfrost.ko", "drm_shmem_helper.ko", "panthor.ko"} <= names
    assert "unrelated.ko" not in names
    staged = stage_modules(Cache(tmp_path / "cache"), find_tree(str(d)))
    busybox, init = _initramfs_inputs(tmp_path)
    cpio = build_initramfs(InitramfsSpec(modules_dir=staged, busybox=busybox, init_script=init,
                                         driver="panfrost"))
    order = cpio.split(b"etc/qp/modules\0", 1)[1]
    body = order[order.index(b"drm"):]
    listed = body[:body.index(b"070701")].rstrip(b"\0").decode().split()  # up to the next entry
    assert listed[-1] == "panfrost" and "panthor" not in listed
    assert listed.index("drm_shmem_helper") < listed.index("panfrost")
    assert "cirrus_qemu" not in listed  # not asked for
    # an IGT run's late modules: vkms and what it needs beyond the driver's chain, in order
    cpio = build_initramfs(InitramfsSpec(modules_dir=staged, busybox=busybox, init_script=init,
                                         driver="panfrost",
                                         late_modules=["cirrus-qemu", "absent"]))
    late = cpio.split(b"etc/qp/late-modules\0", 1)[1]
    late = late[late.index(b"drm_kms_helper"):]
    assert late[:late.index(b"070701")].rstrip(b"\0").decode().split() == [
        "drm_kms_helper", "cirrus_qemu"]
    with pytest.raises(UserError, match="no module chain for driver 'nouveau'"):
        build_initramfs(InitramfsSpec(modules_dir=staged, busybox=busybox, init_script=init,
                                      driver="nouveau"))


def test_builtin_panthor_loads_nothing(tmp_path) -> None:
    d = make_build_dir(tmp_path, DRM_PANTHOR="y")
    assert chain_modules_dep(find_tree(str(d))) == ""


def test_unbuilt_trees_are_named(tmp_path) -> None:
    d = make_build_dir(tmp_path)
    (d / "arch/arm64/boot/Image").unlink()
    with pytest.raises(UserError, match="is not built"):
        find_tree(str(d))
    with pytest.raises(UserError, match="neither a kernel build directory"):
        find_tree(str(tmp_path / "out" / "drivers"))


def test_installed_layout(tmp_path) -> None:
    inst = tmp_path / "inst"
    mod = inst / "lib/modules/7.2.13-qp"
    mod.mkdir(parents=True)
    (inst / "boot").mkdir()
    (inst / "boot/Image").write_bytes(b"img")
    (inst / "boot/config-7.2.13-qp").write_text(kconfig.render_fragment(base_values()))
    (mod / "modules.dep").write_text("kernel/drivers/gpu/drm/panthor/panthor.ko:\n")
    with pytest.raises(UserError, match="build does not lead to the kernel's build directory"):
        find_tree(str(inst))
    build = make_build_dir(tmp_path)
    (mod / "build").symlink_to(build)
    tree = find_tree(str(inst))
    assert (tree.layout, tree.release, tree.kbuild) == ("installed", "7.2.13-qp", build)
    assert tree.modules_dir == mod


def test_kernel_arg_is_a_line_or_a_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not is_tree_arg("7.2") and not is_tree_arg("6.12")
    assert is_tree_arg("./out") and is_tree_arg("/abs/out")
    (tmp_path / "out").mkdir()
    assert is_tree_arg("out")
    (tmp_path / "7.2").mkdir()
    assert not is_tree_arg("7.2")  # a line name wins over a directory of that name


def test_fragments_merge_over_base_and_report_what_did_not_stick(tmp_path) -> None:
    frag = tmp_path / "extra.config"
    frag.write_text("CONFIG_KASAN=y\n# CONFIG_PRINTK_TIME is not set\nCONFIG_NOT_A_SYMBOL=y\n")
    fr = kconfig.resolve_fragments(["debug", str(frag)])
    assert [f.name for f in fr] == ["default", "arch/arm64", "debug", "extra.config"]
    merged = kconfig.merge(fr)
    assert merged["LOCALVERSION"] == '"-qp-debug"' and merged["PRINTK_TIME"] == "n"
    got = dict(merged, NOT_A_SYMBOL="n")
    assert kconfig.not_applied(merged, got) == ["NOT_A_SYMBOL=y (is not set)"]
    with pytest.raises(UserError, match="neither a config name"):
        kconfig.resolve_fragments(["nope"])


def test_each_architecture_adds_its_machine_and_passes_its_own_boot_check() -> None:
    """The merged fragments of every guest architecture name what check_boot_config requires
    of that architecture (the machine's console, PCI host, device-tree support)."""
    for arch in guest_arches().values():
        fr = kconfig.resolve_fragments([], arch)
        assert [f.name for f in fr] == ["default", f"arch/{arch.name}"]
        merged = kconfig.merge(fr)
        if arch.name == "x86_64":
            assert merged["COMPILE_TEST"] == "y" and merged["64BIT"] == "y"
        # What allnoconfig + the arch's kconfig select is not in the fragment: add the arch
        # symbol itself (ARM64/X86_64 come from ARCH=) and what OF_OVERLAY selects.
        values = dict(merged, **{arch.kernel_config: "y", "OF_DYNAMIC": "y"})
        boot = kconfig.check_boot_config(values, "merged fragments")
        assert boot.arch == arch and not boot.boot_dtb_nodes
    arm = kconfig.merge(kconfig.resolve_fragments([], guest_arch("arm64")))
    with pytest.raises(UserError, match="none of the guest architectures"):
        kconfig.check_boot_config(arm, "no arch symbol")
    x86 = dict(kconfig.merge(kconfig.resolve_fragments([], guest_arch("x86_64"))), X86_64="y")
    del x86["SERIAL_8250_CONSOLE"]
    with pytest.raises(UserError, match=r"SERIAL_8250_CONSOLE \(the console \(ttyS0\)"):
        kconfig.check_boot_config(x86, "an x86 tree without its console")


def test_debug_fragment_switches_on_the_bug_finders() -> None:
    merged = kconfig.merge(kconfig.resolve_fragments(["debug"]))
    for sym in ("KASAN", "KASAN_GENERIC", "PROVE_LOCKING", "DEBUG_KMEMLEAK", "DEBUG_OBJECTS",
                "DEBUG_ATOMIC_SLEEP", "PROVE_RCU", "DMA_API_DEBUG", "DRM_DEBUG_MM"):
        assert merged[sym] == "y", sym


def fake_source(tmp: Path, version: str = "7.2.13") -> Path:
    src = tmp / "linux"
    src.mkdir()
    major, minor, sub = version.split(".")
    (src / "Makefile").write_text(f"# SPDX\nVERSION = {major}\nPATCHLEVEL = {minor}\n"
                                  f"SUBLEVEL = {sub}\nEXTRAVERSION = -rc1\n")
    (src / "Kconfig").write_text("")
    return src


def test_build_key_follows_source_patches_and_config(tmp_path) -> None:
    src = fake_source(tmp_path)
    assert kernel_version(src) == "7.2.13-rc1"
    cache = Cache(tmp_path / "cache")
    a = plan(cache, source=str(src), configs=["default"], patches=[], gcc="16")
    assert a.mutable and a.src == src and a.out == a.dir / "out"
    assert a.name.startswith("linux-7.2.13-rc1-default-")
    assert plan(cache, source=str(src), configs=[], patches=[], gcc="16").name == a.name
    d = plan(cache, source=str(src), configs=["debug"], patches=[], gcc="16")
    assert "-debug-" in d.name and d.name != a.name
    patch = tmp_path / "fix.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    p = plan(cache, source=str(src), configs=["default"], patches=[str(patch)], gcc="16")
    assert p.name != a.name and p.src == p.dir / "src"
    patch.write_text("--- a/x\n+++ b/x\n@@ changed\n")
    assert plan(cache, source=str(src), configs=["default"], patches=[str(patch)],
                gcc="16").name != p.name
    assert plan(cache, source=str(src), configs=["default"], patches=[], gcc="17").name != a.name


def test_build_key_names_the_compiler_that_builds_the_arch(tmp_path) -> None:
    """arm64 kernels are built by the kbuild root's cross gcc, x86_64 ones by its native gcc:
    each build's key follows its own compiler, not the other's."""
    from qemu_panthor.setup.kernel import gcc_version
    from qemu_panthor.setup.toolroot import ToolRoot

    root = ToolRoot(tmp_path / "root")
    info = {"gcc": "14.2.0-1", "gcc_native": "4:15.1.0-2"}
    arches = guest_arches()
    assert gcc_version(root, info, arches["arm64"]) == "14.2.0-1"
    assert gcc_version(root, info, arches["x86_64"]) == "4:15.1.0-2"
    src = fake_source(tmp_path)
    cache = Cache(tmp_path / "cache")
    x86 = arches["x86_64"]
    a = plan(cache, source=str(src), configs=[], patches=[], gcc=gcc_version(root, info, x86),
             arch=x86)
    info2 = dict(info, gcc="15.0.0-1")  # a new cross gcc: the x86_64 build is still valid
    assert plan(cache, source=str(src), configs=[], patches=[],
                gcc=gcc_version(root, info2, x86), arch=x86).name == a.name
    info3 = dict(info, gcc_native="4:16.0.0-1")
    assert plan(cache, source=str(src), configs=[], patches=[],
                gcc=gcc_version(root, info3, x86), arch=x86).name != a.name


def test_in_tree_configured_source_is_refused(tmp_path) -> None:
    src = fake_source(tmp_path)
    (src / ".config").write_text("CONFIG_ARM64=y\n")
    with pytest.raises(UserError, match="configured in-tree"):
        plan(Cache(tmp_path / "cache"), source=str(src), configs=[], patches=[], gcc="16")


def test_uapi_headers_lose_kernel_annotations() -> None:
    text = ("#ifndef _UAPI_DRM_H\n#define _UAPI_DRM_H\n\tchar __user *name;\n"
            "#endif /* _UAPI_DRM_H */\n")
    assert _userspace_header(text) == (
        "#ifndef _DRM_H\n#define _DRM_H\n\tchar *name;\n#endif /* _DRM_H */\n")


def test_kernel_make_passes_its_arguments_untouched(tmp_path) -> None:
    from qemu_panthor.cli import _split_make_args
    from qemu_panthor.setup.kernel import make_binds

    own, rest = _split_make_args(["-v", "kernel", "make", "-C", "linux", "-j2", "O=out", "Image"])
    assert own == ["-v", "kernel", "make"] and rest == ["-C", "linux", "-j2", "O=out", "Image"]
    assert _split_make_args(["boot", "--kernel", "7.2"]) == (["boot", "--kernel", "7.2"], [])
    args, dirs = make_binds(rest, tmp_path)
    assert args == ["-C", str(tmp_path / "linux"), "-j2", f"O={tmp_path / 'out'}", "Image"]
    assert dirs == [tmp_path, tmp_path / "linux", tmp_path / "out"]
    assert (tmp_path / "out").is_dir()  # made, so it can be bind-mounted


def test_an_x86_64_guest_boots_no_debian_line() -> None:
    """Debian's kernel lines are arm64 packages: on x86_64 the kernel is built here (or a
    tree of yours); asking for a line there is one clear error, before any set-up."""
    from qemu_panthor.setup.tree import boot_images

    with pytest.raises(UserError, match=r"kernel line 6\.12 is Debian's arm64 kernel; an "
                                        r"x86_64 guest boots a kernel built here"):
        boot_images("6.12", "x86_64")
    with pytest.raises(UserError, match="unknown guest architecture 'riscv64'"):
        boot_images(None, "riscv64")


def test_a_tree_without_panfrost_says_so_for_a_job_manager_gpu(tmp_path) -> None:
    d = make_build_dir(tmp_path)
    staged = stage_modules(Cache(tmp_path / "cache"), find_tree(str(d)))
    busybox, init = _initramfs_inputs(tmp_path)
    with pytest.raises(UserError, match=r"no panfrost module \(CONFIG_DRM_PANFROST\)"):
        build_initramfs(InitramfsSpec(modules_dir=staged, busybox=busybox, init_script=init,
                                      driver="panfrost"))


def test_kernel_image_file_names_its_build_directory(tmp_path) -> None:
    """`--kernel <tree>/arch/arm64/boot/Image` (a file, the habit of `qemu -kernel`) gets one
    line naming the directory to give instead, not "no such directory"."""
    d = make_build_dir(tmp_path)
    with pytest.raises(UserError) as e:
        find_tree(str(d / "arch/arm64/boot/Image"))
    assert "a file; --kernel takes the kernel's build directory" in str(e.value)
    assert f"build directory {str(d.resolve())!r}" in str(e.value)
    with pytest.raises(UserError, match="no such directory"):
        find_tree(str(tmp_path / "missing"))

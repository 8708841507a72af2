"""[devkernel] Kernel reports on the guest console become test results: each is found by its
first line, attributed to the selftest it appeared in, and fails it unless it is listed as
known harmless (images/kernel/known-reports.toml)."""
# ruff: noqa: E501  (the console samples keep the kernel's own line lengths)

from __future__ import annotations

import re

from qemu_panthor.launcher.kernel_reports import (
    BOOT,
    END,
    KEEP_LINES,
    KnownReport,
    ReportVerdict,
    active_debug,
    apply_reports,
    find_reports,
    known_reports,
)
from qemu_panthor.launcher.ktap import parse_ktap

KASAN = """\
[   41.200101] ==================================================================
[   41.200350] BUG: KASAN: slab-use-after-free in panthor_vm_pool_destroy+0x44/0x1c8 [panthor]
[   41.200611] Read of size 8 at addr ffff000004a1c2d8 by task qp-selftests/171
[   41.200802]
[   41.201012] CPU: 1 UID: 0 PID: 171 Comm: qp-selftests Not tainted 7.2.13-qp-debug #1
[   41.201300] Call trace:
[   41.201400]  show_stack+0x20/0x38 (C)
[   41.201500]  dump_stack_lvl+0x8c/0xd0
[   41.201600]  print_report+0x118/0x5e8
[   41.201700]  kasan_report+0xac/0xf8
[   41.201800]  panthor_vm_pool_destroy+0x44/0x1c8 [panthor]
[   41.201900]  panthor_postclose+0x30/0x58 [panthor]
[   41.202000]  drm_file_free+0x3e4/0x5a0 [drm]
[   41.202100] =================================================================="""

LOCKDEP = """\
[   12.000001] ======================================================
[   12.000002] WARNING: possible circular locking dependency detected
[   12.000003] 7.2.13-qp-debug #1 Not tainted
[   12.000004] ------------------------------------------------------
[   12.000005] kworker/u8:1/40 is trying to acquire lock:
[   12.000006] ffff0000042a8ad0 (&vm->op_lock){+.+.}-{4:4}, at: panthor_vm_bind_run_job+0x20/0x90 [panthor]"""

WARN = """\
[   30.000001] ------------[ cut here ]------------
[   30.000002] WARNING: CPU: 0 PID: 88 at drivers/gpu/drm/panthor/panthor_sched.c:1234 group_release+0x10/0x20 [panthor]
[   30.000003] Modules linked in: panthor_glue(O) panthor drm_gpuvm drm_exec gpu_sched drm
[   30.000004] CPU: 0 UID: 0 PID: 88 Comm: kworker/0:2 Tainted: G           O        7.2.13-qp #1
[   30.000005] Call trace:
[   30.000006]  group_release+0x10/0x20 [panthor]
[   30.000007] ---[ end trace 0000000000000000 ]---"""

DMA_API = """\
[   50.000001] ------------[ cut here ]------------
[   50.000002] DMA-API: qemu-panthor qemu-panthor.16: device driver frees DMA memory with wrong function [device address=0x0000000041000000] [size=4096 bytes] [mapped as single] [unmapped as page]
[   50.000003] WARNING: CPU: 1 PID: 171 at kernel/dma/debug.c:1021 check_unmap+0x6f4/0x9c8
[   50.000004] Modules linked in: panthor_glue(O) panthor
[   50.000005] ---[ end trace 0000000000000000 ]---"""

KMEMLEAK = """\
unreferenced object 0xffff000005e1a400 (size 256):
  comm "insmod", pid 120, jiffies 4294893020
  hex dump (first 32 bytes):
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00  ................
  backtrace (crc 5a6bd0f3):
    __kmalloc_cache_noprof+0x2d8/0x3a0
    panthor_device_init+0x5c/0x6a0 [panthor]"""


def console(*parts: str) -> list[str]:
    return "\n".join(parts).splitlines()


def suite(*tests: tuple[str, str]) -> list[str]:
    """KTAP for tests given as (name, kernel lines printed while it ran)."""
    out = ["KTAP version 1", f"1..{len(tests)}"]
    for i, (name, kernel) in enumerate(tests, 1):
        out += kernel.splitlines() if kernel else []
        out += [f"# {name}: 0.10 s", f"ok {i} {name}"]
    return out


def test_each_kind_is_found_with_its_first_lines() -> None:
    lines = console("@qp status phase=init", "KTAP version 1", "1..4", KASAN, "ok 1 a",
                    LOCKDEP, "ok 2 b", WARN, "ok 3 c", DMA_API, "ok 4 d",
                    "@qp status phase=kmemleak-scan", KMEMLEAK, "@qp result rc=0")
    reports = find_reports(lines, known=())
    assert [(r.kind, r.test) for r in reports] == [
        ("KASAN", "a"), ("lockdep", "b"), ("WARNING", "c"), ("DMA-API", "d"),
        ("kmemleak", END),
    ]
    kasan = reports[0]
    assert kasan.title.startswith("BUG: KASAN: slab-use-after-free in panthor_vm_pool_destroy")
    assert kasan.lines[1].startswith("Read of size 8")
    assert len(kasan.lines) <= KEEP_LINES
    # the summary skips the reporting code's frames and reaches the driver's
    assert kasan.essential(3) == ["Read of size 8 at addr ffff000004a1c2d8 by task qp-selftests/171",
                                  " panthor_vm_pool_destroy+0x44/0x1c8 [panthor]",
                                  " panthor_postclose+0x30/0x58 [panthor]"]
    # the DMA-API message opens its report; the WARN line under it belongs to it
    assert reports[3].title.startswith("DMA-API: qemu-panthor")
    assert any("kernel/dma/debug.c" in x for x in reports[3].lines)
    assert reports[4].lines[1].strip().startswith('comm "insmod"')


OOPS = """\
[    4.561000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000
[    4.561100] Mem abort info:
[    4.561200]   ESR = 0x0000000096000046
[    4.562000] Internal error: Oops: 0000000096000046 [#1]  SMP
[    4.562100] Modules linked in: panthor_glue(OE) panthor gpu_sched drm_gpuvm drm_exec drm fixed
[    4.572443]  panthor_submit_ctx_collect_jobs_signal_ops+0x1b8/0x318 [panthor] (P)
[    4.576962] ---[ end trace 0000000000000000 ]---"""


def test_an_oops_is_one_report() -> None:
    lines = ["KTAP version 1", "1..1", *OOPS.splitlines(), "not ok 1 repro"]
    (r,) = find_reports(lines, known=())
    assert (r.kind, r.test) == ("Oops", "repro")
    assert r.title.startswith("Unable to handle kernel NULL pointer dereference")
    assert any(x.startswith("Internal error: Oops") for x in r.lines)


def test_the_echo_interleaved_with_a_report_does_not_cut_it() -> None:
    lines = ["KTAP version 1", "1..1"]
    for i, line in enumerate(OOPS.splitlines()):
        lines.append(line)
        if i == 3:
            lines.append("[dmesg] BUG: KASAN: null-ptr-deref in panthor_submit_ctx+0x3f4/0x6a4")
    lines.append("not ok 1 repro")
    oops, echoed = find_reports(lines, known=())
    assert oops.kind == "Oops" and echoed.kind == "KASAN" and echoed.echoed
    assert any("panthor_submit_ctx_collect_jobs_signal_ops" in x for x in oops.lines)


def test_reports_before_the_plan_belong_to_the_boot() -> None:
    reports = find_reports(console(WARN, "KTAP version 1", "1..1", "ok 1 a"), known=())
    assert [(r.kind, r.test) for r in reports] == [("WARNING", BOOT)]


def test_a_report_in_a_test_that_never_finished() -> None:
    lines = ["KTAP version 1", "1..3", "ok 1 a", *KASAN.splitlines()]
    (r,) = find_reports(lines, known=())
    assert r.test == "(after a)"


def test_interleaved_user_space_lines_do_not_end_or_join_a_report() -> None:
    lines = KASAN.splitlines()
    lines.insert(4, "# job_store_deadbeef: 0.20 s")
    r = find_reports(["KTAP version 1", "1..1", *lines, "ok 1 x"], known=())[0]
    assert not any(x.startswith("#") for x in r.lines)
    assert r.test == "x"


def test_clean_console_has_no_reports() -> None:
    lines = suite(("a", ""), ("b", "[   1.0] panthor qemu-panthor.16: [drm] Firmware protected mode "
                                    "entry not be supported, ignoring"))
    lines += ["[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]",
              "[dmesg] panthor qemu-panthor.16: [drm] mali-unknown id 0xa867 major 0x0 minor 0x0",
              "@qp result rc=0"]
    assert find_reports(lines, known=()) == []


def test_echoed_duplicates_are_kept_once_but_echo_only_reports_count() -> None:
    warn = WARN.splitlines()[1]
    echoed = "[dmesg] " + warn.split("] ", 1)[1]
    both = find_reports(["KTAP version 1", "1..1", warn, echoed, "ok 1 a"], known=())
    assert len(both) == 1 and not both[0].echoed
    only = find_reports(["KTAP version 1", "1..1", echoed, "ok 1 a"], known=())
    assert len(only) == 1 and only[0].echoed and only[0].test == "a"


def test_known_harmless_reports_do_not_fail() -> None:
    known = (KnownReport(re.compile(r"group_release"), "reviewed: test fixture"),)
    lines = suite(("a", WARN), ("b", KASAN))
    v = ReportVerdict(find_reports(lines, known=known))
    assert [r.kind for r in v.failing] == ["KASAN"]
    assert [r.known for r in v.harmless] == ["reviewed: test fixture"]
    text = v.lines()
    assert text[0].startswith("kernel report (KASAN) in b: BUG: KASAN: slab-use-after-free")
    assert text[1].startswith("    Read of size 8")
    assert text[-1].startswith("known harmless kernel report (WARNING)")


def test_failing_reports_fail_their_test_or_the_run() -> None:
    lines = console(WARN, *suite(("a", ""), ("b", LOCKDEP), ("c", "")), "@qp status "
                    "phase=kmemleak-scan", KMEMLEAK)
    s = parse_ktap(lines)
    assert s.failed == []
    apply_reports(s, ReportVerdict(find_reports(lines, known=())))
    assert s.passed == ["a", "c"]
    assert s.failed == ["kernel report (boot)", "b", "kernel report (after the suite)"]
    assert s.line() == "2 passed, 3 failed, 0 skipped"


def test_the_reviewed_list_loads_and_every_entry_has_a_reason() -> None:
    for k in known_reports():
        assert k.why.strip()


def test_active_debug_features() -> None:
    assert active_debug(["@qp status debug=kasan,lockdep,kmemleak"]) == [
        "kasan", "lockdep", "kmemleak"]
    assert active_debug(["@qp status phase=init"]) == []

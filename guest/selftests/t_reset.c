/* GPU reset recovery and async VM_BIND failure, driven by the qemu-panthor test port.
 *
 * A correct GPU never wedges, so these driver paths need an injected fault: the test port
 * (BAR2 at 0xF00, docs/test-port.md; not part of the GPU) makes the next AS_COMMAND hang,
 * i.e. AS_STATUS.AS_ACTIVE stays 1 until the next GPU reset. panthor's AS_ACTIVE poll
 * (100 ms) gives up, logs "AS_ACTIVE bit stuck" and schedules a reset.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "qp.h"

#define TIMEOUT_MS 10000
/* test-port registers (offsets in BAR2) and INJECT codes: qemu_panthor/testport.py */

#define TP_INJECT 0x08
#define TP_RESULT 0x0C
#define TP_FIRED 0x10
#define TP_AS_ARMED 0x14
#define TP_AS_ACTIVE 0x18
#define TP_GPU_RESETS 0x20
#define TP_LOCK_STALLS 0x28
#define TP_BOOT_ARMED 0x30
#define TP_OP_DISARM 0u
#define TP_OP_AS_STUCK 1u
#define TP_OP_PING_DROP 2u
#define TP_OP_WORK_HANG 4u
#define TP_OP_FW_BOOT_FAIL 5u
#define TP_ANY_AS 0xFFu
#define TP_CODE(op, as, n) ((op) | (as) << 8 | (uint32_t)(n) << 16)

static volatile uint32_t *tp;

static uint32_t tp_rd(unsigned off) { return tp[(QP_TP_BASE + off) / 4]; }
static void tp_wr(unsigned off, uint32_t v) { tp[(QP_TP_BASE + off) / 4] = v; }

/* map the port (lib.c); 0, or a skip result */
static int tp_open(void)
{
	char why[256];
	tp = qp_tp_map(why, sizeof(why));
	return tp ? 0 : qp_skip("%s", why);
}

/* keep the device out of runtime suspend: panthor runs its reset work only while the device
 * is ACTIVE (a suspend racing the reset defers it to a slow resume); the runner restores it */
static int pm_keep_on(void)
{
	return qp_pm_control_set("on");
}

/* wait (bounded) until the GPU reset counter passes `from` */
static bool wait_reset(uint32_t from, unsigned ms)
{
	double end = qp_now() + ms / 1000.0;
	while (qp_now() < end) {
		if (tp_rd(TP_GPU_RESETS) != from)
			return true;
		qp_sleep_ms(2);
	}
	return false;
}

static int run_inc(struct qp_ctx *c, unsigned n)
{
	struct qp_cs cs = { c->cmd.map, 0 };
	cs_inc32(&cs, c->data.va);
	cs_flush(&cs);
	for (unsigned i = 0; i < n; i++) {
		int r = qp_ctx_run(c, 0, cs_bytes(&cs), TIMEOUT_MS);
		if (r)
			return r;
	}
	return 0;
}

/* a fresh VM + group + job: correct data */
static int fresh_job_works(int fd, const char *when)
{
	struct qp_ctx n;
	CHECK_OK(qp_ctx_init(&n, fd, 4096, 4096));
	CHECK_OK(run_inc(&n, 2));
	volatile uint32_t *d = n.data.map;
	CHECK(d[0] == 2, "new VM's counter %u %s", d[0], when);
	qp_group_destroy(fd, n.group);
	qp_vm_destroy(fd, n.vm);
	return QP_PASS;
}

int test_gpu_reset_recovery(void)
{
	int r = tp_open();
	if (r)
		return r;
	CHECK_OK(pm_keep_on());
	int fd = qp_open();
	struct qp_ctx a, b;
	CHECK_OK(qp_ctx_init(&a, fd, 4096, 4096));
	CHECK_OK(qp_ctx_init(&b, fd, 4096, 4096));
	CHECK_OK(run_inc(&b, 1));
	CHECK_OK(run_inc(&a, 1)); /* a's VM now owns an AS slot */
	int kfd = qp_kmsg_open(true);
	uint32_t resets0 = tp_rd(TP_GPU_RESETS), fired0 = tp_rd(TP_FIRED);
	tp_wr(TP_INJECT, TP_CODE(TP_OP_AS_STUCK, TP_ANY_AS, 1));
	CHECK(tp_rd(TP_RESULT) == 0 && tp_rd(TP_AS_ARMED) == 1, "arm: result %u armed %u",
	      tp_rd(TP_RESULT), tp_rd(TP_AS_ARMED));
	/* a sync map on a VM that owns an AS: LOCK hangs */
	struct qp_bo bo;
	CHECK_OK(qp_bo_create(fd, 4096, 0, 0, &bo));
	double t0 = qp_now();
	r = qp_vm_map(fd, a.vm, &bo, 0x5000000, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC);
	double t_bind = qp_now() - t0;
	uint32_t fired = tp_rd(TP_FIRED) - fired0;
	qp_diag("sync VM_BIND map with LOCK hung: %d (%s) after %.3f s, faults fired %u, "
		"AS_ACTIVE mask 0x%x", r, r ? strerror(-r) : "ok", t_bind, fired,
		tp_rd(TP_AS_ACTIVE));
	bool reset = wait_reset(resets0, 5000);
	double t_reset = qp_now() - t0;
	/* recovery: a job on each old group, with correct data */
	int rb = run_inc(&b, 1);
	double t_job = qp_now() - t0;
	qp_diag("timings: AS_ACTIVE poll gave up after %.3f s (VM_BIND returned), GPU reset done "
		"%.3f s later, first job after it %.3f s later", t_bind, t_reset - t_bind,
		t_job - t_reset);
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	CHECK(fired == 1, "injected faults fired: %u", fired);
	/* 7.x locks the region before touching the tables and fails the bind; 6.12 maps first,
	 * then flushes (LOCK, then FLUSH_PT, which unlocks) and ignores a failed flush: the bind
	 * succeeds (docs/reference/mmu.md, 6.12 differences) */
	if (qp_kernel_major() >= 7)
		CHECK(r == -ETIMEDOUT, "sync VM_BIND with a hung LOCK returned %d, want -ETIMEDOUT",
		      r);
	else
		CHECK(r == 0, "6.12: sync VM_BIND with a hung flush LOCK returned %d, want 0", r);
	CHECK(reset, "no GPU reset within 5 s");
	CHECK(tp_rd(TP_GPU_RESETS) == resets0 + 1, "%u GPU resets, want 1",
	      tp_rd(TP_GPU_RESETS) - resets0);
	CHECK(qp_kmsg_count(log, "AS_ACTIVE bit stuck") == 1, "%d 'AS_ACTIVE bit stuck' lines, want 1",
	      qp_kmsg_count(log, "AS_ACTIVE bit stuck"));
	CHECK(!strstr(log, "WARN") && !strstr(log, "BUG") && !strstr(log, "timedout") &&
	      !strstr(log, "Unhandled Page fault") && !strstr(log, "CS_FATAL"),
	      "unexpected kernel lines after the reset (shown above)");
	CHECK_OK(rb);
	CHECK_OK(run_inc(&a, 1));
	volatile uint32_t *da = a.data.map, *db = b.data.map;
	CHECK(da[0] == 2 && db[0] == 2, "old groups' counters %u %u after the reset, want 2 2",
	      da[0], db[0]);
	/* groups alive before the reset are innocent: not timed out, not faulty */
	uint32_t sa = ~0u, fa = ~0u, sb = ~0u, fb = ~0u, vs = ~0u;
	CHECK_OK(qp_group_state(fd, a.group, &sa, &fa));
	CHECK_OK(qp_group_state(fd, b.group, &sb, &fb));
	CHECK(sa == 0 && fa == 0 && sb == 0 && fb == 0,
	      "group states after the reset 0x%x/0x%x 0x%x/0x%x, want innocent", sa, fa, sb, fb);
	/* a failed *sync* bind leaves the VM usable; the same map now works */
	CHECK_OK(qp_vm_state(fd, a.vm, &vs));
	CHECK(vs == DRM_PANTHOR_VM_STATE_USABLE, "VM state %u after a failed sync bind", vs);
	CHECK_OK(qp_bo_mmap(fd, &bo));
	if (r == 0) /* 6.12: mapped already */
		CHECK_OK(qp_vm_unmap(fd, a.vm, 0x5000000, 4096));
	CHECK_OK(qp_vm_map(fd, a.vm, &bo, 0x5000000, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC));
	struct qp_cs cs = { a.cmd.map, 0 };
	cs_store32(&cs, 0x5000000 + 16, 0x4e5e7);
	cs_flush(&cs);
	CHECK_OK(qp_ctx_run(&a, 0, cs_bytes(&cs), TIMEOUT_MS));
	CHECK(((volatile uint32_t *)bo.map)[4] == 0x4e5e7, "store through the re-done map: 0x%x",
	      ((volatile uint32_t *)bo.map)[4]);
	if (fresh_job_works(fd, "after the reset") != QP_PASS)
		return QP_FAIL;
	struct drm_panthor_gpu_info gi;
	CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, &gi, sizeof(gi)));
	uint64_t want;
	if (qp_env("GPU_ID", &want))
		CHECK(gi.gpu_id == want, "GPU_ID 0x%x after reset, want 0x%llx", gi.gpu_id,
		      (unsigned long long)want);
	close(fd);
	return QP_PASS;
}

int test_vm_bind_async_failure_unusable(void)
{
	int r = tp_open();
	if (r)
		return r;
	CHECK_OK(pm_keep_on());
	int fd = qp_open();
	struct qp_ctx a, b;
	CHECK_OK(qp_ctx_init(&a, fd, 4096, 4096));
	CHECK_OK(qp_ctx_init(&b, fd, 4096, 4096));
	CHECK_OK(run_inc(&b, 1));
	CHECK_OK(run_inc(&a, 1));
	int kfd = qp_kmsg_open(true);
	uint32_t resets0 = tp_rd(TP_GPU_RESETS), fired0 = tp_rd(TP_FIRED);
	struct qp_bo bo;
	CHECK_OK(qp_bo_create(fd, 4096, 0, 0, &bo));
	uint32_t done;
	CHECK_OK(qp_syncobj_create(fd, &done, false));
	struct drm_panthor_sync_op sig = { .flags = DRM_PANTHOR_SYNC_OP_SIGNAL, .handle = done };
	struct drm_panthor_vm_bind_op op = {
		.flags = DRM_PANTHOR_VM_BIND_OP_TYPE_MAP | DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC,
		.bo_handle = bo.handle, .va = 0x5000000, .size = 4096,
		.syncs = { sizeof(sig), 1, (uintptr_t)&sig } };
	int st = 0;
	uint32_t vs = ~0u, fired = 0;
	bool reset = false;
	/* The injected hang takes the first AS command on any AS. Another command issued just
	 * then (the driver's own background work) can take it instead of the bind's LOCK: the
	 * bind then succeeds and the GPU still resets. That attempt did not test anything, so
	 * it is retried (at another VA) up to 3 times on 7.x. */
	for (int attempt = 0; attempt < 3; attempt++) {
		resets0 = tp_rd(TP_GPU_RESETS);
		fired0 = tp_rd(TP_FIRED);
		op.va = 0x5000000 + (uint64_t)attempt * 0x100000;
		tp_wr(TP_INJECT, TP_CODE(TP_OP_AS_STUCK, TP_ANY_AS, 1));
		double t0 = qp_now();
		CHECK_OK(qp_vm_bind_op(fd, a.vm, DRM_PANTHOR_VM_BIND_ASYNC, &op));
		CHECK_OK(qp_syncobj_wait(fd, &done, 1, TIMEOUT_MS, true));
		double t_bind = qp_now() - t0;
		CHECK_OK(qp_syncobj_status(fd, done, &st));
		CHECK_OK(qp_vm_state(fd, a.vm, &vs));
		fired = tp_rd(TP_FIRED) - fired0;
		qp_diag("async map: fence %d (%s) after %.3f s, VM state %u, fired %u", st,
			st < 0 ? strerror(-st) : "ok", t_bind, vs, fired);
		reset = wait_reset(resets0, 5000);
		qp_diag("GPU reset %s after %.3f s", reset ? "done" : "NOT done", qp_now() - t0);
		if (!(st == 1 && vs == DRM_PANTHOR_VM_STATE_USABLE && qp_kernel_major() >= 7))
			break;
		qp_diag("attempt %d: the hang took another AS command; again", attempt + 1);
		CHECK_OK(qp_syncobj_destroy(fd, done));
		CHECK_OK(qp_syncobj_create(fd, &done, false));
		sig.handle = done;
	}
	CHECK(fired == 1, "injected faults fired: %u", fired);
	if (st == 1 && vs == DRM_PANTHOR_VM_STATE_USABLE && qp_kernel_major() < 7 && reset)
		return qp_skip("6.12 panthor maps before its flush and ignores a failed flush LOCK "
			       "(bind fence ok, VM usable): an async bind cannot fail this way");
	CHECK(st == -ETIMEDOUT, "failed async bind: fence status %d, want -ETIMEDOUT", st);
	CHECK(vs == DRM_PANTHOR_VM_STATE_UNUSABLE, "VM state %u, want UNUSABLE", vs);
	/* what the unusable VM refuses and still allows */
	struct qp_bo bo2;
	CHECK_OK(qp_bo_create(fd, 4096, 0, 0, &bo2));
	CHECK_ERR(qp_vm_map(fd, a.vm, &bo2, 0x6000000, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC), EINVAL);
	op.bo_handle = bo2.handle;
	op.va = 0x6000000;
	uint32_t done2;
	CHECK_OK(qp_syncobj_create(fd, &done2, false));
	sig.handle = done2;
	/* async binds on it are refused at the ioctl too */
	CHECK_ERR(qp_vm_bind_op(fd, a.vm, DRM_PANTHOR_VM_BIND_ASYNC, &op), EINVAL);
	uint32_t g2 = 0;
	/* GROUP_CREATE on the unusable VM is refused: -EINVAL in most runs, -ENOSPC in about a
	 * quarter of full-suite runs (seen with and without this file's changes; the kernel
	 * path behind -ENOSPC is not yet identified: see docs/test-port.md). Both refuse. */
	int gr = qp_group_create(fd, a.vm, &g2);
	if (gr == -ENOSPC)
		qp_diag("GROUP_CREATE on the unusable VM refused with -ENOSPC (not -EINVAL)");
	else
		CHECK_ERR(gr, EINVAL);
	/* a group created before keeps running on the VM's existing mappings */
	CHECK_OK(run_inc(&a, 1));
	volatile uint32_t *da = a.data.map;
	CHECK(da[0] == 2, "job on the unusable VM's old group: counter %u", da[0]);
	/* unmap is still allowed (user space can tear the VM down) */
	CHECK_OK(qp_vm_unmap(fd, a.vm, QP_DATA_VA, 4096));
	CHECK_OK(qp_vm_state(fd, a.vm, &vs));
	CHECK(vs == DRM_PANTHOR_VM_STATE_UNUSABLE, "VM state %u after unmap", vs);
	/* other VMs keep working */
	CHECK_OK(run_inc(&b, 1));
	volatile uint32_t *bd = b.data.map;
	CHECK(bd[0] == 2, "other VM's counter %u", bd[0]);
	if (fresh_job_works(fd, "after the failed bind") != QP_PASS)
		return QP_FAIL;
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	CHECK(qp_kmsg_count(log, "AS_ACTIVE bit stuck") == 1, "%d 'AS_ACTIVE bit stuck' lines, want 1",
	      qp_kmsg_count(log, "AS_ACTIVE bit stuck"));
	CHECK(reset, "no GPU reset within 5 s of the stuck LOCK");
	CHECK(!strstr(log, "WARN") && !strstr(log, "BUG") && !strstr(log, "Unhandled Page fault"),
	      "unexpected kernel lines (shown above)");
	qp_vm_destroy(fd, a.vm);
	close(fd);
	return QP_PASS;
}

/*
 * The firmware stops answering: the test port's PING_DROP leaves the next GLB PING
 * unacknowledged. panthor pings every 12 s (PING_INTERVAL_MS) and waits 100 ms for the ack:
 * "FW ping timeout, scheduling a reset"; the reset (slow firmware reload) brings the
 * firmware back and the groups that were alive are innocent: they run on with their data.
 */
int test_ping_timeout_reset(void)
{
	int r = tp_open();
	if (r)
		return r;
	CHECK_OK(pm_keep_on()); /* pings run while the device is awake */
	int fd = qp_open();
	struct qp_ctx a;
	CHECK_OK(qp_ctx_init(&a, fd, 4096, 4096));
	CHECK_OK(run_inc(&a, 1));
	int kfd = qp_kmsg_open(true);
	uint32_t resets0 = tp_rd(TP_GPU_RESETS), fired0 = tp_rd(TP_FIRED);
	tp_wr(TP_INJECT, TP_CODE(TP_OP_PING_DROP, TP_ANY_AS, 1));
	CHECK(tp_rd(TP_RESULT) == 0, "PING_DROP refused (result %u)", tp_rd(TP_RESULT));
	double t0 = qp_now();
	bool reset = wait_reset(resets0, 30000); /* the next ping is at most 12 s away */
	double dt = qp_now() - t0;
	int rj = run_inc(&a, 1);
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	qp_diag("ping dropped: GPU reset after %.2f s, test port fired %u", dt,
		tp_rd(TP_FIRED) - fired0);
	CHECK(reset, "no GPU reset within 30 s of dropping a PING");
	CHECK(tp_rd(TP_FIRED) - fired0 == 1, "the PING drop fired %u times",
	      tp_rd(TP_FIRED) - fired0);
	CHECK(tp_rd(TP_GPU_RESETS) == resets0 + 1, "%u GPU resets, want 1",
	      tp_rd(TP_GPU_RESETS) - resets0);
	CHECK(qp_kmsg_count(log, "FW ping timeout") == 1, "%d 'FW ping timeout' lines, want 1",
	      qp_kmsg_count(log, "FW ping timeout"));
	CHECK(!strstr(log, "WARN") && !strstr(log, "BUG") && !strstr(log, "CS_FATAL"),
	      "unexpected kernel lines after the reset (shown above)");
	CHECK_OK(rj);
	volatile uint32_t *da = a.data.map;
	CHECK(da[0] == 2, "counter %u after the reset, want 2", da[0]);
	uint32_t sa = ~0u, fa = ~0u;
	CHECK_OK(qp_group_state(fd, a.group, &sa, &fa));
	CHECK(sa == 0 && fa == 0, "group state 0x%x/0x%x after the reset, want innocent", sa, fa);
	qp_ctx_fini(&a);
	close(fd);
	return QP_PASS;
}

/*
 * A shader stuck in a loop: the test port's WORK_HANG makes the next work item (RUN_COMPUTE)
 * never complete, and the job WAITs on it. The firmware's progress timer (GLB
 * progress_timer 2560000 x 1024 GPU cycles: 3.28 s at 800 MHz) raises CSG
 * PROGRESS_TIMER_EVENT; panthor ("CSG slot N progress timeout") marks the group timed out and
 * terminates it: the job fails with -ETIMEDOUT before the 5 s job timeout, the store after
 * the WAIT never lands, and a new group on the same VM runs.
 */
int test_progress_timeout(void)
{
	int r = tp_open();
	if (r)
		return r;
	int fd = qp_open();
	struct qp_ctx t;
	CHECK_OK(qp_ctx_init(&t, fd, 4096, 4096));
	int kfd = qp_kmsg_open(true);
	volatile uint32_t *d = t.data.map;
	struct qp_cs cs = { t.cmd.map, 0 };
	cs_store32(&cs, t.data.va, 0x9a0001); /* lands before the work item */
	cs_emit(&cs, CS_SET_SB_ENTRY(1, 0));
	cs_emit(&cs, CS_RUN_COMPUTE());
	cs_emit(&cs, CS_WAIT(1u << 1));
	cs_store32(&cs, t.data.va + 4, 0x9a0002); /* must never land */
	cs_flush(&cs);
	uint32_t fired0 = tp_rd(TP_FIRED);
	tp_wr(TP_INJECT, TP_CODE(TP_OP_WORK_HANG, TP_ANY_AS, 1));
	CHECK(tp_rd(TP_RESULT) == 0, "WORK_HANG refused (result %u)", tp_rd(TP_RESULT));
	double t0 = qp_now();
	CHECK_OK(qp_submit(fd, t.group, t.cmd.va, cs_bytes(&cs), t.syncobj, 0));
	CHECK_OK(qp_syncobj_wait(fd, &t.syncobj, 1, 20000, true));
	double dt = qp_now() - t0;
	int st = 0;
	uint32_t state = 0, fq = 0;
	CHECK_OK(qp_syncobj_status(fd, t.syncobj, &st));
	CHECK_OK(qp_group_state(fd, t.group, &state, &fq));
	qp_diag("hung work item: fence %d (%s), group state 0x%x fatal_queues 0x%x after %.2f s, "
		"test port fired %u", st, st < 0 ? strerror(-st) : "ok", state, fq, dt,
		tp_rd(TP_FIRED) - fired0);
	CHECK(tp_rd(TP_FIRED) - fired0 == 1, "the hang did not fire");
	CHECK(dt >= 3.0 && dt < 4.9, "fence completed after %.2f s; the progress timeout is 3.28 s "
	      "(the 5 s job timeout must not be what ended it)", dt);
	CHECK(st == -ETIMEDOUT, "fence status %d, want -ETIMEDOUT", st);
	CHECK(state & DRM_PANTHOR_GROUP_STATE_TIMEDOUT, "group state 0x%x lacks TIMEDOUT", state);
	CHECK(d[0] == 0x9a0001 && d[1] == 0, "stores 0x%x 0x%x: the one after the WAIT landed",
	      d[0], d[1]);
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	CHECK(qp_kmsg_count(log, "progress timeout") == 1, "%d 'progress timeout' lines, want 1",
	      qp_kmsg_count(log, "progress timeout"));
	CHECK(qp_kmsg_count(log, "] job timeout") == 0, "the job timeout fired (%d)",
	      qp_kmsg_count(log, "] job timeout"));
	/* the VM and the GPU keep working: a new group on the same VM */
	CHECK_OK(qp_ctx_regroup_store(&t, 8, 0x600d, TIMEOUT_MS));
	qp_ctx_fini(&t);
	close(fd);
	return QP_PASS;
}

/*
 * A GPU reset while jobs run (docs/firmware.md): a dropped PING makes panthor reset the GPU
 * ("FW ping timeout") while two groups each have long-running jobs in flight. panthor's
 * pre-reset suspends the resident groups (the firmware saves every stream into its suspend
 * buffer), the MCU reboots, and post-reset resumes them: the streams are innocent, so each
 * job continues exactly where it stopped. Every job's prologue runs once, registers set before
 * its loop hold after it, every fence completes without error and the groups stay healthy.
 */
int test_reset_in_flight(void)
{
	enum { NG = 2, MAXJ = 64, CAL_LOOPS = 20000 };
	int r = tp_open();
	if (r)
		return r;
	CHECK_OK(pm_keep_on()); /* pings run while the device is awake */
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 16384, 8192));
	volatile uint32_t *d = c.data.map;
	uint32_t groups[NG], sync[MAXJ];
	for (int g = 0; g < NG; g++)
		CHECK_OK(qp_group_create(fd, c.vm, &groups[g]));
	for (int j = 0; j < MAXJ; j++)
		CHECK_OK(qp_syncobj_create(fd, &sync[j], false));
	/* job j: slot[0] += 1 (its prologue), r30..r31 := tags, spin r20 loops, slot[1..2] :=
	 * r30..r31, slot[3] := 0xd0e. One 64-byte data slot per job; the loop count in the
	 * data BO's last word, so one program serves every job (r40:r41 = its slot). */
	struct qp_cs cs = { c.cmd.map, 0 };
	uint64_t loops_va = c.data.va + 8192 - 4;
	cs_emit(&cs, CS_MOV48(0, loops_va));
	cs_emit(&cs, CS_LOAD_MULTIPLE(20, 0, 0x1, 0));
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_emit(&cs, CS_ADD_IMM32(20, 20, -1));
	cs_emit(&cs, CS_BRANCH(-2, CS_COND_NEQUAL, 20));
	cs_emit(&cs, CS_STORE_MULTIPLE(30, 40, 0x3, 4));
	cs_emit(&cs, CS_MOV32(34, 0xd0e));
	cs_emit(&cs, CS_STORE_MULTIPLE(34, 40, 0x1, 12));
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_flush(&cs);
	uint32_t body_len = cs_bytes(&cs);
	uint32_t head_off[MAXJ], head_len[MAXJ];
	for (int j = 0; j < MAXJ; j++) {
		while (cs.n % 8)
			cs_emit(&cs, CS_NOP());
		head_off[j] = cs_bytes(&cs);
		uint64_t slot = c.data.va + 64 * j;
		cs_inc32(&cs, slot);
		cs_emit(&cs, CS_MOV48(40, slot));
		cs_emit(&cs, CS_MOV32(30, 0xc0de0000u | j));
		cs_emit(&cs, CS_MOV32(31, 0xfeed0000u | j));
		cs_emit(&cs, CS_MOV48(42, c.cmd.va));
		cs_emit(&cs, CS_MOV32(44, body_len));
		cs_emit(&cs, CS_JUMP(42, 44));
		head_len[j] = cs_bytes(&cs) - head_off[j];
	}
	CHECK(cs_bytes(&cs) <= 16384, "program too large");
	/* calibrate: jobs of about 1.5 s on this machine (the job timeout is 5 s) */
	d[2047] = CAL_LOOPS;
	double t0 = qp_now();
	CHECK_OK(qp_submit(fd, groups[0], c.cmd.va + head_off[0], head_len[0], sync[0], 0));
	CHECK_OK(qp_syncobj_wait(fd, &sync[0], 1, TIMEOUT_MS, true));
	double cal = qp_now() - t0;
	uint32_t loops = (uint32_t)(CAL_LOOPS * 1.5 / (cal > 0.01 ? cal : 0.01));
	if (loops < CAL_LOOPS)
		loops = CAL_LOOPS;
	d[2047] = loops;
	memset((void *)d, 0, 64 * MAXJ);
	qp_diag("calibration: %d loops in %.3f s; jobs of %u loops", CAL_LOOPS, cal, loops);
	int kfd = qp_kmsg_open(true);
	uint32_t resets0 = tp_rd(TP_GPU_RESETS), fired0 = tp_rd(TP_FIRED);
	tp_wr(TP_INJECT, TP_CODE(TP_OP_PING_DROP, TP_ANY_AS, 1));
	CHECK(tp_rd(TP_RESULT) == 0, "PING_DROP refused (result %u)", tp_rd(TP_RESULT));
	/* keep both groups busy (one job each in flight) until the reset, then two more jobs */
	int submitted = 0, across = -1, after = 0;
	int inflight[NG] = { -1, -1 };
	double end = qp_now() + 40;
	while (qp_now() < end && submitted < MAXJ && after < 2 * NG) {
		for (int g = 0; g < NG; g++) {
			int j = inflight[g];
			if (j >= 0 && qp_syncobj_wait(fd, &sync[j], 1, 0, true) == -ETIME)
				continue;
			if (j >= 0 && across >= 0)
				after++;
			if (submitted < MAXJ) {
				CHECK_OK(qp_syncobj_destroy(fd, sync[submitted]));
				CHECK_OK(qp_syncobj_create(fd, &sync[submitted], false));
				CHECK_OK(qp_submit(fd, groups[g], c.cmd.va + head_off[submitted],
						   head_len[submitted], sync[submitted], 0));
				inflight[g] = submitted++;
			}
		}
		if (across < 0 && tp_rd(TP_GPU_RESETS) != resets0) {
			/* the jobs in flight now were in flight at the reset */
			for (int g = 0; g < NG; g++)
				if (qp_syncobj_wait(fd, &sync[inflight[g]], 1, 0, true) == -ETIME)
					across = inflight[g];
			qp_diag("GPU reset seen after %d jobs; job %d in flight across it", submitted,
				across);
			if (across < 0)
				across = MAXJ; /* none: reported below */
		}
		qp_sleep_ms(5);
	}
	r = qp_syncobj_wait(fd, sync, submitted, 20000, true);
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	CHECK_OK(r);
	CHECK(tp_rd(TP_GPU_RESETS) == resets0 + 1, "%u GPU resets, want 1",
	      tp_rd(TP_GPU_RESETS) - resets0);
	CHECK(tp_rd(TP_FIRED) - fired0 == 1, "the PING drop fired %u times", tp_rd(TP_FIRED) - fired0);
	CHECK(across >= 0 && across < MAXJ, "no job was in flight across the reset");
	CHECK(qp_kmsg_count(log, "FW ping timeout") == 1, "%d 'FW ping timeout' lines, want 1",
	      qp_kmsg_count(log, "FW ping timeout"));
	CHECK(!strstr(log, "WARN") && !strstr(log, "BUG") && !strstr(log, "CS_FATAL") &&
	      !strstr(log, "job timeout"), "unexpected kernel lines (shown above)");
	for (int j = 0; j < submitted; j++) {
		volatile uint32_t *slot = d + 16 * j;
		int st = 0;
		CHECK_OK(qp_syncobj_status(fd, sync[j], &st));
		CHECK(st == 1, "job %d: fence %d", j, st);
		CHECK(slot[0] == 1, "job %d: prologue ran %u times", j, slot[0]);
		CHECK(slot[1] == (0xc0de0000u | j) && slot[2] == (0xfeed0000u | j),
		      "job %d: registers 0x%08x 0x%08x after the loop", j, slot[1], slot[2]);
		CHECK(slot[3] == 0xd0e, "job %d: done marker 0x%x", j, slot[3]);
	}
	for (int g = 0; g < NG; g++) {
		uint32_t sa = ~0u, fa = ~0u;
		CHECK_OK(qp_group_state(fd, groups[g], &sa, &fa));
		CHECK(sa == 0 && fa == 0, "group %d state 0x%x/0x%x after the reset", g, sa, fa);
	}
	qp_diag("%d jobs, all complete and intact; job %d ran across the reset", submitted, across);
	close(fd);
	return QP_PASS;
}

/*
 * Page-table updates are atomic for the GPU (docs/mmu.md "Lock regions"): panthor locks the
 * region (AS_COMMAND LOCK) around a VM_BIND that changes live mappings, and GPU accesses into
 * it stall until the UNLOCK/FLUSH ends the lock. A job loads from a page the CPU remaps back
 * and forth between two BOs as fast as it can: every load sees one BO or the other and never
 * faults; the test port's TP_LOCK_STALLS shows loads met locked regions and waited.
 */
int test_lock_region_stall(void)
{
	enum { LOOPS = 30000 };
	int r = tp_open();
	if (r)
		return r;
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	const uint64_t X = 0x3000000;
	struct qp_bo b[2];
	for (int i = 0; i < 2; i++) {
		CHECK_OK(qp_bo_create(fd, 4096, 0, 0, &b[i]));
		CHECK_OK(qp_bo_mmap(fd, &b[i]));
		*(volatile uint32_t *)b[i].map = 0x1111u * (i + 1);
	}
	CHECK_OK(qp_vm_map(fd, c.vm, &b[0], X, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC));
	/* r10 := *X, LOOPS times; r12 counts loads that saw neither BO's value */
	struct qp_cs cs = { c.cmd.map, 0 };
	cs_emit(&cs, CS_MOV48(0, X));
	cs_emit(&cs, CS_MOV32(20, LOOPS));
	cs_emit(&cs, CS_MOV32(12, 0));
	cs_emit(&cs, CS_LOAD_MULTIPLE(10, 0, 0x1, 0));
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_emit(&cs, CS_ADD_IMM32(11, 10, -0x1111));
	cs_emit(&cs, CS_BRANCH(3, CS_COND_EQUAL, 11)); /* 0x1111: fine */
	cs_emit(&cs, CS_ADD_IMM32(11, 10, -0x2222));
	cs_emit(&cs, CS_BRANCH(1, CS_COND_EQUAL, 11)); /* 0x2222: fine */
	cs_emit(&cs, CS_ADD_IMM32(12, 12, 1));
	cs_emit(&cs, CS_ADD_IMM32(20, 20, -1));
	cs_emit(&cs, CS_BRANCH(-9, CS_COND_NEQUAL, 20));
	cs_emit(&cs, CS_MOV48(2, c.data.va));
	cs_emit(&cs, CS_STORE_MULTIPLE(10, 2, 0x7, 0)); /* r10, r11, r12 */
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_flush(&cs);
	uint32_t stalls0 = tp_rd(TP_LOCK_STALLS);
	int kfd = qp_kmsg_open(true);
	double t0 = qp_now();
	CHECK_OK(qp_submit(fd, c.group, c.cmd.va, cs_bytes(&cs), c.syncobj, 0));
	int remaps = 0;
	while (qp_syncobj_wait(fd, &c.syncobj, 1, 0, true) == -ETIME && qp_now() - t0 < 20) {
		CHECK_OK(qp_vm_map(fd, c.vm, &b[(remaps + 1) & 1], X,
				   DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC));
		remaps++;
	}
	CHECK_OK(qp_syncobj_wait(fd, &c.syncobj, 1, TIMEOUT_MS, true));
	double dt = qp_now() - t0;
	uint32_t stalls = tp_rd(TP_LOCK_STALLS) - stalls0;
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	volatile uint32_t *d = c.data.map;
	int st = 0;
	uint32_t vst = ~0u;
	CHECK_OK(qp_syncobj_status(fd, c.syncobj, &st));
	CHECK_OK(qp_vm_state(fd, c.vm, &vst));
	qp_diag("%d loads over %.2f s while the page was remapped %d times: %u stalled on a "
		"locked region, %u saw neither BO, last value 0x%x; fence %d, VM state %u", LOOPS,
		dt, remaps, stalls, d[2], d[0], st, vst);
	if (st != 1 && qp_kernel_major() < 7 && qp_kmsg_count(log, "Unhandled Page fault") == 1)
		return qp_skip("6.12 panthor remaps as an unmap and a map, each flushed on its own: "
			       "the load between them faulted (translation fault at the remapped "
			       "VA), as on hardware; atomic remaps under one lock came later");
	CHECK(st == 1 && vst == 0, "fence %d VM state %u: a GPU access faulted", st, vst);
	CHECK(qp_kmsg_count(log, "Unhandled Page fault") == 0 && !strstr(log, "CS_FATAL"),
	      "a page fault during the remaps (shown above)");
	CHECK(d[2] == 0, "%u loads saw neither BO's value", d[2]);
	CHECK(d[0] == 0x1111 || d[0] == 0x2222, "last load 0x%x", d[0]);
	CHECK(remaps >= 10, "only %d remaps while the job ran", remaps);
	CHECK(stalls > 0, "no load met a locked region in %d remaps", remaps);
	qp_vm_unmap(fd, c.vm, X, 4096);
	for (int i = 0; i < 2; i++)
		qp_bo_close(fd, b[i].handle);
	qp_ctx_fini(&c);
	close(fd);
	return QP_PASS;
}

/*
 * The firmware does not come back after a reset: the test port's FW_BOOT_FAIL makes the next
 * boot fault (MCU_STATUS FATAL, no boot interrupt) and AS_STUCK makes a VM_BIND trigger the
 * reset. panthor_fw_start gives up after 1 s ("Failed to boot MCU (status=fatal)") and the
 * reset work unplugs the device ("Failed to boot MCU after reset, making device unusable."):
 * every ioctl on an open file then fails with -ENODEV and nothing oopses. Reloading the
 * driver probes the GPU again (the injected fault fired once) and jobs run.
 */
int test_fw_boot_fail_unplug(void)
{
	int r = tp_open();
	if (r)
		return r;
	CHECK_OK(pm_keep_on());
	int fd = qp_open();
	struct qp_ctx a;
	CHECK_OK(qp_ctx_init(&a, fd, 4096, 4096));
	CHECK_OK(run_inc(&a, 1)); /* a's VM owns an AS slot: its next map LOCKs */
	int kfd = qp_kmsg_open(true);
	uint32_t fired0 = tp_rd(TP_FIRED);
	tp_wr(TP_INJECT, TP_CODE(TP_OP_FW_BOOT_FAIL, TP_ANY_AS, 1));
	CHECK(tp_rd(TP_RESULT) == 0 && tp_rd(TP_BOOT_ARMED) == 1, "arm: result %u boot armed %u",
	      tp_rd(TP_RESULT), tp_rd(TP_BOOT_ARMED));
	tp_wr(TP_INJECT, TP_CODE(TP_OP_AS_STUCK, TP_ANY_AS, 1));
	struct qp_bo bo;
	CHECK_OK(qp_bo_create(fd, 4096, 0, 0, &bo));
	double t0 = qp_now();
	r = qp_vm_map(fd, a.vm, &bo, 0x5000000, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC);
	static char log[1 << 16];
	bool gone = qp_kmsg_wait(kfd, log, sizeof(log), "making device unusable", 15000);
	double dt = qp_now() - t0;
	close(kfd);
	qp_kmsg_show(log);
	qp_diag("VM_BIND %d; device unusable after %.2f s; test port fired %u, boot armed %u", r,
		dt, tp_rd(TP_FIRED) - fired0, tp_rd(TP_BOOT_ARMED));
	CHECK(gone, "no 'making device unusable' within 15 s of the failed firmware boot");
	CHECK(tp_rd(TP_FIRED) - fired0 == 2 && tp_rd(TP_BOOT_ARMED) == 0,
	      "fired %u (want the AS hang and the boot failure)", tp_rd(TP_FIRED) - fired0);
	CHECK(qp_kmsg_count(log, "Failed to boot MCU (status=fatal)") == 1,
	      "want one 'Failed to boot MCU (status=fatal)' line");
	CHECK(!strstr(log, "WARNING:") && !strstr(log, "BUG:") && !strstr(log, "Oops"),
	      "kernel warning after the unplug (shown above)");
	/* the open file outlives the device: every ioctl now says the device is gone */
	struct drm_panthor_gpu_info gi;
	CHECK_ERR(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, &gi, sizeof(gi)), ENODEV);
	qp_ctx_fini(&a);
	close(fd);
	/* a driver reload probes the GPU again: the firmware boots, jobs run */
	CHECK_OK(qp_rm_module("panthor"));
	CHECK(qp_wait_render_node(false, 2000) >= 0, "render node outlived panthor");
	CHECK_OK(qp_ins_module("/lib/modules/panthor.ko"));
	CHECK(qp_wait_render_node(true, 10000) >= 0, "panthor did not re-probe");
	CHECK_OK(pm_keep_on());
	fd = qp_open();
	CHECK_OK(fresh_job_works(fd, "after the reload"));
	close(fd);
	return QP_PASS;
}

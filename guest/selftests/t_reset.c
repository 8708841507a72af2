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
#define TP_BASE 0xF00
#define TP_MAGIC 0x00
#define TP_INJECT 0x08
#define TP_RESULT 0x0C
#define TP_FIRED 0x10
#define TP_AS_ARMED 0x14
#define TP_AS_ACTIVE 0x18
#define TP_GPU_RESETS 0x20
#define TP_MAGIC_VALUE 0x50545051u
#define TP_OP_DISARM 0u
#define TP_OP_AS_STUCK 1u
#define TP_OP_PING_DROP 2u
#define TP_OP_WORK_HANG 4u
#define TP_ANY_AS 0xFFu
#define TP_CODE(op, as, n) ((op) | (as) << 8 | (uint32_t)(n) << 16)

static volatile uint32_t *tp;

static uint32_t tp_rd(unsigned off) { return tp[(TP_BASE + off) / 4]; }
static void tp_wr(unsigned off, uint32_t v) { tp[(TP_BASE + off) / 4] = v; }

/* map the port through the PCI function's resource2; 0, or a skip/fail result */
static int tp_open(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	if (!d)
		return qp_skip("no /sys/bus/pci/devices");
	char path[512] = "";
	struct dirent *e;
	while ((e = readdir(d))) {
		char p[400], v[32];
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (qp_read_file(p, v, sizeof(v)) == 0 && strtoul(v, NULL, 16) == 0x13b5) {
			snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/resource2", e->d_name);
			break;
		}
	}
	closedir(d);
	if (!path[0])
		return qp_skip("no 0x13b5 PCI function");
	int fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0)
		return qp_skip("open %s: %s", path, strerror(errno));
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return qp_skip("mmap %s: %s", path, strerror(errno));
	tp = m;
	if (tp_rd(TP_MAGIC) != TP_MAGIC_VALUE)
		return qp_skip("no qemu-panthor test port in BAR2 (magic 0x%x)", tp_rd(TP_MAGIC));
	return 0;
}

/* keep the device out of runtime suspend: panthor runs its reset work only while the device
 * is ACTIVE (a suspend racing the reset defers it to a slow resume); the runner restores it */
static int pm_keep_on(void)
{
	return qp_pm_control_set("on");
}

/* kernel major version (6 for the 6.12 line, 7 for 7.x) */
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

/* Jobs: user command streams run by the emulated CSF firmware through GROUP_SUBMIT. Every
 * test checks the data the GPU wrote, read back through the CPU mapping. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "qp.h"

#define JOB_TIMEOUT_MS 10000

static int fence_ok(int fd, uint32_t syncobj, const char *what)
{
	int st = 0;
	CHECK_OK(qp_syncobj_status(fd, syncobj, &st));
	CHECK(st == 1, "%s: fence status %d (%s)", what, st, st < 0 ? strerror(-st) : "pending");
	return QP_PASS;
}

static int group_healthy(int fd, uint32_t group, const char *what)
{
	uint32_t state = ~0u, fq = ~0u;
	CHECK_OK(qp_group_state(fd, group, &state, &fq));
	CHECK(state == 0 && fq == 0, "%s: group state 0x%x fatal_queues 0x%x", what, state, fq);
	return QP_PASS;
}

int test_job_store_deadbeef(void)
{
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	volatile uint32_t *d = c.data.map;
	d[0] = 0x12345678; /* the job must overwrite this */
	/* a second target whose physical address the guest can name: an imported udmabuf page */
	const uint64_t IMP_VA = 0x3000000;
	struct qp_bo imp;
	int ir = qp_udmabuf_bo(fd, 4096, &imp);
	if (ir)
		qp_diag("no udmabuf import (%s): job_bo_pa not reported", strerror(-ir));
	else
		CHECK_OK(qp_vm_map(fd, c.vm, &imp, IMP_VA, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC));
	/* [mmu] a 2 MiB range too, bound at a 2 MiB-aligned VA: the host translates every page
	 * through QMP while the job holds (qp.hold) and compares with these physical pages. With
	 * shmem THP the pages are one 2 MiB folio and io-pgtable maps a single level-2 block. */
	const uint64_t BIND2M_VA = 0x4000000, SZ_2M = 2u << 20;
	char thp_old[64] = "";
	const char *thp = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
	if (qp_read_file(thp, thp_old, sizeof(thp_old)) == 0)
		qp_write_file(thp, "always");
	struct qp_bo big;
	int br = ir ? ir : qp_udmabuf_bo(fd, SZ_2M, &big);
	if (thp_old[0]) { /* "always [never] ...": restore the bracketed setting */
		char *l = strchr(thp_old, '['), *r = l ? strchr(l, ']') : NULL;
		if (l && r) {
			*r = '\0';
			qp_write_file(thp, l + 1);
		}
	}
	if (!br) {
		CHECK_OK(qp_vm_map(fd, c.vm, &big, BIND2M_VA, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC));
		char runs[4096];
		size_t o = 0;
		uint64_t run_pa = 0, n = 0;
		for (uint64_t off = 0; off <= SZ_2M; off += 4096) {
			uint64_t pa = off < SZ_2M ? qp_virt_to_phys((char *)big.map + off) : 0;
			if (off < SZ_2M)
				CHECK(pa != 0, "no PA for page %" PRIu64 " of the 2 MiB BO", off / 4096);
			if (n && pa == run_pa + n * 4096) {
				n++;
				continue;
			}
			if (n && o < sizeof(runs) - 40)
				o += snprintf(runs + o, sizeof(runs) - o, "%s0x%" PRIx64 ":%" PRIu64,
					      o ? "," : "", run_pa, n);
			run_pa = pa;
			n = 1;
		}
		qp_diag("qp-info: bind2m_va=0x%" PRIx64 " bind2m_runs=%s", BIND2M_VA, runs);
	}
	struct qp_cs cs = { c.cmd.map, 0 };
	cs_store32(&cs, c.data.va, 0xdeadbeef);
	if (!ir)
		cs_store32(&cs, IMP_VA, 0xdeadbeef);
	cs_flush(&cs);
	uint64_t pa = ir ? 0 : qp_virt_to_phys(imp.map);
	if (!ir) {
		qp_diag("qp-info: job_bo_va=0x%" PRIx64 " job_bo_pa=0x%" PRIx64, IMP_VA, pa);
		CHECK(pa != 0, "no physical address for the imported page in /proc/self/pagemap");
	}
	double t0 = qp_now();
	CHECK_OK(qp_ctx_run(&c, 0, cs_bytes(&cs), JOB_TIMEOUT_MS));
	qp_diag("job done in %.1f ms", (qp_now() - t0) * 1000);
	CHECK(d[0] == 0xdeadbeef, "data[0] = 0x%08x, want 0xdeadbeef", d[0]);
	for (int i = 1; i < 1024; i++)
		CHECK(d[i] == 0, "data[%d] = 0x%08x: the job wrote outside its target", i, d[i]);
	if (!ir) {
		volatile uint32_t *m = imp.map;
		CHECK(m[0] == 0xdeadbeef, "imported page [0] = 0x%08x, want 0xdeadbeef", m[0]);
		CHECK(m[1] == 0, "imported page [1] = 0x%08x", m[1]);
		/* the page did not move while the GPU used it */
		CHECK(qp_virt_to_phys(imp.map) == pa, "imported page moved");
	}
	/* qp.hold=N (exported by /init as QP_HOLD): keep the job's VM, BOs and group alive
	 * for N seconds so a host test can inspect them through the backend's QMP. The device
	 * is kept out of runtime suspend meanwhile (power/control=on), so the VM keeps its AS
	 * programmed (an idle VM keeps its slot; a suspend would disable every AS). */
	const char *hold = getenv("QP_HOLD");
	if (hold && atoi(hold) > 0) {
		if (qp_pm_control_set("on"))
			qp_diag("could not pin the device awake: the VM may lose its AS to a suspend");
		qp_diag("qp-hold: seconds=%d", atoi(hold));
		sleep((unsigned)atoi(hold));
	}
	if (fence_ok(fd, c.syncobj, "job") != QP_PASS)
		return QP_FAIL;
	if (group_healthy(fd, c.group, "after the job") != QP_PASS)
		return QP_FAIL;
	close(fd);
	return QP_PASS;
}

int test_job_1000_sequential(void)
{
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	uint32_t big;
	CHECK_OK(qp_group_create_ex(fd, c.vm, PANTHOR_GROUP_PRIORITY_MEDIUM, 65536, 1, &big));
	volatile uint32_t *d = c.data.map;
	struct qp_cs cs = { c.cmd.map, 0 };
	cs_inc32(&cs, c.data.va);
	cs_flush(&cs);
	const int N = 1000, STEP = 10;
	/* first: submit and wait one by one, checking the counter after each job */
	double t0 = qp_now();
	for (int i = 0; i < STEP; i++) {
		CHECK_OK(qp_submit(fd, big, c.cmd.va, cs_bytes(&cs), c.syncobj, 0));
		CHECK_OK(qp_syncobj_wait(fd, &c.syncobj, 1, JOB_TIMEOUT_MS, true));
		CHECK(d[0] == (uint32_t)i + 1, "after job %d the counter is %u", i + 1, d[0]);
	}
	double t1 = qp_now();
	/* then: the rest back to back (many in flight), only the last one signals */
	for (int i = STEP; i < N; i++)
		CHECK_OK(qp_submit(fd, big, c.cmd.va, cs_bytes(&cs), i == N - 1 ? c.syncobj : 0, 0));
	double t2 = qp_now();
	CHECK_OK(qp_syncobj_wait(fd, &c.syncobj, 1, 60000, true));
	double t3 = qp_now();
	qp_diag("%d round trips in %.2f s (%.1f ms/job); %d queued jobs: submitted in %.2f s, "
		"done after %.2f s (%.2f ms/job); total %.2f s", STEP, t1 - t0,
		(t1 - t0) * 1000 / STEP, N - STEP, t2 - t1, t3 - t1, (t3 - t1) * 1000 / (N - STEP),
		t3 - t0);
	CHECK(d[0] == (uint32_t)N, "counter %u after %d jobs", d[0], N);
	CHECK(t3 - t0 < 60, "1000 jobs took %.1f s", t3 - t0);
	if (fence_ok(fd, c.syncobj, "last job") != QP_PASS)
		return QP_FAIL;
	if (group_healthy(fd, big, "after 1000 jobs") != QP_PASS)
		return QP_FAIL;
	close(fd);
	return QP_PASS;
}

/* NG groups (one VM), each running J jobs that bump its own counter and set its marker */
int test_job_8_concurrent_groups(void)
{
	enum { NG = 8, J = 10 };
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	uint32_t groups[NG], sync[NG];
	uint32_t off[NG], len[NG];
	struct qp_cs cs = { c.cmd.map, 0 };
	for (int g = 0; g < NG; g++) {
		CHECK_OK(qp_group_create(fd, c.vm, &groups[g]));
		CHECK_OK(qp_syncobj_create(fd, &sync[g], false));
		while (cs.n % 8)
			cs_emit(&cs, CS_NOP()); /* streams start 64-byte aligned */
		off[g] = cs_bytes(&cs);
		cs_inc32(&cs, c.data.va + g * 4);
		cs_store32(&cs, c.data.va + 256 + g * 4, 0xc0de0000u | g);
		cs_flush(&cs);
		len[g] = cs_bytes(&cs) - off[g];
	}
	volatile uint32_t *d = c.data.map;
	double t0 = qp_now();
	for (int j = 0; j < J; j++)
		for (int g = 0; g < NG; g++)
			CHECK_OK(qp_submit(fd, groups[g], c.cmd.va + off[g], len[g],
					   j == J - 1 ? sync[g] : 0, 0));
	int r = qp_syncobj_wait(fd, sync, NG, 30000, true);
	qp_diag("%d groups x %d jobs: %.2f s", NG, J, qp_now() - t0);
	for (int g = 0; g < NG; g++) {
		uint32_t st = 0, fq = 0;
		qp_group_state(fd, groups[g], &st, &fq);
		if (d[g] != J || d[64 + g] != (0xc0de0000u | g) || st)
			qp_diag("group %d: counter %u marker 0x%08x state 0x%x", g, d[g], d[64 + g],
				st);
	}
	CHECK_OK(r);
	for (int g = 0; g < NG; g++) {
		CHECK(d[g] == J, "group %d counter %u, want %d", g, d[g], J);
		CHECK(d[64 + g] == (0xc0de0000u | g), "group %d marker 0x%08x", g, d[64 + g]);
		if (fence_ok(fd, sync[g], "group fence") != QP_PASS ||
		    group_healthy(fd, groups[g], "group") != QP_PASS)
			return QP_FAIL;
	}
	close(fd);
	return QP_PASS;
}

/* Resident groups run side by side: a HIGH-priority group's stream spins on a memory flag
 * (a LOAD/BRANCH loop, not a sync wait) that a LOW-priority group, resident in another CSG
 * slot, sets. On hardware every resident CSG executes; both jobs finish. */
int test_csg_concurrent(void)
{
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	uint32_t hi, lo, s_hi, s_lo;
	uint8_t hi_prio = geteuid() == 0 ? PANTHOR_GROUP_PRIORITY_HIGH : PANTHOR_GROUP_PRIORITY_MEDIUM;
	CHECK_OK(qp_group_create_ex(fd, c.vm, hi_prio, 4096, 1, &hi));
	CHECK_OK(qp_group_create_ex(fd, c.vm, PANTHOR_GROUP_PRIORITY_LOW, 4096, 1, &lo));
	CHECK_OK(qp_syncobj_create(fd, &s_hi, false));
	CHECK_OK(qp_syncobj_create(fd, &s_lo, false));
	volatile uint32_t *d = c.data.map;
	uint64_t flag = c.data.va, done = c.data.va + 4;
	struct qp_cs cs = { c.cmd.map, 0 };
	/* spinner: r10 := *flag until non-zero, then *done := 0x5eed */
	cs_emit(&cs, CS_MOV48(0, flag));
	cs_emit(&cs, CS_LOAD_MULTIPLE(10, 0, 0x1, 0));
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_emit(&cs, CS_BRANCH(-3, CS_COND_EQUAL, 10));
	cs_store32(&cs, done, 0x5eed);
	cs_flush(&cs);
	uint32_t spin_len = cs_bytes(&cs);
	while (cs.n % 8)
		cs_emit(&cs, CS_NOP());
	uint32_t set_off = cs_bytes(&cs);
	cs_store32(&cs, flag, 1);
	cs_flush(&cs);
	uint32_t set_len = cs_bytes(&cs) - set_off;
	CHECK_OK(qp_submit(fd, hi, c.cmd.va, spin_len, s_hi, 0));
	CHECK_OK(qp_submit(fd, lo, c.cmd.va + set_off, set_len, s_lo, 0));
	uint32_t both[2] = { s_hi, s_lo };
	int r = qp_syncobj_wait(fd, both, 2, 10000, true);
	qp_diag("flag %u done 0x%x", d[0], d[1]);
	CHECK_OK(r);
	CHECK(d[0] == 1, "the low-priority group did not run: flag %u", d[0]);
	CHECK(d[1] == 0x5eed, "the spinning group did not finish: done 0x%x", d[1]);
	if (fence_ok(fd, s_hi, "spinner fence") != QP_PASS ||
	    fence_ok(fd, s_lo, "setter fence") != QP_PASS ||
	    group_healthy(fd, hi, "spinner group") != QP_PASS ||
	    group_healthy(fd, lo, "setter group") != QP_PASS)
		return QP_FAIL;
	close(fd);
	return QP_PASS;
}

/* More groups than CSG slots, each with one long-running stream: panthor's ticks suspend and
 * resume them (timeslicing), possibly into other slots. Every stream must continue exactly
 * where it stopped: its prologue (a counter increment) runs once, and registers it set before
 * a long loop still hold their values after it. */
int test_timeslice_resume(void)
{
	enum { NG = 12, LOOPS = 60000 };
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	uint32_t groups[NG], sync[NG];
	struct qp_cs cs = { c.cmd.map, 0 };
	/* one program for all: r40:r41 = the group's 64-byte data slot, set by a per-group head */
	uint32_t body = 0;
	uint32_t head_off[NG], head_len[NG];
	cs_emit(&cs, CS_MOV32(20, LOOPS));
	cs_emit(&cs, CS_ADD_IMM32(20, 20, -1));
	cs_emit(&cs, CS_BRANCH(-2, CS_COND_NEQUAL, 20));
	cs_emit(&cs, CS_STORE_MULTIPLE(30, 40, 0xf, 4)); /* r30..r33 -> slot[1..4] */
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_emit(&cs, CS_MOV32(34, 0xd0e));
	cs_emit(&cs, CS_STORE_MULTIPLE(34, 40, 0x1, 20)); /* done marker -> slot[5] */
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_flush(&cs);
	uint32_t body_len = cs_bytes(&cs) - body;
	for (int g = 0; g < NG; g++) {
		while (cs.n % 8)
			cs_emit(&cs, CS_NOP());
		head_off[g] = cs_bytes(&cs);
		uint64_t slot = c.data.va + 64 * g;
		cs_inc32(&cs, slot); /* the prologue: must run exactly once */
		cs_emit(&cs, CS_MOV48(40, slot));
		for (int r = 0; r < 4; r++)
			cs_emit(&cs, CS_MOV32(30 + r, 0xa0000000u | (uint32_t)(r << 16) | g));
		cs_emit(&cs, CS_MOV48(42, c.cmd.va + body));
		cs_emit(&cs, CS_MOV32(44, body_len));
		cs_emit(&cs, CS_JUMP(42, 44));
		head_len[g] = cs_bytes(&cs) - head_off[g];
	}
	for (int g = 0; g < NG; g++) {
		CHECK_OK(qp_group_create(fd, c.vm, &groups[g]));
		CHECK_OK(qp_syncobj_create(fd, &sync[g], false));
	}
	double t0 = qp_now();
	for (int g = 0; g < NG; g++)
		CHECK_OK(qp_submit(fd, groups[g], c.cmd.va + head_off[g], head_len[g], sync[g], 0));
	int r = qp_syncobj_wait(fd, sync, NG, 50000, true);
	qp_diag("%d groups x %d loop iterations: %.2f s", NG, LOOPS, qp_now() - t0);
	volatile uint32_t *d = c.data.map;
	CHECK_OK(r);
	for (int g = 0; g < NG; g++) {
		volatile uint32_t *slot = d + 16 * g;
		CHECK(slot[0] == 1, "group %d: prologue ran %u times", g, slot[0]);
		for (int k = 0; k < 4; k++)
			CHECK(slot[1 + k] == (0xa0000000u | (uint32_t)(k << 16) | g),
			      "group %d: r%d 0x%08x after the loop", g, 30 + k, slot[1 + k]);
		CHECK(slot[5] == 0xd0e, "group %d: done marker 0x%x", g, slot[5]);
		if (fence_ok(fd, sync[g], "fence") != QP_PASS ||
		    group_healthy(fd, groups[g], "group") != QP_PASS)
			return QP_FAIL;
	}
	close(fd);
	return QP_PASS;
}

/* a job on another group waits for a syncobj signalled by a first job */
int test_job_wait_syncobj(void)
{
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	uint32_t g2, s2;
	CHECK_OK(qp_group_create(fd, c.vm, &g2));
	CHECK_OK(qp_syncobj_create(fd, &s2, false));
	volatile uint32_t *d = c.data.map;
	struct qp_cs cs = { c.cmd.map, 0 };
	/* A: 20 increments of data[0] then data[1] = 7 */
	for (int i = 0; i < 20; i++)
		cs_inc32(&cs, c.data.va);
	cs_store32(&cs, c.data.va + 4, 7);
	cs_flush(&cs);
	uint32_t alen = cs_bytes(&cs);
	while (cs.n % 8)
		cs_emit(&cs, CS_NOP());
	uint32_t boff = cs_bytes(&cs);
	/* B: data[2] = data[0] + data[1] */
	cs_emit(&cs, CS_MOV48(0, c.data.va));
	cs_emit(&cs, CS_LOAD_MULTIPLE(10, 0, 0x3, 0)); /* r10 = data[0], r11 = data[1] */
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_emit(&cs, CS_ADD_IMM32(12, 10, 7)); /* r12 = data[0] + 7 */
	cs_emit(&cs, CS_STORE_MULTIPLE(11, 0, 0x3, 8)); /* data[2] = r11, data[3] = r12 */
	cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
	cs_flush(&cs);
	uint32_t blen = cs_bytes(&cs) - boff;
	CHECK_OK(qp_submit(fd, c.group, c.cmd.va, alen, c.syncobj, 0));
	CHECK_OK(qp_submit(fd, g2, c.cmd.va + boff, blen, s2, c.syncobj));
	CHECK_OK(qp_syncobj_wait(fd, &s2, 1, JOB_TIMEOUT_MS, true));
	CHECK(d[0] == 20 && d[1] == 7, "A wrote %u, %u", d[0], d[1]);
	CHECK(d[2] == 7 && d[3] == 27, "B saw data[1]=%u data[0]+7=%u: it ran before A finished",
	      d[2], d[3]);
	/* waiting on a syncobj that has no fence is refused at submit time */
	uint32_t empty;
	CHECK_OK(qp_syncobj_create(fd, &empty, false));
	CHECK_ERR(qp_submit(fd, g2, c.cmd.va + boff, blen, 0, empty), EINVAL);
	close(fd);
	return QP_PASS;
}

int test_job_bad_opcode_fatal(void)
{
	int fd = qp_open();
	struct qp_ctx bad, good;
	CHECK_OK(qp_ctx_init(&bad, fd, 4096, 4096));
	CHECK_OK(qp_ctx_init(&good, fd, 4096, 4096));
	int kfd = qp_kmsg_open(true);
	struct qp_cs cs = { bad.cmd.map, 0 };
	cs_store32(&cs, bad.data.va, 0x600d);
	cs_emit(&cs, CS_OP(0x7e) | 0x1234); /* not a v10 opcode */
	cs_store32(&cs, bad.data.va + 4, 0xbad);
	cs_flush(&cs);
	volatile uint32_t *bd = bad.data.map, *gd = good.data.map;
	/* the faulting job and a good one queued behind it, in one GROUP_SUBMIT */
	uint32_t behind;
	CHECK_OK(qp_syncobj_create(fd, &behind, false));
	uint32_t blen = cs_bytes(&cs);
	while (cs.n % 8)
		cs_emit(&cs, CS_NOP());
	uint32_t boff = cs_bytes(&cs);
	cs_store32(&cs, bad.data.va + 8, 0xbe11);
	cs_flush(&cs);
	struct drm_panthor_sync_op s1 = { .flags = DRM_PANTHOR_SYNC_OP_SIGNAL, .handle = bad.syncobj };
	struct drm_panthor_sync_op s2 = { .flags = DRM_PANTHOR_SYNC_OP_SIGNAL, .handle = behind };
	struct drm_panthor_queue_submit qs[2] = {
		{ .stream_size = blen, .stream_addr = bad.cmd.va, .syncs = { sizeof(s1), 1, (uintptr_t)&s1 } },
		{ .stream_size = cs_bytes(&cs) - boff, .stream_addr = bad.cmd.va + boff,
		  .syncs = { sizeof(s2), 1, (uintptr_t)&s2 } },
	};
	struct drm_panthor_group_submit gs = { .group_handle = bad.group,
					       .queue_submits = { sizeof(qs[0]), 2, (uintptr_t)qs } };
	double t0 = qp_now();
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANTHOR_GROUP_SUBMIT, &gs));
	/* the good group runs while the bad one faults */
	struct qp_cs gcs = { good.cmd.map, 0 };
	cs_store32(&gcs, good.data.va, 0x900d);
	cs_flush(&gcs);
	CHECK_OK(qp_ctx_run(&good, 0, cs_bytes(&gcs), JOB_TIMEOUT_MS));
	CHECK(gd[0] == 0x900d, "good group wrote 0x%x", gd[0]);
	CHECK_OK(qp_syncobj_wait(fd, &bad.syncobj, 1, 20000, true));
	double dt = qp_now() - t0;
	int st = 0;
	CHECK_OK(qp_syncobj_status(fd, bad.syncobj, &st));
	uint32_t state = 0, fq = 0;
	CHECK_OK(qp_group_state(fd, bad.group, &state, &fq));
	qp_diag("bad job: fence status %d, group state 0x%x fatal_queues 0x%x after %.2f s", st,
		state, fq, dt);
	CHECK(st < 0, "fence of the faulting job has no error (status %d)", st);
	CHECK(state & DRM_PANTHOR_GROUP_STATE_FATAL_FAULT, "group state 0x%x lacks FATAL_FAULT",
	      state);
	CHECK(fq & 1, "fatal_queues 0x%x lacks queue 0", fq);
	CHECK(bd[0] == 0x600d, "store before the bad instruction: 0x%x", bd[0]);
	CHECK(bd[1] == 0, "store after the bad instruction landed: 0x%x", bd[1]);
	/* the job queued behind it does not run, and its fence completes with an error */
	int r2 = qp_syncobj_wait(fd, &behind, 1, 20000, true);
	int st2 = 0;
	qp_syncobj_status(fd, behind, &st2);
	qp_diag("job queued behind it: wait %d, fence %d after %.2f s", r2, st2, qp_now() - t0);
	CHECK(r2 == 0, "the fence of the job queued behind the fault never signalled");
	CHECK(st2 < 0, "queued job's fence has no error: %d", st2);
	CHECK(bd[2] == 0, "the job queued behind the fault ran: 0x%x", bd[2]);
	/* the faulty group takes no more jobs; the other still works */
	/* GROUP_SUBMIT -> panthor_job_create(): -EINVAL when !group_can_run(), which a
	 * non-zero fatal_queues makes false (7.2 panthor_sched.c ~1081-1087, ~4018-4021) */
	CHECK_ERR(qp_submit(fd, bad.group, bad.cmd.va, 64, 0, 0), EINVAL);
	gcs.n = 0;
	cs_store32(&gcs, good.data.va + 4, 0x900d2);
	cs_flush(&gcs);
	CHECK_OK(qp_ctx_run(&good, 0, cs_bytes(&gcs), JOB_TIMEOUT_MS));
	CHECK(gd[1] == 0x900d2, "good group after the fault wrote 0x%x", gd[1]);
	if (group_healthy(fd, good.group, "good group") != QP_PASS)
		return QP_FAIL;
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n"))
		if (strstr(l, "panthor"))
			qp_diag("kmsg: %.200s", l);
	close(fd);
	return QP_PASS;
}

/* more VMs than address-space slots (and than CSG slots), jobs from all of them in flight;
 * with faulty >= 0 that VM's stream first touches an unmapped VA. The faulting group's fault
 * must be reported at exactly that VA, in whatever AS its VM holds at the time, and kill that
 * group only: no other VM's group may be blamed. */
static int many_vms(int faulty)
{
	const uint64_t hole = 0x7654320ull;
	int fd = qp_open();
	const struct drm_panthor_gpu_info *gi = qp_gpu(fd);
	int as = __builtin_popcount(gi->as_present);
	int nvm = as + 5 > 12 ? as + 5 : 12;
	enum { J = 4, MAXVM = 40 };
	CHECK(nvm <= MAXVM, "as_present 0x%x", gi->as_present);
	static struct qp_ctx c[MAXVM];
	uint32_t sync[MAXVM], len[MAXVM], wait[MAXVM];
	bool fenced[MAXVM];
	int kfd = faulty >= 0 ? qp_kmsg_open(true) : -1;
	for (int v = 0; v < nvm; v++) {
		CHECK_OK(qp_ctx_init(&c[v], fd, 4096, 4096));
		struct qp_cs cs = { c[v].cmd.map, 0 };
		if (v == faulty)
			cs_store32(&cs, hole, 1);
		cs_inc32(&cs, c[v].data.va);
		cs_store32(&cs, c[v].data.va + 4, 0x7a000000u | v);
		cs_flush(&cs);
		sync[v] = c[v].syncobj;
		len[v] = cs_bytes(&cs);
		fenced[v] = false;
	}
	double t0 = qp_now();
	int rejected = 0;
	for (int j = 0; j < J; j++)
		for (int v = 0; v < nvm; v++) {
			int r = qp_submit(fd, c[v].group, c[v].cmd.va, len[v], j == J - 1 ? sync[v] : 0, 0);
			if (v == faulty && r == -EINVAL) {
				rejected++; /* the group is already known faulty: refused */
				continue;
			}
			CHECK(r == 0, "submit %d to VM %u: %s", j, c[v].vm, strerror(-r));
			if (j == J - 1)
				fenced[v] = true;
		}
	/* a refused last submit leaves its syncobj without a fence: wait for the others only */
	uint32_t nwait = 0;
	for (int v = 0; v < nvm; v++)
		if (fenced[v])
			wait[nwait++] = sync[v];
	int r = qp_syncobj_wait(fd, wait, nwait, 30000, true);
	qp_diag("%d VMs (%d AS slots incl. the MCU's) x %d jobs: %.2f s%s", nvm, as, J,
		qp_now() - t0, rejected ? " (submits to the faulty group refused once it was)" : "");
	int bad = 0;
	for (int v = 0; v < nvm; v++) {
		volatile uint32_t *d = c[v].data.map;
		uint32_t st = 0;
		int fst = 0;
		qp_group_state(fd, c[v].group, &st, NULL);
		qp_syncobj_status(fd, sync[v], &fst);
		bool ok = v == faulty
				  ? (d[0] == 0 && d[1] == 0 && (st & DRM_PANTHOR_GROUP_STATE_FATAL_FAULT) &&
				     (fenced[v] ? fst < 0 : fst == 0))
				  : (d[0] == J && d[1] == (0x7a000000u | v) && !st && fst == 1);
		if (!ok) {
			qp_diag("VM %u%s: counter %u marker 0x%08x group state 0x%x fence %d%s", c[v].vm,
				v == faulty ? " (faulty)" : "", d[0], d[1], st, fst,
				fenced[v] ? "" : " (last submit refused)");
			bad++;
		}
	}
	CHECK_OK(r);
	CHECK(bad == 0, "%d of %d VMs have wrong data or state", bad, nvm);
	if (faulty >= 0) {
		/* the kernel names the hole, and nothing else, as the faulting VA */
		static char log[65536];
		qp_kmsg_drain(kfd, log, sizeof(log));
		close(kfd);
		int faults = 0;
		for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n")) {
			const char *p = strstr(l, "Unhandled Page fault in AS");
			if (!p || !(p = strstr(p, " at VA ")))
				continue;
			uint64_t va = strtoull(p + 7, NULL, 16);
			CHECK(va == hole, "fault at VA 0x%" PRIx64 ": %.160s", va, l);
			faults++;
		}
		CHECK(faults >= 1, "no 'Unhandled Page fault ... at VA' line for the faulting VM");
	}
	close(fd);
	return QP_PASS;
}

int test_job_many_vms(void) { return many_vms(-1); }
int test_job_fault_among_many_vms(void) { return many_vms(0); }

/* a job touching an unmapped VA: MMU fault, the group/fence report it, the log names the VA */
int test_job_mmu_fault(void)
{
	const uint64_t hole = 0x7654320ull; /* 4-byte aligned, never mapped */
	int fd = qp_open();
	struct qp_ctx f, other;
	CHECK_OK(qp_ctx_init(&f, fd, 4096, 4096));
	CHECK_OK(qp_ctx_init(&other, fd, 4096, 4096));
	int kfd = qp_kmsg_open(true);
	struct qp_cs cs = { f.cmd.map, 0 };
	cs_store32(&cs, f.data.va, 0x11111111);
	cs_store32(&cs, hole, 0x22222222);
	cs_store32(&cs, f.data.va + 4, 0x33333333);
	cs_flush(&cs);
	volatile uint32_t *d = f.data.map;
	double t0 = qp_now();
	CHECK_OK(qp_submit(fd, f.group, f.cmd.va, cs_bytes(&cs), f.syncobj, 0));
	int r = qp_syncobj_wait(fd, &f.syncobj, 1, 20000, true);
	double dt = qp_now() - t0;
	int st = 0;
	uint32_t state = 0, fq = 0, vmstate = 0;
	qp_syncobj_status(fd, f.syncobj, &st);
	qp_group_state(fd, f.group, &state, &fq);
	qp_vm_state(fd, f.vm, &vmstate);
	qp_diag("faulting job: wait %d, fence %d, group state 0x%x fatal_queues 0x%x, VM state %u, "
		"after %.2f s", r, st, state, fq, vmstate, dt);
	CHECK(r == 0, "the faulting job's fence never signalled: %s", strerror(-r));
	/* same on 6.12 (fence -22, state FATAL_FAULT, fatal_queues 0x1 after 0.02 s) */
	r = qp_check_fault_ended_job(st, state, fq, dt);
	if (r)
		return r;
	CHECK(d[0] == 0x11111111, "store before the fault: 0x%x", d[0]);
	CHECK(d[1] == 0, "store after the fault landed: 0x%x", d[1]);
	/* the kernel log names exactly the VA the stream touched */
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	bool found = false;
	for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n")) {
		if (!strstr(l, "panthor"))
			continue;
		qp_diag("kmsg: %.240s", l);
		const char *p = strstr(l, "Unhandled Page fault in AS");
		if (p && (p = strstr(p, " at VA "))) {
			uint64_t va = strtoull(p + 7, NULL, 16);
			CHECK(va == hole, "fault logged at VA 0x%" PRIx64 ", stream touched 0x%" PRIx64,
			      va, hole);
			found = true;
		}
	}
	CHECK(found, "no 'Unhandled Page fault in AS<n> at VA' line in the kernel log");
	/* another VM keeps working, and so does a fresh group on a new VM */
	struct qp_cs ocs = { other.cmd.map, 0 };
	cs_store32(&ocs, other.data.va, 0x44444444);
	cs_flush(&ocs);
	CHECK_OK(qp_ctx_run(&other, 0, cs_bytes(&ocs), JOB_TIMEOUT_MS));
	CHECK(((volatile uint32_t *)other.data.map)[0] == 0x44444444, "other VM's job wrote 0x%x",
	      ((volatile uint32_t *)other.data.map)[0]);
	struct qp_ctx fresh;
	CHECK_OK(qp_ctx_init(&fresh, fd, 4096, 4096));
	ocs = (struct qp_cs){ fresh.cmd.map, 0 };
	cs_store32(&ocs, fresh.data.va, 0x55555555);
	cs_flush(&ocs);
	CHECK_OK(qp_ctx_run(&fresh, 0, cs_bytes(&ocs), JOB_TIMEOUT_MS));
	CHECK(((volatile uint32_t *)fresh.data.map)[0] == 0x55555555, "fresh VM's job wrote 0x%x",
	      ((volatile uint32_t *)fresh.data.map)[0]);
	close(fd);
	return QP_PASS;
}

/* destroying a group with jobs queued and running: every fence still signals */
int test_group_destroy_in_flight(void)
{
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	struct qp_cs cs = { c.cmd.map, 0 };
	for (int i = 0; i < 50; i++)
		cs_inc32(&cs, c.data.va);
	cs_flush(&cs);
	const int N = 40;
	uint32_t first;
	CHECK_OK(qp_syncobj_create(fd, &first, false));
	for (int i = 0; i < N; i++)
		CHECK_OK(qp_submit(fd, c.group, c.cmd.va, cs_bytes(&cs),
				   i == 0 ? first : (i == N - 1 ? c.syncobj : 0), 0));
	CHECK_OK(qp_syncobj_wait(fd, &first, 1, JOB_TIMEOUT_MS, true));
	CHECK_OK(qp_group_destroy(fd, c.group));
	double t0 = qp_now();
	CHECK_OK(qp_syncobj_wait(fd, &c.syncobj, 1, 20000, true));
	int st = 0;
	CHECK_OK(qp_syncobj_status(fd, c.syncobj, &st));
	volatile uint32_t *d = c.data.map;
	qp_diag("last fence %d after %.2f s; counter %u of %d", st, qp_now() - t0, d[0], N * 50);
	/* termination may stop a stream part-way (as on hardware): only bounds are exact */
	CHECK(d[0] >= 50 && d[0] <= (uint32_t)N * 50, "counter %u: first job did not run", d[0]);
	CHECK(st == 1 || st < 0, "fence status %d", st);
	uint32_t state;
	CHECK_ERR(qp_group_state(fd, c.group, &state, NULL), EINVAL);
	/* the VM still runs a new group's jobs */
	CHECK_OK(qp_ctx_regroup_store(&c, 4, 0xabcd, JOB_TIMEOUT_MS));
	close(fd);
	return QP_PASS;
}

/* A stream that waits on a sync object nobody signals. panthor keeps the job timeout
 * running for a queue blocked on a sync wait, so after JOB_TIMEOUT_MS (5 s) it logs
 * "job timeout", marks the group TIMEDOUT and terminates it: 7.2 does not reset the GPU for
 * this (a CSG that fails to terminate, or CS_UNRECOVERABLE, would). The blocked job's fence
 * and the one queued behind it fail; other VMs' groups run during and after, and a new group
 * on the same VM works. */
int test_job_timeout_recovery(void)
{
	int fd = qp_open();
	struct qp_ctx t, other;
	CHECK_OK(qp_ctx_init(&t, fd, 4096, 4096));
	CHECK_OK(qp_ctx_init(&other, fd, 4096, 4096));
	int kfd = qp_kmsg_open(true);
	volatile uint32_t *d = t.data.map, *od = other.data.map;
	struct qp_cs cs = { t.cmd.map, 0 };
	cs_store32(&cs, t.data.va, 0x7e570001); /* lands before the wait */
	cs_emit(&cs, CS_MOV48(0, t.data.va + 64)); /* a sync word that stays 0 */
	cs_emit(&cs, CS_MOV32(2, 0));
	cs_emit(&cs, CS_SYNC_WAIT32(0, 2, CS_COND_GREATER)); /* until *word > 0: never */
	cs_store32(&cs, t.data.va + 4, 0x7e570002); /* must never land */
	cs_flush(&cs);
	uint32_t len = cs_bytes(&cs);
	while (cs.n % 8)
		cs_emit(&cs, CS_NOP());
	uint32_t boff = cs_bytes(&cs);
	cs_store32(&cs, t.data.va + 8, 0xbe11); /* the job queued behind it */
	cs_flush(&cs);
	uint32_t behind;
	CHECK_OK(qp_syncobj_create(fd, &behind, false));
	double t0 = qp_now();
	CHECK_OK(qp_submit(fd, t.group, t.cmd.va, len, t.syncobj, 0));
	CHECK_OK(qp_submit(fd, t.group, t.cmd.va + boff, cs_bytes(&cs) - boff, behind, 0));
	/* another VM's group runs while the first one is stuck */
	struct qp_cs ocs = { other.cmd.map, 0 };
	cs_inc32(&ocs, other.data.va);
	cs_flush(&ocs);
	uint32_t olen = cs_bytes(&ocs);
	for (int i = 0; i < 3; i++)
		CHECK_OK(qp_ctx_run(&other, 0, olen, JOB_TIMEOUT_MS));
	CHECK(od[0] == 3, "other VM's counter %u while the first group is blocked", od[0]);
	int st = 0;
	CHECK_OK(qp_syncobj_status(fd, t.syncobj, &st));
	CHECK(st == 0, "blocked job's fence signalled early (status %d)", st);
	CHECK(d[0] == 0x7e570001, "store before the wait: 0x%x", d[0]);
	/* the timeout */
	CHECK_OK(qp_syncobj_wait(fd, &t.syncobj, 1, 20000, true));
	double dt = qp_now() - t0;
	uint32_t state = 0, fq = 0;
	CHECK_OK(qp_syncobj_status(fd, t.syncobj, &st));
	CHECK_OK(qp_group_state(fd, t.group, &state, &fq));
	qp_diag("blocked job: fence %d (%s), group state 0x%x fatal_queues 0x%x after %.2f s", st,
		st < 0 ? strerror(-st) : "ok", state, fq, dt);
	CHECK(dt >= 4.5 && dt < 15, "fence completed after %.2f s; the job timeout is 5 s", dt);
	CHECK(st == -ETIMEDOUT, "blocked job's fence status %d, want -ETIMEDOUT", st);
	CHECK(state & DRM_PANTHOR_GROUP_STATE_TIMEDOUT, "group state 0x%x lacks TIMEDOUT", state);
	CHECK(!(state & DRM_PANTHOR_GROUP_STATE_FATAL_FAULT) && fq == 0,
	      "group state 0x%x fatal_queues 0x%x: a timeout is not a fault", state, fq);
	CHECK_OK(qp_syncobj_wait(fd, &behind, 1, 10000, true));
	int st2 = 0;
	CHECK_OK(qp_syncobj_status(fd, behind, &st2));
	CHECK(st2 < 0, "job queued behind the blocked one: fence status %d", st2);
	CHECK(d[1] == 0 && d[2] == 0, "stores after the wait landed: 0x%x 0x%x", d[1], d[2]);
	/* GROUP_SUBMIT -> panthor_job_create(): -EINVAL when !group_can_run(), which
	 * group->timedout makes false (7.2 panthor_sched.c ~1081-1087, ~4018-4021) */
	CHECK_ERR(qp_submit(fd, t.group, t.cmd.va + boff, cs_bytes(&cs) - boff, 0, 0), EINVAL);
	/* the kernel logged the timeout once, and no reset or CSG request timeout */
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	int timeouts = 0;
	for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n")) {
		if (!strstr(l, "panthor"))
			continue;
		qp_diag("kmsg: %.200s", l);
		if (strstr(l, "] job timeout")) /* 7.2 adds ": pid=..., comm=..., seqno=..." */
			timeouts++;
		CHECK(!strcasestr(l, "reset") && !strstr(l, "timedout") && !strstr(l, "WARN"),
		      "unexpected kernel line: %.200s", l);
	}
	CHECK(timeouts == 1, "%d 'job timeout' lines, want 1", timeouts);
	/* everything else keeps working: the other VM, and a new group on the same VM */
	CHECK_OK(qp_ctx_run(&other, 0, olen, JOB_TIMEOUT_MS));
	CHECK(od[0] == 4, "other VM's counter %u after the timeout", od[0]);
	if (group_healthy(fd, other.group, "other group") != QP_PASS)
		return QP_FAIL;
	CHECK_OK(qp_ctx_regroup_store(&t, 12, 0x600d, JOB_TIMEOUT_MS));
	uint32_t vs = ~0u;
	CHECK_OK(qp_vm_state(fd, t.vm, &vs));
	CHECK(vs == DRM_PANTHOR_VM_STATE_USABLE, "VM state %u after the timeout", vs);
	close(fd);
	return QP_PASS;
}

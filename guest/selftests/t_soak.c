/* Soak tests (MANUAL: run by `make soak`, which samples the backend's RSS and open fds
 * through QMP before and after): many jobs across many groups, many VMs created, bound, used
 * and destroyed, many runtime-PM cycles. Each checks the data the GPU wrote. */
#include <stdlib.h>
#include <unistd.h>

#include "qp.h"

/* 10,000 jobs over 16 groups of one VM, each job incrementing its group's counter (plus a
 * barrier job per group every 50 rounds, so the queues stay bounded) */
int test_soak_jobs(void)
{
	enum { NG = 16, J = 625 };
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 8192, 4096));
	uint32_t groups[NG], sync[NG], off[NG], len[NG];
	struct qp_cs cs = { c.cmd.map, 0 };
	for (int g = 0; g < NG; g++) {
		CHECK_OK(qp_group_create(fd, c.vm, &groups[g]));
		CHECK_OK(qp_syncobj_create(fd, &sync[g], false));
		while (cs.n % 8)
			cs_emit(&cs, CS_NOP());
		off[g] = cs_bytes(&cs);
		cs_inc32(&cs, c.data.va + g * 4);
		cs_flush(&cs);
		len[g] = cs_bytes(&cs) - off[g];
	}
	volatile uint32_t *d = c.data.map;
	double t0 = qp_now();
	int extra = 0; /* barrier jobs per group (they increment too) */
	for (int j = 0; j < J; j++) {
		for (int g = 0; g < NG; g++)
			CHECK_OK(qp_submit(fd, groups[g], c.cmd.va + off[g], len[g],
					   j == J - 1 ? sync[g] : 0, 0));
		if (j % 50 == 49) { /* keep the queues bounded: one more job signals a barrier */
			uint32_t bar[NG];
			for (int g = 0; g < NG; g++) {
				CHECK_OK(qp_syncobj_create(fd, &bar[g], false));
				CHECK_OK(qp_submit(fd, groups[g], c.cmd.va + off[g], len[g], bar[g], 0));
			}
			CHECK_OK(qp_syncobj_wait(fd, bar, NG, 60000, true));
			for (int g = 0; g < NG; g++)
				CHECK_OK(qp_syncobj_destroy(fd, bar[g]));
			extra++;
		}
	}
	CHECK_OK(qp_syncobj_wait(fd, sync, NG, 120000, true));
	double dt = qp_now() - t0;
	int per_group = J + extra;
	qp_diag("%d jobs over %d groups in %.1f s (%.2f ms per job)", NG * per_group, NG, dt,
		dt * 1000 / (NG * per_group));
	for (int g = 0; g < NG; g++) {
		CHECK(d[g] == (uint32_t)per_group, "group %d counter %u, want %d", g, d[g], per_group);
		uint32_t st = ~0u, fq = ~0u;
		CHECK_OK(qp_group_state(fd, groups[g], &st, &fq));
		CHECK(st == 0 && fq == 0, "group %d state 0x%x fatal queues 0x%x", g, st, fq);
		CHECK_OK(qp_group_destroy(fd, groups[g]));
	}
	CHECK_OK(qp_ctx_fini(&c));
	close(fd);
	return QP_PASS;
}

/* 4 rounds of 64 VMs alive at once (9x the 7 user AS slots), each bound, running a job that
 * stores a marker, then all destroyed. panthor allows 32 VMs per open file
 * (PANTHOR_MAX_VMS_PER_FILE; the 33rd VM_CREATE fails with EBUSY), so two files hold them. */
int test_soak_vms(void)
{
	enum { NV = 64, ROUNDS = 4, PER_FILE = 32 };
	int fds[NV / PER_FILE];
	for (int f = 0; f < NV / PER_FILE; f++)
		fds[f] = qp_open();
	static struct qp_ctx c[NV];
	double t0 = qp_now();
	for (int round = 0; round < ROUNDS; round++) {
		for (int v = 0; v < NV; v++) {
			int fd = fds[v / PER_FILE];
			CHECK(qp_ctx_init(&c[v], fd, 4096, 4096) == 0, "round %d VM %d", round, v);
			struct qp_cs cs = { c[v].cmd.map, 0 };
			cs_store32(&cs, c[v].data.va, 0x50a00000u | (uint32_t)(round << 8) | v);
			cs_flush(&cs);
			CHECK_OK(qp_submit(fd, c[v].group, c[v].cmd.va, cs_bytes(&cs), c[v].syncobj, 0));
		}
		for (int v = 0; v < NV; v++) {
			CHECK_OK(qp_syncobj_wait(c[v].fd, &c[v].syncobj, 1, 60000, true));
			volatile uint32_t *d = c[v].data.map;
			uint32_t want = 0x50a00000u | (uint32_t)(round << 8) | v;
			CHECK(d[0] == want, "round %d VM %d: 0x%x, want 0x%x", round, v, d[0], want);
			uint32_t st = ~0u, fq = ~0u;
			CHECK_OK(qp_group_state(c[v].fd, c[v].group, &st, &fq));
			CHECK(st == 0, "round %d VM %d: group state 0x%x", round, v, st);
		}
		for (int v = 0; v < NV; v++)
			CHECK_OK(qp_ctx_fini(&c[v]));
	}
	qp_diag("%d VM lifecycles (%d alive at once) in %.1f s", NV * ROUNDS, NV, qp_now() - t0);
	for (int f = 0; f < NV / PER_FILE; f++)
		close(fds[f]);
	return QP_PASS;
}

int test_soak_runtime_pm(void) { return qp_runtime_pm_cycles(1000); }

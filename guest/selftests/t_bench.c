/* Benchmarks (MANUAL: run only when named with --only / qp.only=). Printed, not asserted;
 * every job's data is still checked. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <unistd.h>

#include "qp.h"

#define BENCH_N 200

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* "# bench: <what> median=... p90=... min=... max=... n=..." (microseconds) */
static void report(const char *what, double *us, int n)
{
	qsort(us, (size_t)n, sizeof(us[0]), cmp_double);
	qp_diag("bench: %s median=%.0f p90=%.0f min=%.0f max=%.0f n=%d", what, us[n / 2],
		us[(n * 9) / 10], us[0], us[n - 1], n);
}

/* BENCH_N jobs, one at a time: GROUP_SUBMIT a 4-instruction stream (64-byte aligned, as
 * GROUP_SUBMIT requires) that stores a marker
 * into its own word of the data BO, then SYNCOBJ_WAIT for its fence. */
static int run_series(struct qp_ctx *c, uint32_t base, const char *tag)
{
	static double total[BENCH_N], submit[BENCH_N];
	volatile uint32_t *d = c->data.map;
	for (int i = 0; i < BENCH_N; i++) {
		uint32_t marker = base + (uint32_t)i;
		double t0 = qp_now();
		CHECK_OK(qp_submit(c->fd, c->group, c->cmd.va + (uint64_t)i * 64, 32, c->syncobj, 0));
		double t1 = qp_now();
		CHECK_OK(qp_syncobj_wait(c->fd, &c->syncobj, 1, 10000, true));
		double t2 = qp_now();
		CHECK(d[i] == marker, "%s: job %d stored 0x%08x, want 0x%08x", tag, i, d[i], marker);
		total[i] = (t2 - t0) * 1e6;
		submit[i] = (t1 - t0) * 1e6;
	}
	char what[64];
	snprintf(what, sizeof(what), "job_latency_us%s", tag);
	report(what, total, BENCH_N);
	snprintf(what, sizeof(what), "submit_ioctl_us%s", tag);
	report(what, submit, BENCH_N);
	return QP_PASS;
}

static void write_streams(struct qp_ctx *c, uint32_t base)
{
	volatile uint32_t *d = c->data.map;
	for (int i = 0; i < BENCH_N; i++) {
		struct qp_cs cs = { (uint64_t *)c->cmd.map + i * 8, 0 };
		cs_emit(&cs, CS_MOV48(0, c->data.va + (uint64_t)i * 4));
		cs_emit(&cs, CS_MOV32(2, base + (uint32_t)i));
		cs_emit(&cs, CS_STORE_MULTIPLE(2, 0, 0x1, 0));
		cs_emit(&cs, CS_WAIT(CS_WAIT_ALL));
		d[i] = 0;
	}
}

/* BENCH_N single reads of a trapped register (the test port's TP_MAGIC in BAR2): a vCPU exit,
 * QEMU's vfio-user region read over the socket, the backend's reply. The unit the job latency
 * is reported in, so the figure means the same on a faster or slower machine. */
static void trapped_reads(void)
{
	static double us[BENCH_N];
	char why[256];
	volatile uint32_t *tp = qp_tp_map(why, sizeof(why));
	if (!tp) {
		qp_diag("bench: no trapped-read baseline: %s", why);
		return;
	}
	for (int i = 0; i < BENCH_N; i++) {
		double t0 = qp_now();
		uint32_t v = tp[(QP_TP_BASE + QP_TP_MAGIC) / 4];
		us[i] = (qp_now() - t0) * 1e6;
		if (v != QP_TP_MAGIC_VALUE)
			qp_diag("bench: trapped read returned 0x%x", v);
	}
	report("trapped_read_us", us, BENCH_N);
}

int test_bench_job_latency(void)
{
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, BENCH_N * 64, 4096));
	char dev[200], path[256], old[32] = "auto", delay[32] = "?";
	if (qp_panthor_sysfs(dev, sizeof(dev)) == 0) {
		snprintf(path, sizeof(path), "%s/power/autosuspend_delay_ms", dev);
		qp_read_file(path, delay, sizeof(delay));
		delay[strcspn(delay, "\n")] = '\0';
	}
	bool have_ctl = qp_pm_control_get(old, sizeof(old)) == 0;
	qp_diag("bench: power/control=%s autosuspend_delay_ms=%s", old, delay);
	trapped_reads();
	/* 1: as the driver runs by default (runtime PM on; a job may have to resume the GPU) */
	write_streams(&c, 0xa0000000u);
	if (run_series(&c, 0xa0000000u, "") != QP_PASS)
		return QP_FAIL;
	/* 2: the device kept out of runtime suspend: no resume on the submit path */
	if (!have_ctl)
		return qp_skip("no power/control for the panthor device");
	CHECK_OK(qp_pm_control_set("on"));
	write_streams(&c, 0xb0000000u);
	int r = run_series(&c, 0xb0000000u, "_pm_on");
	qp_pm_control_set(old);
	if (r != QP_PASS)
		return r;
	uint32_t state = ~0u, fq = ~0u;
	CHECK_OK(qp_group_state(fd, c.group, &state, &fq));
	CHECK(state == 0 && fq == 0, "group state 0x%x fatal_queues 0x%x", state, fq);
	close(fd);
	return QP_PASS;
}

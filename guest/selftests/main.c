/* qemu-panthor in-guest selftests: the runner (KTAP version 1).
 *
 * Usage: qp-selftests [--suite default|long|all] [--only name1,name2,...] [--list]
 * The default suite leaves out the tests that wait on driver or firmware timers (SLOW: the
 * "long" suite); --only runs the named tests whatever their suite.
 * Each test runs in its own forked child with a time limit; its skip reason comes back
 * through a shared page. One top-level KTAP result per test; diagnostics are "# ..." lines.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qp.h"

#define T(t_, ...) { .name = #t_, .fn = test_##t_, .timeout_s = 0 __VA_OPT__(+) __VA_ARGS__ }
#define MANUAL(t_, s_) { .name = #t_, .fn = test_##t_, .timeout_s = s_, .manual = true }
/* waits on a driver or firmware timer (the 12 s PING watchdog, the 5 s job timeout, the
 * 3.3 s progress timer): the "long" suite, which `make test` runs beside the default one */
#define SLOW(t_, s_) { .name = #t_, .fn = test_##t_, .timeout_s = s_, .slow = true }
const struct qp_test qp_tests[] = {
	/* probe / first light */
	T(modules_drm), T(modules_drm_exec), T(modules_gpu_sched), T(modules_drm_gpuvm),
	T(modules_panthor), T(gpu_pci_function), T(glue_bound), T(panthor_probed),
	T(render_node), T(query_gpu_info), T(query_csif_info), T(query_timestamp_info),
	T(query_invalid), T(query_group_priorities), T(runtime_pm_cycles, 60),
	T(kmsg_probe_clean),
	/* jobs */
	T(job_store_deadbeef), T(job_1000_sequential, 120), T(job_8_concurrent_groups),
	T(csg_concurrent, 60), T(timeslice_resume, 90),
	T(job_bad_opcode_fatal, 60), T(job_wait_syncobj),
	/* uAPI coverage */
	T(gem_create_mmap), T(gem_no_mmap_offset), T(gem_invalid), T(vm_create_destroy), T(vm_invalid),
	T(vm_bind_invalid), T(vm_bind_sync_data), T(vm_bind_async), T(vm_partial_unmap_2m),
	T(vm_unmap_unmapped), T(group_create_invalid), T(group_priorities),
	T(group_submit_invalid), T(tiler_heap), T(bo_set_label), T(bo_query_info), T(bo_sync),
	/* scheduling and faults */
	T(job_many_vms, 60), T(job_mmu_fault, 60), T(job_fault_among_many_vms, 60),
	T(group_destroy_in_flight, 60), SLOW(job_timeout_recovery, 60),
	/* after every fault test: the kernel log holds only the faults they caused */
	T(kmsg_faults_only_expected),
	/* injected faults (test port): GPU resets, an unusable VM; after the kmsg check */
	T(gpu_reset_recovery, 60), T(vm_bind_async_failure_unusable, 60), SLOW(progress_timeout, 60),
	SLOW(ping_timeout_reset, 60), SLOW(reset_in_flight, 90), T(lock_region_stall, 60),
	/* heap pressure and recoverable faults (after the kmsg check: they log CS_FAULTs) */
	T(tiler_oom_grow, 60), SLOW(tiler_oom_fail, 60), T(cs_fault_recoverable, 60),
	/* alloc-on-fault BOs (the 7.2-aof kernel; skipped elsewhere): after the kmsg check, the
	 * last one ends in an unhandled fault on purpose */
	T(alloc_on_fault_store, 60), T(alloc_on_fault_granule, 60), T(alloc_on_fault_many, 120),
	T(alloc_on_fault_out_of_bo, 60),
	/* an injected firmware boot failure unplugs the device; the test reloads the driver */
	T(fw_boot_fail_unplug, 60),
	/* last: reloads the driver and the glue */
	T(glue_reload_cycles, 90),
	/* benchmarks: only when named */
	MANUAL(bench_job_latency, 120),
	/* soak: only when named (make soak) */
	MANUAL(soak_jobs, 900), MANUAL(soak_vms, 600), MANUAL(soak_runtime_pm, 600),
	/* driver-bug reproducers (docs/driver-bugs.md): only when named; they oops an affected
	 * kernel */
	MANUAL(repro_submit_bogus_signal_syncobj, 30), MANUAL(repro_vm_bind_bogus_signal_syncobj, 30),
};
const size_t qp_ntests = sizeof(qp_tests) / sizeof(qp_tests[0]);

/* panfrost (a Job Manager GPU, --gpu g52): pf.c */
const struct qp_test qp_pf_tests[] = {
	T(pf_modules), T(gpu_pci_function), T(glue_bound), T(pf_probed), T(pf_render_node),
	T(pf_get_param), T(pf_get_param_invalid), T(pf_timestamp), T(pf_bo_create_mmap),
	T(pf_write_value_chain), T(pf_null_flush_fragment_jobs), T(pf_submit_deps),
	T(pf_submit_invalid), T(pf_per_fd_address_spaces, 120), T(pf_heap_grow_on_fault, 60),
	T(pf_jm_ctx),
	T(pf_runtime_pm_cycles, 60),
	/* faults and the reset path, then the kernel log check */
	T(pf_job_fault, 60), T(pf_mmu_fault, 60), T(pf_job_loop_reset, 60), T(pf_kmsg_clean),
};
const size_t qp_pf_ntests = sizeof(qp_pf_tests) / sizeof(qp_pf_tests[0]);

struct shared {
	char skip_reason[256];
	int skipped;
};
static struct shared *shm;

void qp_diag(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	/* one "# " prefix per line */
	for (char *line = buf, *nl; line; line = nl) {
		nl = strchr(line, '\n');
		if (nl)
			*nl++ = '\0';
		if (*line || !nl)
			printf("# %s\n", line);
	}
	fflush(stdout);
}

int qp_skip(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(shm->skip_reason, sizeof(shm->skip_reason), fmt, ap);
	va_end(ap);
	shm->skipped = 1;
	return QP_SKIP;
}

enum suite { SUITE_DEFAULT, SUITE_LONG, SUITE_ALL };

static bool selected(const char *only, enum suite suite, const struct qp_test *t)
{
	const char *name = t->name;
	if (!only || !*only)
		return !t->manual && (suite == SUITE_ALL || t->slow == (suite == SUITE_LONG));
	size_t n = strlen(name);
	for (const char *p = only; *p;) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == n && !strncmp(p, name, n))
			return true;
		if (!e)
			break;
		p = e + 1;
	}
	return false;
}

/* the tests run so far, in order: the runner fills it before forking each test, so a test's
 * child sees every test before it */
static const struct qp_test *ran[256];
static size_t nran;

bool qp_test_ran(const char *name)
{
	for (size_t i = 0; i < nran; i++)
		if (!strcmp(ran[i]->name, name))
			return true;
	return false;
}

static int run_one(const struct qp_test *t, int num)
{
	int timeout = t->timeout_s ? t->timeout_s : 30;
	memset(shm, 0, sizeof(*shm));
	char pm[32];
	bool have_pm = qp_pm_control_get(pm, sizeof(pm)) == 0;
	double t0 = qp_now();
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		printf("not ok %d %s\n# fork: %s\n", num, t->name, strerror(errno));
		return QP_FAIL;
	}
	if (pid == 0) {
		setvbuf(stdout, NULL, _IOLBF, 0);
		signal(SIGALRM, SIG_DFL);
		alarm(timeout);
		int r = t->fn();
		fflush(stdout);
		_exit(r);
	}
	if (nran < sizeof(ran) / sizeof(ran[0]))
		ran[nran++] = t;
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	double dt = qp_now() - t0;
	/* tests pin the device awake (power/control=on); the child _exit()s, possibly early
	 * on a failed check, so the runner puts the setting back for the next test */
	char now[32];
	if (have_pm && qp_pm_control_get(now, sizeof(now)) == 0 && strcmp(now, pm))
		qp_pm_control_set(pm);
	int r;
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		qp_diag("%s: %s (signal %d)", t->name,
			sig == SIGALRM ? "timed out" : "crashed", sig);
		if (sig == SIGALRM)
			qp_diag("time limit %d s", timeout);
		r = QP_FAIL;
	} else {
		r = WEXITSTATUS(status);
		if (r == QP_SKIP && !shm->skipped)
			r = QP_FAIL;
	}
	printf("# %s: %.2f s\n", t->name, dt);
	if (r == QP_PASS)
		printf("ok %d %s\n", num, t->name);
	else if (r == QP_SKIP)
		printf("ok %d %s # SKIP %s\n", num, t->name,
		       shm->skip_reason[0] ? shm->skip_reason : "no reason given");
	else
		printf("not ok %d %s\n", num, t->name);
	fflush(stdout);
	return r;
}

int main(int argc, char **argv)
{
	const char *only = NULL;
	bool list = false;
	enum suite suite = SUITE_DEFAULT;
	for (int i = 1; i < argc; i++) {
		const char *s = NULL;
		if (!strcmp(argv[i], "--only") && i + 1 < argc)
			only = argv[++i];
		else if (!strncmp(argv[i], "--only=", 7))
			only = argv[i] + 7;
		else if (!strcmp(argv[i], "--list"))
			list = true;
		else if (!strcmp(argv[i], "--suite") && i + 1 < argc)
			s = argv[++i];
		else if (!strncmp(argv[i], "--suite=", 8))
			s = argv[i] + 8;
		else
			s = "?";
		if (s && !strcmp(s, "default"))
			suite = SUITE_DEFAULT;
		else if (s && !strcmp(s, "long"))
			suite = SUITE_LONG;
		else if (s && !strcmp(s, "all"))
			suite = SUITE_ALL;
		else if (s) {
			fprintf(stderr, "usage: %s [--suite default|long|all] [--only a,b,...] "
				"[--list]\n", argv[0]);
			return 2;
		}
	}
	/* the driver the GPU model names (/etc/qp/gpu.env DRIVER; panthor when absent) */
	char driver[32] = "panthor";
	qp_env_str("DRIVER", driver, sizeof(driver));
	const struct qp_test *tests = qp_tests;
	size_t ntests = qp_ntests;
	if (!strcmp(driver, "panfrost")) {
		tests = qp_pf_tests;
		ntests = qp_pf_ntests;
	} else if (strcmp(driver, "panthor")) {
		fprintf(stderr, "%s: no selftests for driver %s\n", argv[0], driver);
		return 2;
	}
	if (list) {
		for (size_t i = 0; i < ntests; i++)
			printf("%s\n", tests[i].name);
		return 0;
	}
	shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	int n = 0;
	for (size_t i = 0; i < ntests; i++)
		n += selected(only, suite, &tests[i]);
	printf("KTAP version 1\n1..%d\n", n);
	if (only && n == 0)
		qp_diag("--only %s selects no test", only);
	int failed = 0, num = 0;
	double t0 = qp_now();
	for (size_t i = 0; i < ntests; i++) {
		if (!selected(only, suite, &tests[i]))
			continue;
		failed += run_one(&tests[i], ++num) == QP_FAIL;
	}
	qp_diag("suite: %d tests in %.1f s, %d failed", num, qp_now() - t0, failed);
	return failed ? 1 : 0;
}

/* Probe / first light: modules, PCI function and glue, platform device, render node,
 * DEV_QUERY payloads against the GPU model's identity (/etc/qp/gpu.env), runtime PM, kmsg. */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "qp.h"

static int module_test(const char *name)
{
	CHECK(qp_module_loaded(name), "module %s is not in /proc/modules", name);
	return QP_PASS;
}
int test_modules_drm(void) { return module_test("drm"); }
int test_modules_drm_exec(void) { return module_test("drm_exec"); }
int test_modules_gpu_sched(void) { return module_test("gpu_sched"); }
int test_modules_drm_gpuvm(void) { return module_test("drm_gpuvm"); }
int test_modules_panthor(void) { return module_test("panthor"); }

/* the Arm (0x13b5) PCI function: its sysfs directory name into buf */
static int find_gpu_pci(char *buf, size_t len)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	if (!d)
		return -errno;
	struct dirent *e;
	int ret = -ENOENT;
	while ((e = readdir(d))) {
		char path[PATH_MAX], v[32];
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (!qp_read_file(path, v, sizeof(v)) && strtoul(v, NULL, 0) == 0x13b5) {
			snprintf(buf, len, "%s", e->d_name);
			ret = 0;
			break;
		}
	}
	closedir(d);
	return ret;
}

int test_gpu_pci_function(void)
{
	char bdf[256], path[PATH_MAX], v[32];
	CHECK(find_gpu_pci(bdf, sizeof(bdf)) == 0, "no PCI function with vendor 0x13b5");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/class", bdf);
	CHECK_OK(qp_read_file(path, v, sizeof(v)));
	qp_diag("GPU PCI function %s class %s", bdf, strtok(v, "\n"));
	return QP_PASS;
}

int test_glue_bound(void)
{
	char bdf[256], path[PATH_MAX], link[PATH_MAX];
	CHECK(find_gpu_pci(bdf, sizeof(bdf)) == 0, "no PCI function with vendor 0x13b5");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/driver", bdf);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	CHECK(n > 0, "%s has no driver", bdf);
	link[n] = '\0';
	const char *drv = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
	CHECK(!strcmp(drv, "panthor_glue"), "%s is bound to %s, not panthor_glue", bdf, drv);
	return QP_PASS;
}

int test_panthor_probed(void)
{
	char dev[PATH_MAX], path[PATH_MAX + 32], link[PATH_MAX];
	CHECK(qp_panthor_sysfs(dev, sizeof(dev)) == 0,
	      "no qemu-panthor.* device bound to the panthor platform driver");
	snprintf(path, sizeof(path), "%s/driver", dev);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	CHECK(n > 0, "%s has no driver link", dev);
	link[n] = '\0';
	CHECK(strstr(link, "/panthor") && !strstr(link, "panthor_glue"), "driver is %s", link);
	/* the platform device's parent is the PCI function the glue created it for */
	char real[PATH_MAX], bdf[64];
	CHECK(realpath(dev, real) != NULL, "realpath %s", dev);
	CHECK(find_gpu_pci(bdf, sizeof(bdf)) == 0, "no GPU PCI function");
	CHECK(strstr(real, bdf) != NULL, "platform device %s is not under PCI function %s", real, bdf);
	qp_diag("panthor device: %s", real);
	return QP_PASS;
}

int test_render_node(void)
{
	struct stat st;
	CHECK(stat("/dev/dri/renderD128", &st) == 0, "/dev/dri/renderD128: %s", strerror(errno));
	CHECK(S_ISCHR(st.st_mode), "/dev/dri/renderD128 is not a character device");
	CHECK(major(st.st_rdev) == 226 && minor(st.st_rdev) == 128, "dev %u:%u",
	      major(st.st_rdev), minor(st.st_rdev));
	/* the node belongs to the panthor platform device */
	char link[PATH_MAX], dev[PATH_MAX];
	ssize_t n = readlink("/sys/class/drm/renderD128/device", link, sizeof(link) - 1);
	CHECK(n > 0, "/sys/class/drm/renderD128/device: %s", strerror(errno));
	link[n] = '\0';
	CHECK(qp_panthor_sysfs(dev, sizeof(dev)) == 0, "no panthor platform device");
	CHECK(!strcmp(strrchr(link, '/'), strrchr(dev, '/')), "renderD128 -> %s, panthor is %s",
	      link, dev);
	int fd = qp_open();
	int maj, min, pat;
	CHECK_OK(qp_driver_version(fd, &maj, &min, &pat));
	qp_diag("driver panthor %d.%d.%d", maj, min, pat);
	CHECK(maj == 1, "panthor major version %d", maj);
	close(fd);
	return QP_PASS;
}

#define FIELD(key, val)                                                                     \
	do {                                                                                \
		uint64_t want;                                                              \
		CHECK(qp_env(key, &want), "gpu.env lacks %s", key);                         \
		if ((uint64_t)(val) != want) {                                              \
			qp_diag("%s: DEV_QUERY 0x%llx, GPU model 0x%llx", key,               \
				(unsigned long long)(val), (unsigned long long)want);       \
			bad++;                                                              \
		}                                                                           \
		checked++;                                                                  \
	} while (0)

int test_query_gpu_info(void)
{
	int fd = qp_open();
	struct drm_panthor_dev_query q = { .type = DRM_PANTHOR_DEV_QUERY_GPU_INFO };
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANTHOR_DEV_QUERY, &q));
	CHECK(q.size >= offsetof(struct drm_panthor_gpu_info, core_features),
	      "GPU_INFO size %u", q.size);
	struct drm_panthor_gpu_info gi;
	memset(&gi, 0xa5, sizeof(gi));
	CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, &gi, sizeof(gi)));
	int bad = 0, checked = 0;
	FIELD("GPU_ID", gi.gpu_id);
	FIELD("GPU_REV", gi.gpu_rev);
	FIELD("CSF_ID", gi.csf_id);
	FIELD("L2_FEATURES", gi.l2_features);
	FIELD("TILER_FEATURES", gi.tiler_features);
	FIELD("MEM_FEATURES", gi.mem_features);
	FIELD("MMU_FEATURES", gi.mmu_features);
	FIELD("THREAD_FEATURES", gi.thread_features);
	FIELD("MAX_THREADS", gi.max_threads);
	FIELD("THREAD_MAX_WORKGROUP_SIZE", gi.thread_max_workgroup_size);
	FIELD("THREAD_MAX_BARRIER_SIZE", gi.thread_max_barrier_size);
	FIELD("COHERENCY_FEATURES", gi.coherency_features);
	FIELD("TEXTURE_FEATURES0", gi.texture_features[0]);
	FIELD("AS_PRESENT", gi.as_present);
	FIELD("SHADER_PRESENT", gi.shader_present);
	FIELD("L2_PRESENT", gi.l2_present);
	FIELD("TILER_PRESENT", gi.tiler_present);
	FIELD("CORE_FEATURES", gi.core_features);
	qp_diag("gpu_id 0x%08x (arch %u.%u r%u) csf_id 0x%08x va_bits %u shader_present 0x%llx",
		gi.gpu_id, DRM_PANTHOR_ARCH_MAJOR(gi.gpu_id), DRM_PANTHOR_ARCH_MINOR(gi.gpu_id),
		DRM_PANTHOR_ARCH_REV(gi.gpu_id), gi.csf_id, DRM_PANTHOR_MMU_VA_BITS(gi.mmu_features),
		(unsigned long long)gi.shader_present);
	CHECK(bad == 0, "%d of %d GPU_INFO fields differ from the GPU model", bad, checked);
	/* panthor 1.7+ reports the coherency it selected: ACE-Lite only on a dma-coherent
	 * device tree (boot --coherent), none otherwise, as on RK3588 */
	int maj, min, pat;
	CHECK_OK(qp_driver_version(fd, &maj, &min, &pat));
	if (min >= 7) {
		char cmdline[4096] = "";
		qp_read_file("/proc/cmdline", cmdline, sizeof(cmdline));
		uint32_t want = strstr(cmdline, "qp.coherent=1") ? DRM_PANTHOR_GPU_COHERENCY_ACE_LITE
								 : DRM_PANTHOR_GPU_COHERENCY_NONE;
		CHECK(gi.selected_coherency == want, "selected_coherency %u, want %u",
		      gi.selected_coherency, want);
	}
	/* a user buffer larger than the kernel's object is zero-filled past it */
	if (q.size < sizeof(gi) + 16) {
		uint8_t big[sizeof(gi) + 16];
		memset(big, 0xa5, sizeof(big));
		CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, big, sizeof(big)));
		for (size_t i = q.size; i < sizeof(big); i++)
			CHECK(big[i] == 0, "byte %zu past the %u-byte object is 0x%02x", i, q.size,
			      big[i]);
		CHECK(!memcmp(big, &gi, q.size < sizeof(gi) ? q.size : sizeof(gi)),
		      "second query differs");
	}
	close(fd);
	return QP_PASS;
}

int test_query_csif_info(void)
{
	int fd = qp_open();
	struct drm_panthor_csif_info ci;
	memset(&ci, 0xa5, sizeof(ci));
	CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_CSIF_INFO, &ci, sizeof(ci)));
	qp_diag("csg_slot_count %u cs_slot_count %u cs_reg_count %u scoreboards %u unpreserved %u",
		ci.csg_slot_count, ci.cs_slot_count, ci.cs_reg_count, ci.scoreboard_slot_count,
		ci.unpreserved_cs_reg_count);
	int bad = 0, checked = 0;
	FIELD("CSG_COUNT", ci.csg_slot_count);
	FIELD("CS_PER_CSG", ci.cs_slot_count);
	FIELD("CS_REG_COUNT", ci.cs_reg_count);
	FIELD("SCOREBOARDS", ci.scoreboard_slot_count);
	CHECK(bad == 0, "%d of %d CSIF_INFO fields differ from the firmware model", bad, checked);
	CHECK(ci.unpreserved_cs_reg_count == 4, "unpreserved_cs_reg_count %u, kernel uses 4",
	      ci.unpreserved_cs_reg_count);
	CHECK(ci.pad == 0, "pad 0x%x", ci.pad);
	CHECK(ci.cs_reg_count > ci.unpreserved_cs_reg_count + 8, "cs_reg_count %u too small",
	      ci.cs_reg_count);
	close(fd);
	return QP_PASS;
}

static uint64_t cntfrq(void)
{
	uint64_t v = 0;
#ifdef __aarch64__
	__asm__ volatile("mrs %0, cntfrq_el0" : "=r"(v));
#endif
	return v;
}

int test_query_timestamp_info(void)
{
	int fd = qp_open();
	struct drm_panthor_dev_query q = { .type = DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO };
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_DEV_QUERY, &q);
	if (r == -EINVAL)
		return qp_skip("TIMESTAMP_INFO not supported by this panthor (needs uAPI 1.1)");
	CHECK_OK(r);
	CHECK(q.size >= 24, "TIMESTAMP_INFO size %u", q.size);
	struct drm_panthor_timestamp_info a, b;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	double w0 = qp_now();
	CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &a, sizeof(a)));
	qp_sleep_ms(20);
	CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &b, sizeof(b)));
	double wall = qp_now() - w0;
	uint64_t cpu_hz = cntfrq(), model_hz = qp_env_or("TIMESTAMP_HZ", 0);
	qp_diag("timestamp_frequency %llu (cntfrq_el0 %llu, GPU model %llu) ts %llu -> %llu "
		"offset %llu; %.4f s around both queries", (unsigned long long)a.timestamp_frequency,
		(unsigned long long)cpu_hz, (unsigned long long)model_hz,
		(unsigned long long)a.current_timestamp, (unsigned long long)b.current_timestamp,
		(unsigned long long)a.timestamp_offset, wall);
#ifdef __aarch64__
	/* panthor reports the arch timer's frequency, nothing else (7.2 panthor_drv.c
	 * ~831-833: arch_timer_get_cntfrq()); the GPU's TIMESTAMP must tick at that rate */
	CHECK(cpu_hz != 0, "cntfrq_el0 reads 0");
	CHECK(a.timestamp_frequency == cpu_hz, "frequency %llu, cntfrq_el0 %llu",
	      (unsigned long long)a.timestamp_frequency, (unsigned long long)cpu_hz);
#else
	/* panthor_ioctl_dev_query: without CONFIG_ARM_ARCH_TIMER (a COMPILE_TEST build on
	 * x86) the frequency is reported as 0; the timestamps still come from the GPU. */
	CHECK(a.timestamp_frequency == 0, "frequency %llu on a kernel without the arm arch timer, "
	      "where panthor reports 0", (unsigned long long)a.timestamp_frequency);
#endif
	CHECK(b.timestamp_frequency == a.timestamp_frequency, "frequency changed");
	CHECK(b.current_timestamp > a.current_timestamp, "GPU timestamp did not advance");
	/* ticks of the GPU model's timestamp counter where the kernel reports no frequency */
	double hz = a.timestamp_frequency ? (double)a.timestamp_frequency : (double)model_hz;
	CHECK(hz > 0, "no timestamp frequency to check the timestamps against");
	/* each TIMESTAMP read is inside its query, the 20 ms sleep between them: at least
	 * 20 ms of ticks, at most the wall time around both queries (+10 ms: the clocks of
	 * the guest and of the GPU's backend are separate; as pf_timestamp bounds it) */
	double dt = (double)(b.current_timestamp - a.current_timestamp) / hz;
	CHECK(dt >= 0.020 && dt <= wall + 0.010,
	      "timestamps %.4f s apart for a 20 ms sleep, %.4f s around both queries", dt, wall);
	if (q.size >= sizeof(struct drm_panthor_timestamp_info)) {
		/* extended query: GPU + CPU monotonic + cycle count + duration */
		struct drm_panthor_timestamp_info c;
		memset(&c, 0, sizeof(c));
		c.flags = DRM_PANTHOR_TIMESTAMP_GPU | DRM_PANTHOR_TIMESTAMP_CPU_MONOTONIC |
			  DRM_PANTHOR_TIMESTAMP_GPU_CYCLE_COUNT | DRM_PANTHOR_TIMESTAMP_FREQ |
			  DRM_PANTHOR_TIMESTAMP_DURATION;
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &c, sizeof(c)));
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double cpu = c.cpu_timestamp_sec + c.cpu_timestamp_nsec / 1e9;
		double lo = t0.tv_sec + t0.tv_nsec / 1e9, hi = t1.tv_sec + t1.tv_nsec / 1e9;
		qp_diag("extended: cpu %.6f in [%.6f, %.6f] cycles %llu duration %u ns", cpu, lo, hi,
			(unsigned long long)c.cycle_count, c.duration_nsec);
		CHECK(cpu >= lo && cpu <= hi, "CPU timestamp outside the ioctl's time window");
		CHECK(c.current_timestamp >= b.current_timestamp, "GPU timestamp went back");
		CHECK(c.timestamp_frequency == a.timestamp_frequency, "frequency differs");
		/* invalid: two CPU clock types at once are encoded as an out-of-range type */
		struct drm_panthor_timestamp_info d = { .flags = 7u << 1 };
		CHECK_ERR(qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &d, sizeof(d)), EINVAL);
		d = (struct drm_panthor_timestamp_info){ .flags = 1u << 20 };
		CHECK_ERR(qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &d, sizeof(d)), EINVAL);
	} else {
		qp_diag("kernel TIMESTAMP_INFO is %u bytes: no extended fields to check", q.size);
	}
	close(fd);
	return QP_PASS;
}

int test_query_invalid(void)
{
	int fd = qp_open();
	struct drm_panthor_gpu_info gi;
	/* unknown query type, with and without a pointer */
	CHECK_ERR(qp_query(fd, 0x7777, &gi, sizeof(gi)), EINVAL);
	struct drm_panthor_dev_query q = { .type = 0x7777 };
	CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANTHOR_DEV_QUERY, &q), EINVAL);
	/* smaller than the minimal object size */
	CHECK_ERR(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, &gi, 8), EINVAL);
	struct drm_panthor_csif_info ci;
	CHECK_ERR(qp_query(fd, DRM_PANTHOR_DEV_QUERY_CSIF_INFO, &ci, 4), EINVAL);
	/* unmapped user pointer */
	CHECK_ERR(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, (void *)(uintptr_t)0x10, sizeof(gi)),
		  EFAULT);
	/* size query returns the kernel's object sizes */
	q = (struct drm_panthor_dev_query){ .type = DRM_PANTHOR_DEV_QUERY_CSIF_INFO };
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANTHOR_DEV_QUERY, &q));
	CHECK(q.size == sizeof(ci), "CSIF_INFO size %u, uAPI struct %zu", q.size, sizeof(ci));
	close(fd);
	return QP_PASS;
}

int test_query_group_priorities(void)
{
	int fd = qp_open();
	struct drm_panthor_group_priorities_info p;
	memset(&p, 0xff, sizeof(p));
	int r = qp_query(fd, DRM_PANTHOR_DEV_QUERY_GROUP_PRIORITIES_INFO, &p, sizeof(p));
	if (r == -EINVAL)
		return qp_skip("GROUP_PRIORITIES_INFO not supported (needs uAPI 1.2)");
	CHECK_OK(r);
	qp_diag("allowed_mask 0x%x (running as uid %d)", p.allowed_mask, getuid());
	CHECK(p.pad[0] == 0 && p.pad[1] == 0 && p.pad[2] == 0, "pad not zeroed");
	/* LOW and MEDIUM are always allowed; as root (CAP_SYS_NICE) HIGH and REALTIME too */
	CHECK((p.allowed_mask & 0x3) == 0x3, "LOW/MEDIUM not allowed: 0x%x", p.allowed_mask);
	if (geteuid() == 0)
		CHECK(p.allowed_mask == 0xf, "root should get all priorities: 0x%x", p.allowed_mask);
	close(fd);
	return QP_PASS;
}

/* -- runtime PM ------------------------------------------------------------------- */
static int pm_status(const char *dev, char *buf, size_t len)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/power/runtime_status", dev);
	int r = qp_read_file(path, buf, len);
	if (!r)
		buf[strcspn(buf, "\n")] = '\0';
	return r;
}

/* poll runtime_status until it reads want (bounded); returns ms waited or -1 */
static int pm_wait(const char *dev, const char *want, unsigned limit_ms)
{
	char st[32];
	double t0 = qp_now();
	for (;;) {
		if (!pm_status(dev, st, sizeof(st)) && !strcmp(st, want))
			return (int)((qp_now() - t0) * 1000);
		if ((qp_now() - t0) * 1000 > limit_ms)
			return -1;
		qp_sleep_ms(1);
	}
}

static long pm_active_ms(const char *dev)
{
	char path[PATH_MAX + 32], v[32];
	snprintf(path, sizeof(path), "%s/power/runtime_active_time", dev);
	return qp_read_file(path, v, sizeof(v)) ? -1 : strtol(v, NULL, 10);
}

/* n runtime suspend/resume cycles of the GPU, each resume checked to be real */
int qp_runtime_pm_cycles(int n)
{
	char dev[PATH_MAX], ctl[PATH_MAX + 32], delay_path[PATH_MAX + 32], old_delay[32], st[32];
	CHECK(qp_panthor_sysfs(dev, sizeof(dev)) == 0, "no panthor platform device");
	snprintf(ctl, sizeof(ctl), "%s/power/control", dev);
	snprintf(delay_path, sizeof(delay_path), "%s/power/autosuspend_delay_ms", dev);
	CHECK_OK(qp_read_file(delay_path, old_delay, sizeof(old_delay)));
	old_delay[strcspn(old_delay, "\n")] = '\0';
	CHECK_OK(pm_status(dev, st, sizeof(st)));
	qp_diag("runtime_status %s, autosuspend_delay_ms %s", st, old_delay);
	int fd = qp_open();
	CHECK_OK(qp_write_file(delay_path, "5"));
	CHECK_OK(qp_write_file(ctl, "auto"));
	int cycles = 0, max_ms = 0;
	/* TIMESTAMP_INFO (uAPI 1.1) resumes the device; older kernels (6.12) lack it, and there
	 * every cycle resumes through power/control instead. */
	struct drm_panthor_timestamp_info ti0 = { 0 };
	bool have_ts = qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &ti0, sizeof(ti0)) == 0;
	if (!have_ts)
		qp_diag("no TIMESTAMP_INFO in this uAPI: resuming through power/control only");
	double t0 = qp_now();
	CHECK(pm_wait(dev, "suspended", 3000) >= 0, "device never runtime-suspended");
	for (int i = 0; i < n; i++) {
		/* resume: alternately by power/control=on and by a TIMESTAMP_INFO query; a real
		 * resume shows as runtime_active_time growing across the cycle */
		long before = pm_active_ms(dev);
		if (i % 2 == 0 || !have_ts) {
			CHECK_OK(qp_write_file(ctl, "on"));
			CHECK_OK(pm_status(dev, st, sizeof(st)));
			CHECK(!strcmp(st, "active"), "cycle %d: '%s' after control=on", i, st);
			CHECK_OK(qp_write_file(ctl, "auto"));
		} else {
			struct drm_panthor_timestamp_info ti = { 0 };
			CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &ti, sizeof(ti)));
			CHECK(ti.timestamp_frequency == ti0.timestamp_frequency,
			      "cycle %d: frequency %llu, was %llu", i,
			      (unsigned long long)ti.timestamp_frequency,
			      (unsigned long long)ti0.timestamp_frequency);
			CHECK(ti.current_timestamp > ti0.current_timestamp,
			      "cycle %d: GPU timestamp did not advance", i);
		}
		int ms = pm_wait(dev, "suspended", 3000);
		if (ms < 0) {
			pm_status(dev, st, sizeof(st));
			qp_diag("cycle %d: still '%s' after 3 s", i, st);
			break;
		}
		long after = pm_active_ms(dev);
		CHECK(after > before, "cycle %d: runtime_active_time %ld -> %ld: no resume", i, before,
		      after);
		cycles++;
		max_ms = ms > max_ms ? ms : max_ms;
	}
	double dt = qp_now() - t0;
	qp_write_file(delay_path, old_delay);
	qp_diag("%d resume/suspend cycles in %.2f s (%.1f ms each, longest suspend wait %d ms)",
		cycles, dt, cycles ? dt * 1000 / cycles : 0.0, max_ms);
	CHECK(cycles == n, "only %d of %d runtime PM cycles completed", cycles, n);
	/* the device still answers after the cycles */
	if (have_ts) {
		struct drm_panthor_timestamp_info ti = { 0 };
		CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_TIMESTAMP_INFO, &ti, sizeof(ti)));
		CHECK(ti.timestamp_frequency == ti0.timestamp_frequency,
		      "frequency %llu after the cycles, was %llu",
		      (unsigned long long)ti.timestamp_frequency,
		      (unsigned long long)ti0.timestamp_frequency);
		CHECK(ti.current_timestamp > ti0.current_timestamp,
		      "GPU timestamp did not advance over the cycles");
	}
	struct drm_panthor_gpu_info gi;
	CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, &gi, sizeof(gi)));
	CHECK(gi.gpu_id == qp_env_or("GPU_ID", 0), "GPU_ID 0x%x after the cycles", gi.gpu_id);
	close(fd);
	return QP_PASS;
}

int test_runtime_pm_cycles(void) { return qp_runtime_pm_cycles(100); }

/* -- kernel log ------------------------------------------------------------------- */
static bool contains_ci(const char *s, const char *needle)
{
	size_t n = strlen(needle);
	for (; *s; s++)
		if (!strncasecmp(s, needle, n))
			return true;
	return false;
}

int test_kmsg_probe_clean(void)
{
	static char log[1 << 20];
	int fd = qp_kmsg_open(false);
	CHECK(fd >= 0, "/dev/kmsg: %s", strerror(errno));
	qp_kmsg_drain(fd, log, sizeof(log));
	close(fd);
	int bad = 0, lines = 0;
	for (char *line = log, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		/* the driver's own lines: "panthor <dev>: ..." (dev_err, drm_err, ...) */
		if (strncmp(line, "panthor ", 8) && strncmp(line, "panthor:", 8)) {
			if (strstr(line, "panthor"))
				qp_diag("not a driver line: %s", line);
			continue;
		}
		lines++;
		if (!contains_ci(line, "timeout") && !contains_ci(line, "failed") &&
		    !contains_ci(line, "error"))
			continue;
		if (strstr(line, "no regulator (mali) found")) {
			qp_diag("known harmless: %s", line);
			continue;
		}
		qp_diag("unexpected: %s", line);
		bad++;
	}
	CHECK(lines > 0, "no panthor lines in the kernel log at all");
	CHECK(bad == 0, "%d unexpected panthor timeout/failed/error lines", bad);
	return QP_PASS;
}

/* Run after the fault tests: the whole kernel log holds only the faults the suite caused on
 * purpose. No WARN/BUG/oops anywhere; every panthor line that reports a problem is one of:
 * the probe's known regulator line, an "Unhandled Page fault" at the suite's hole VA, a
 * CS_FATAL of a suite process whose exception is a bad opcode (0x49) or the bus fault that
 * ends an access at that hole once panthor disabled the faulted AS (0x48 CS_BUS_FAULT, kbase's
 * cs_error_worker), or the one "job timeout" of job_timeout_recovery when it ran. A fault reported in another
 * VM's name, a fetch in a disabled AS (a bus fault elsewhere), a CSG request timeout or a
 * reset all fail. */
int test_kmsg_faults_only_expected(void)
{
	static char log[1 << 20];
	int fd = qp_kmsg_open(false);
	CHECK(fd >= 0, "/dev/kmsg: %s", strerror(errno));
	qp_kmsg_drain(fd, log, sizeof(log));
	close(fd);
	static const char *const fatal_kernel[] = { "WARNING:", "BUG:", "Oops", "Call trace:",
						    "cut here", "Unable to handle kernel",
						    "kernel BUG", "general protection" };
	int bad = 0, faults = 0, fatals = 0, timeouts = 0;
	for (char *line = log, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		for (size_t k = 0; k < sizeof(fatal_kernel) / sizeof(fatal_kernel[0]); k++)
			if (strstr(line, fatal_kernel[k])) {
				qp_diag("kernel warning/bug: %.240s", line);
				bad++;
			}
		if (strncmp(line, "panthor ", 8))
			continue;
		const char *p;
		if ((p = strstr(line, "Unhandled Page fault in AS")) && (p = strstr(p, " at VA "))) {
			faults++;
			if (strtoull(p + 7, NULL, 16) != 0x7654320ull) {
				qp_diag("fault at an unexpected VA: %.240s", line);
				bad++;
			}
			continue;
		}
		if ((p = strstr(line, "CS_FATAL.EXCEPTION_TYPE: 0x"))) {
			fatals++;
			unsigned long type = strtoul(p + 27, NULL, 16);
			const char *info = strstr(line, "CS_FATAL_INFO.EXCEPTION_DATA: 0x");
			unsigned long long va = info ? strtoull(info + 32, NULL, 16) : 0;
			if (type != 0x49 && !(type == 0x48 && va == 0x7654320ull)) {
				qp_diag("unexpected CS_FATAL: %.240s", line);
				bad++;
			}
			continue;
		}
		if (strstr(line, "CS_FATAL: pid=") || strstr(line, "] job timeout")) {
			timeouts += strstr(line, "job timeout") != NULL;
			/* 7.2 names the process (6.12 prints a bare "job timeout") */
			if (strstr(line, "pid=") && !strstr(line, "comm=qp-selftests")) {
				qp_diag("not caused by the suite: %.240s", line);
				bad++;
			}
			continue;
		}
		if (strstr(line, "no regulator (mali) found"))
			continue;
		if (contains_ci(line, "timeout") || contains_ci(line, "timedout") ||
		    contains_ci(line, "fail") || contains_ci(line, "error") ||
		    contains_ci(line, "reset") || contains_ci(line, "fault") ||
		    contains_ci(line, "warn")) {
			qp_diag("unexpected: %.240s", line);
			bad++;
		}
	}
	qp_diag("%d page faults, %d CS_FATALs, %d job timeouts in the log, all expected unless "
		"listed above", faults, fatals, timeouts);
	CHECK(bad == 0, "%d unexpected kernel log lines", bad);
	/* one "job timeout" (panthor_sched.c ~3421) is job_timeout_recovery's, when it ran
	 * before (the long suite: --suite long/all or named); no other test may time out */
	int want = qp_test_ran("job_timeout_recovery");
	CHECK(timeouts == want, "%d 'job timeout' lines, want %d (job_timeout_recovery %s)",
	      timeouts, want, want ? "ran" : "did not run");
	return QP_PASS;
}

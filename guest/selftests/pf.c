/* panfrost selftests: a Job Manager Mali (qemu-panthor --gpu g52) through panfrost's raw uAPI
 * (<drm/panfrost_drm.h>, no libdrm). Probe and identity against /etc/qp/gpu.env, BOs, job
 * chains of Write Value / Null / Cache Flush jobs (genxml v7 job header, as IGT's
 * lib/igt_panfrost.c builds them), dependencies through syncobjs, a job fault, an MMU fault,
 * per-file address spaces with more open files than AS slots, a heap BO growing on fault, JM
 * contexts, runtime PM and the timeout/reset path of an endless job loop. docs/panfrost.md has the facts relied on. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <drm/panfrost_drm.h>

#include "qp.h"

/* -- job descriptors (Bifrost genxml v7 "Job Header", 64-byte aligned) ------------------- */
enum { PF_JOB_NULL = 1, PF_JOB_WRITE_VALUE = 2, PF_JOB_CACHE_FLUSH = 3 };
enum { PF_WV_CYCLE = 1, PF_WV_TIMESTAMP = 2, PF_WV_ZERO = 3, PF_WV_IMM8 = 4, PF_WV_IMM16 = 5,
       PF_WV_IMM32 = 6, PF_WV_IMM64 = 7 };
#define PF_EXC_DONE 0x01
#define PF_EXC_JOB_CONFIG_FAULT 0x40
#define PF_JOB_SIZE 64 /* header (32) + payload, aligned */

struct pf_job {
	uint32_t exception_status;
	uint32_t first_incomplete_task;
	uint64_t fault_pointer;
	uint32_t control; /* bit 0 is-64b, [7:1] type, bit 8 barrier, [31:16] index */
	uint16_t dep1, dep2;
	uint64_t next;
	/* Write Value payload */
	uint64_t address;
	uint32_t value_type;
	uint32_t reserved;
	uint64_t immediate;
} __attribute__((packed));

_Static_assert(sizeof(struct pf_job) == 56, "job header 32 + write value payload 24");

/* a job at byte offset off of bo (CPU map + GPU VA); returns its GPU VA */
static uint64_t pf_job(struct qp_bo *bo, uint32_t off, unsigned type, unsigned index,
		       uint64_t next, uint64_t target, unsigned wv_type, uint64_t imm)
{
	struct pf_job *j = (struct pf_job *)((char *)bo->map + off);
	memset(j, 0, PF_JOB_SIZE);
	j->control = 1u | (type << 1) | (index << 16);
	j->next = next;
	j->address = target;
	j->value_type = wv_type;
	j->immediate = imm;
	__sync_synchronize();
	return bo->va + off;
}

static struct pf_job *pf_job_at(struct qp_bo *bo, uint32_t off)
{
	return (struct pf_job *)((char *)bo->map + off);
}

/* -- uAPI helpers -------------------------------------------------------------------------- */
static int pf_open(void)
{
	int fd = qp_open();
	char name[32] = "";
	struct drm_version v = { .name_len = sizeof(name) - 1, .name = name };
	if (qp_ioctl(fd, DRM_IOCTL_VERSION, &v) || strcmp(name, "panfrost")) {
		qp_diag("/dev/dri/renderD128 is driven by '%s', not panfrost", name);
		fflush(stdout);
		_exit(QP_FAIL);
	}
	return fd;
}

static int pf_version(int fd, int *minor)
{
	char name[32] = "";
	struct drm_version v = { .name_len = sizeof(name) - 1, .name = name };
	int r = qp_ioctl(fd, DRM_IOCTL_VERSION, &v);
	*minor = v.version_minor;
	return r ? r : v.version_major;
}

static int pf_param(int fd, uint32_t param, uint64_t *value)
{
	struct drm_panfrost_get_param a = { .param = param };
	int r = qp_ioctl(fd, DRM_IOCTL_PANFROST_GET_PARAM, &a);
	*value = a.value;
	return r;
}

/* a BO of size bytes (flags PANFROST_BO_*), CPU-mapped unless it is a heap BO */
static int pf_bo(int fd, uint32_t size, uint32_t flags, struct qp_bo *bo)
{
	memset(bo, 0, sizeof(*bo));
	struct drm_panfrost_create_bo c = { .size = size, .flags = flags };
	int r = qp_ioctl(fd, DRM_IOCTL_PANFROST_CREATE_BO, &c);
	if (r)
		return r;
	bo->handle = c.handle;
	bo->size = size;
	bo->va = c.offset;
	if (flags & PANFROST_BO_HEAP)
		return 0;
	struct drm_panfrost_mmap_bo m = { .handle = c.handle };
	r = qp_ioctl(fd, DRM_IOCTL_PANFROST_MMAP_BO, &m);
	if (r)
		return r;
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)m.offset);
	if (p == MAP_FAILED)
		return -errno;
	bo->map = p;
	memset(p, 0, size);
	return 0;
}

static int pf_submit_ex(int fd, uint64_t jc, const uint32_t *bos, uint32_t nbos,
			const uint32_t *in, uint32_t nin, uint32_t out, uint32_t reqs,
			uint32_t ctx)
{
	struct drm_panfrost_submit s = {
		.jc = jc, .in_syncs = (uint64_t)(uintptr_t)in, .in_sync_count = nin,
		.out_sync = out, .bo_handles = (uint64_t)(uintptr_t)bos, .bo_handle_count = nbos,
		.requirements = reqs, .jm_ctx_handle = ctx,
	};
	return qp_ioctl(fd, DRM_IOCTL_PANFROST_SUBMIT, &s);
}

/* one chain at jc using bo, signalling a new syncobj (returned in *sync) */
static int pf_submit(int fd, uint64_t jc, struct qp_bo *bo, uint32_t *sync)
{
	int r = qp_syncobj_create(fd, sync, false);
	if (r)
		return r;
	return pf_submit_ex(fd, jc, &bo->handle, 1, NULL, 0, *sync, 0, 0);
}

/* wait for sync and give its fence status: 1 done, < 0 the fence error */
static int pf_wait(int fd, uint32_t sync, unsigned timeout_ms, int *status)
{
	int r = qp_syncobj_wait(fd, &sync, 1, timeout_ms, true);
	if (r)
		return r;
	return qp_syncobj_status(fd, sync, status);
}

#define PF_FIELD(param, key)                                                                \
	do {                                                                                \
		uint64_t got, want;                                                         \
		CHECK_OK(pf_param(fd, param, &got));                                        \
		CHECK(qp_env(key, &want), "gpu.env lacks %s", key);                         \
		CHECK(got == want, "%s: GET_PARAM 0x%llx, GPU model 0x%llx", #param,        \
		      (unsigned long long)got, (unsigned long long)want);                   \
	} while (0)

/* -- probe --------------------------------------------------------------------------------- */
int test_pf_modules(void)
{
	CHECK(qp_module_loaded("panfrost"), "panfrost is not in /proc/modules");
	CHECK(qp_module_loaded("gpu_sched"), "gpu_sched is not in /proc/modules");
	CHECK(!qp_module_loaded("panthor"), "panthor is loaded for a Job Manager GPU");
	return QP_PASS;
}

static int pf_sysfs(char *buf, size_t len)
{
	return qp_driver_sysfs("panfrost", buf, len);
}

int test_pf_probed(void)
{
	char dev[PATH_MAX];
	CHECK(pf_sysfs(dev, sizeof(dev)) == 0, "no qemu-panthor.* device bound to panfrost");
	/* what panfrost prints about the GPU it identified (panfrost_gpu_init_features) */
	static char log[1 << 20];
	int fd = qp_kmsg_open(false);
	CHECK(fd >= 0, "/dev/kmsg: %s", strerror(errno));
	qp_kmsg_drain(fd, log, sizeof(log));
	close(fd);
	uint64_t id = qp_env_or("GPU_ID", 0), l2 = qp_env_or("L2_FEATURES", 0);
	char want[160];
	snprintf(want, sizeof(want), "id 0x%llx major 0x%llx minor 0x%llx status 0x%llx",
		 (unsigned long long)(id >> 16), (unsigned long long)((id >> 12) & 0xf),
		 (unsigned long long)((id >> 4) & 0xff), (unsigned long long)(id & 0xf));
	CHECK(qp_kmsg_count(log, want) == 1, "the kernel log lacks \"%s\"", want);
	snprintf(want, sizeof(want), "Features: L2:0x%08llx", (unsigned long long)l2);
	CHECK(qp_kmsg_count(log, want) == 1, "the kernel log lacks \"%s\"", want);
	snprintf(want, sizeof(want), "JS:0x%llx", (unsigned long long)qp_env_or("JS_PRESENT", 0));
	CHECK(qp_kmsg_count(log, want) == 1, "the kernel log lacks \"%s\"", want);
	return QP_PASS;
}

int test_pf_render_node(void)
{
	char link[PATH_MAX], dev[PATH_MAX];
	ssize_t n = readlink("/sys/class/drm/renderD128/device", link, sizeof(link) - 1);
	CHECK(n > 0, "/sys/class/drm/renderD128/device: %s", strerror(errno));
	link[n] = '\0';
	CHECK(pf_sysfs(dev, sizeof(dev)) == 0, "no panfrost platform device");
	CHECK(!strcmp(strrchr(link, '/'), strrchr(dev, '/')), "renderD128 -> %s, panfrost is %s",
	      link, dev);
	int fd = pf_open(), minor;
	int major = pf_version(fd, &minor);
	qp_diag("driver panfrost %d.%d", major, minor);
	CHECK(major == 1, "panfrost major version %d", major);
	close(fd);
	return QP_PASS;
}

int test_pf_get_param(void)
{
	int fd = pf_open();
	uint64_t v, id = qp_env_or("GPU_ID", 0);
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_GPU_PROD_ID, &v));
	CHECK(v == id >> 16, "GPU_PROD_ID 0x%llx, GPU_ID 0x%llx", (unsigned long long)v,
	      (unsigned long long)id);
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_GPU_REVISION, &v));
	CHECK(v == (id & 0xffff), "GPU_REVISION 0x%llx", (unsigned long long)v);
	PF_FIELD(DRM_PANFROST_PARAM_SHADER_PRESENT, "SHADER_PRESENT");
	PF_FIELD(DRM_PANFROST_PARAM_TILER_PRESENT, "TILER_PRESENT");
	PF_FIELD(DRM_PANFROST_PARAM_L2_PRESENT, "L2_PRESENT");
	PF_FIELD(DRM_PANFROST_PARAM_STACK_PRESENT, "STACK_PRESENT");
	PF_FIELD(DRM_PANFROST_PARAM_AS_PRESENT, "AS_PRESENT");
	PF_FIELD(DRM_PANFROST_PARAM_JS_PRESENT, "JS_PRESENT");
	PF_FIELD(DRM_PANFROST_PARAM_L2_FEATURES, "L2_FEATURES");
	PF_FIELD(DRM_PANFROST_PARAM_CORE_FEATURES, "CORE_FEATURES");
	PF_FIELD(DRM_PANFROST_PARAM_TILER_FEATURES, "TILER_FEATURES");
	PF_FIELD(DRM_PANFROST_PARAM_MEM_FEATURES, "MEM_FEATURES");
	PF_FIELD(DRM_PANFROST_PARAM_MMU_FEATURES, "MMU_FEATURES");
	PF_FIELD(DRM_PANFROST_PARAM_THREAD_FEATURES, "THREAD_FEATURES");
	PF_FIELD(DRM_PANFROST_PARAM_MAX_THREADS, "MAX_THREADS");
	PF_FIELD(DRM_PANFROST_PARAM_THREAD_MAX_WORKGROUP_SZ, "THREAD_MAX_WORKGROUP_SIZE");
	PF_FIELD(DRM_PANFROST_PARAM_THREAD_MAX_BARRIER_SZ, "THREAD_MAX_BARRIER_SIZE");
	PF_FIELD(DRM_PANFROST_PARAM_THREAD_TLS_ALLOC, "THREAD_TLS_ALLOC");
	PF_FIELD(DRM_PANFROST_PARAM_AFBC_FEATURES, "AFBC_FEATURES");
	for (unsigned i = 0; i < 4; i++) {
		char key[32];
		snprintf(key, sizeof(key), "TEXTURE_FEATURES%u", i);
		PF_FIELD(DRM_PANFROST_PARAM_TEXTURE_FEATURES0 + i, key);
	}
	uint64_t js_present = qp_env_or("JS_PRESENT", 0);
	for (unsigned i = 0; i < 16; i++) {
		char key[32];
		snprintf(key, sizeof(key), "JS_FEATURES%u", i);
		uint64_t want = qp_env_or(key, 0);
		CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_JS_FEATURES0 + i, &v));
		CHECK(v == want, "JS_FEATURES%u 0x%llx, want 0x%llx", i, (unsigned long long)v,
		      (unsigned long long)want);
		CHECK(!(js_present >> i & 1) == !want, "JS_FEATURES%u vs JS_PRESENT", i);
	}
	/* one L2, one core group */
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_NR_CORE_GROUPS, &v));
	CHECK(v == 1, "NR_CORE_GROUPS %llu", (unsigned long long)v);
	/* panfrost reports ACE-Lite (bit 0) whatever the register says when it has not yet
	 * read its hardware features (panfrost_gpu_init_features, 7.2); the model offers it */
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_COHERENCY_FEATURES, &v));
	CHECK(v & 1, "COHERENCY_FEATURES 0x%llx lacks ACE-Lite", (unsigned long long)v);
	int minor;
	pf_version(fd, &minor);
	if (minor >= 6) { /* SELECTED_COHERENCY: none, as on RK3568, unless boot --coherent */
		char cmdline[4096] = "";
		qp_read_file("/proc/cmdline", cmdline, sizeof(cmdline));
		uint64_t want = strstr(cmdline, "qp.coherent=1") ? DRM_PANFROST_GPU_COHERENCY_ACE_LITE
								 : DRM_PANFROST_GPU_COHERENCY_NONE;
		CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_SELECTED_COHERENCY, &v));
		CHECK(v == want, "SELECTED_COHERENCY %llu, want %llu", (unsigned long long)v,
		      (unsigned long long)want);
	}
	close(fd);
	return QP_PASS;
}

int test_pf_get_param_invalid(void)
{
	int fd = pf_open();
	uint64_t v;
	CHECK_ERR(pf_param(fd, 0x10000, &v), EINVAL);
	struct drm_panfrost_get_param a = { .param = DRM_PANFROST_PARAM_GPU_PROD_ID, .pad = 1 };
	CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANFROST_GET_PARAM, &a), EINVAL);
	close(fd);
	return QP_PASS;
}

int test_pf_timestamp(void)
{
	int fd = pf_open(), minor;
	pf_version(fd, &minor);
	if (minor < 3)
		return qp_skip("panfrost 1.%d has no SYSTEM_TIMESTAMP queries (1.3+)", minor);
	uint64_t freq, t1, t2;
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_SYSTEM_TIMESTAMP_FREQUENCY, &freq));
	CHECK(freq == qp_env_or("TIMESTAMP_HZ", 0), "timestamp frequency %llu",
	      (unsigned long long)freq);
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_SYSTEM_TIMESTAMP, &t1));
	double w0 = qp_now();
	qp_sleep_ms(50);
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_SYSTEM_TIMESTAMP, &t2));
	double dt = (double)(t2 - t1) / (double)freq, wall = qp_now() - w0;
	CHECK(t2 > t1 && dt > 0.04 && dt < wall + 0.5, "GPU timestamp advanced %.3f s in %.3f s",
	      dt, wall);
	close(fd);
	return QP_PASS;
}

/* -- BOs ----------------------------------------------------------------------------------- */
int test_pf_bo_create_mmap(void)
{
	int fd = pf_open();
	struct qp_bo a, b, heap;
	CHECK_OK(pf_bo(fd, 4096, 0, &a));
	CHECK_OK(pf_bo(fd, 3 << 20, PANFROST_BO_NOEXEC, &b));
	/* the per-file GPU VA range: [32 MiB, 4 GiB), never 0; 2 MiB-aligned NOEXEC BOs >= 2M */
	CHECK(a.va >= (32ull << 20) && a.va + a.size <= (4ull << 30), "BO at 0x%llx",
	      (unsigned long long)a.va);
	CHECK(b.va % (2 << 20) == 0, "3 MiB NOEXEC BO at 0x%llx", (unsigned long long)b.va);
	struct drm_panfrost_get_bo_offset o = { .handle = b.handle };
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANFROST_GET_BO_OFFSET, &o));
	CHECK(o.offset == b.va, "GET_BO_OFFSET 0x%llx, CREATE_BO 0x%llx",
	      (unsigned long long)o.offset, (unsigned long long)b.va);
	((volatile uint32_t *)b.map)[0] = 0x600dcafe;
	CHECK(((volatile uint32_t *)b.map)[0] == 0x600dcafe, "BO memory does not hold a write");
	CHECK_OK(pf_bo(fd, 4 << 20, PANFROST_BO_HEAP | PANFROST_BO_NOEXEC, &heap));
	struct drm_panfrost_mmap_bo m = { .handle = heap.handle };
	CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANFROST_MMAP_BO, &m), EINVAL);
	/* invalid: unknown flags, HEAP without NOEXEC, size 0, a bad handle */
	struct qp_bo bad;
	CHECK_ERR(pf_bo(fd, 4096, 0x80, &bad), EINVAL);
	CHECK_ERR(pf_bo(fd, 4096, PANFROST_BO_HEAP, &bad), EINVAL);
	CHECK_ERR(pf_bo(fd, 0, 0, &bad), EINVAL);
	o.handle = 0xdead;
	CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANFROST_GET_BO_OFFSET, &o), ENOENT);
	struct drm_panfrost_wait_bo w = { .handle = a.handle, .timeout_ns = 0 };
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANFROST_WAIT_BO, &w)); /* idle BO */
	w.handle = 0xdead;
	CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANFROST_WAIT_BO, &w), ENOENT);
	close(fd);
	return QP_PASS;
}

/* -- jobs ---------------------------------------------------------------------------------- */
int test_pf_write_value_chain(void)
{
	int fd = pf_open(), minor;
	pf_version(fd, &minor);
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 64 << 10, 0, &bo));
	uint8_t *data = (uint8_t *)bo.map + 0x8000;
	uint64_t dva = bo.va + 0x8000;
	memset(data, 0xaa, 0x100);
	/* seven jobs linked by next, one per value type, each writing at its own 16 bytes */
	static const unsigned types[] = { PF_WV_IMM8, PF_WV_IMM16, PF_WV_IMM32, PF_WV_IMM64,
					  PF_WV_ZERO, PF_WV_TIMESTAMP, PF_WV_CYCLE };
	const uint64_t imm = 0x1122334455667788ull;
	uint64_t next = 0;
	for (int i = 6; i >= 0; i--)
		next = pf_job(&bo, (uint32_t)i * PF_JOB_SIZE, PF_JOB_WRITE_VALUE, (unsigned)i + 1,
			      next, dva + 16u * (unsigned)i, types[i], imm);
	uint32_t sync;
	CHECK_OK(qp_syncobj_create(fd, &sync, false));
	/* the cycle counter runs for the job with JD_REQ_CYCLE_COUNT (1.3+) */
	CHECK_OK(pf_submit_ex(fd, next, &bo.handle, 1, NULL, 0, sync,
			      minor >= 3 ? PANFROST_JD_REQ_CYCLE_COUNT : 0, 0));
	int st;
	CHECK_OK(pf_wait(fd, sync, 5000, &st));
	CHECK(st == 1, "fence status %d", st);
	for (int i = 0; i < 7; i++)
		CHECK(pf_job_at(&bo, (uint32_t)i * PF_JOB_SIZE)->exception_status == PF_EXC_DONE,
		      "job %d exception status 0x%x", i,
		      pf_job_at(&bo, (uint32_t)i * PF_JOB_SIZE)->exception_status);
	uint64_t q;
	CHECK(data[0] == 0x88 && data[1] == 0xaa, "IMM8 wrote %02x %02x", data[0], data[1]);
	CHECK(data[16] == 0x88 && data[17] == 0x77 && data[18] == 0xaa, "IMM16");
	memcpy(&q, data + 32, 8);
	CHECK(q == 0xaaaaaaaa55667788ull, "IMM32: 0x%llx", (unsigned long long)q);
	memcpy(&q, data + 48, 8);
	CHECK(q == imm, "IMM64: 0x%llx", (unsigned long long)q);
	memcpy(&q, data + 64, 8);
	CHECK(q == 0, "ZERO: 0x%llx", (unsigned long long)q);
	memcpy(&q, data + 80, 8);
	uint64_t now = ~0ull;
	if (minor >= 3)
		CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_SYSTEM_TIMESTAMP, &now));
	CHECK(q != 0xaaaaaaaaaaaaaaaaull && q && q <= now, "SYSTEM_TIMESTAMP 0x%llx, now 0x%llx",
	      (unsigned long long)q, (unsigned long long)now);
	memcpy(&q, data + 96, 8);
	CHECK(q != 0xaaaaaaaaaaaaaaaaull, "CYCLE_COUNTER not written");
	close(fd);
	return QP_PASS;
}

int test_pf_null_flush_fragment_jobs(void)
{
	int fd = pf_open();
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 16 << 10, 0, &bo));
	uint64_t wv = pf_job(&bo, 2 * PF_JOB_SIZE, PF_JOB_WRITE_VALUE, 3, 0, bo.va + 0x2000,
			     PF_WV_IMM32, 0x5a5a5a5a);
	uint64_t fl = pf_job(&bo, PF_JOB_SIZE, PF_JOB_CACHE_FLUSH, 2, wv, 0, 0, 0);
	uint64_t jc = pf_job(&bo, 0, PF_JOB_NULL, 1, fl, 0, 0, 0);
	/* PANFROST_JD_REQ_FS: the fragment slot (JS0) */
	uint32_t sync;
	CHECK_OK(qp_syncobj_create(fd, &sync, false));
	CHECK_OK(pf_submit_ex(fd, jc, &bo.handle, 1, NULL, 0, sync, PANFROST_JD_REQ_FS, 0));
	int st;
	CHECK_OK(pf_wait(fd, sync, 5000, &st));
	CHECK(st == 1, "fence status %d", st);
	CHECK(*(volatile uint32_t *)((char *)bo.map + 0x2000) == 0x5a5a5a5a, "value not written");
	for (int i = 0; i < 3; i++)
		CHECK(pf_job_at(&bo, (uint32_t)i * PF_JOB_SIZE)->exception_status == PF_EXC_DONE,
		      "job %d status 0x%x", i, pf_job_at(&bo, (uint32_t)i * PF_JOB_SIZE)->exception_status);
	close(fd);
	return QP_PASS;
}

int test_pf_submit_deps(void)
{
	int fd = pf_open();
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 64 << 10, 0, &bo));
	/* 16 submits, each waiting on the one before, each writing its sequence number */
	uint32_t syncs[16];
	for (unsigned i = 0; i < 16; i++) {
		uint64_t jc = pf_job(&bo, i * PF_JOB_SIZE, PF_JOB_WRITE_VALUE, 1, 0,
				     bo.va + 0x8000 + 4 * i, PF_WV_IMM32, i + 1);
		CHECK_OK(qp_syncobj_create(fd, &syncs[i], false));
		CHECK_OK(pf_submit_ex(fd, jc, &bo.handle, 1, i ? &syncs[i - 1] : NULL, i ? 1 : 0,
				      syncs[i], i % 2 ? PANFROST_JD_REQ_FS : 0, 0));
	}
	int st;
	CHECK_OK(pf_wait(fd, syncs[15], 10000, &st));
	CHECK(st == 1, "fence status %d", st);
	for (unsigned i = 0; i < 16; i++) {
		CHECK_OK(qp_syncobj_status(fd, syncs[i], &st));
		CHECK(st == 1, "submit %u fence status %d", i, st);
		CHECK(((volatile uint32_t *)((char *)bo.map + 0x8000))[i] == i + 1, "word %u", i);
	}
	/* WAIT_BO: the BO's implicit fences are signalled */
	struct drm_panfrost_wait_bo w = { .handle = bo.handle, .timeout_ns = 0 };
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANFROST_WAIT_BO, &w));
	close(fd);
	return QP_PASS;
}

int test_pf_submit_invalid(void)
{
	int fd = pf_open();
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 4096, 0, &bo));
	uint64_t jc = pf_job(&bo, 0, PF_JOB_NULL, 1, 0, 0, 0, 0);
	uint32_t sync, bad = 0xdead;
	CHECK_OK(qp_syncobj_create(fd, &sync, false));
	CHECK_ERR(pf_submit_ex(fd, 0, &bo.handle, 1, NULL, 0, sync, 0, 0), EINVAL);
	CHECK_ERR(pf_submit_ex(fd, jc, &bo.handle, 1, NULL, 0, sync, 0x4, 0), EINVAL);
	CHECK_ERR(pf_submit_ex(fd, jc, &bo.handle, 1, NULL, 0, 0xdead, 0, 0), ENODEV);
	CHECK_ERR(pf_submit_ex(fd, jc, &bad, 1, NULL, 0, sync, 0, 0), ENOENT);
	CHECK_ERR(pf_submit_ex(fd, jc, &bo.handle, 1, &bad, 1, sync, 0, 0), ENOENT);
	int minor;
	pf_version(fd, &minor);
	if (minor >= 5) { /* SUBMIT's jm_ctx_handle and pad (1.5+) */
		struct drm_panfrost_submit s = { .jc = jc, .out_sync = sync, .pad = 1 };
		CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANFROST_SUBMIT, &s), EINVAL);
	}
	close(fd);
	return QP_PASS;
}

/* a fault: the fence carries panfrost's fault error, the job header holds what the GPU
 * wrote back (docs/jm.md "Jobs"), the driver logged what (needle) and the same file still
 * runs jobs afterwards */
static int pf_fault_case(bool mmu)
{
	int fd = pf_open();
	int kfd = qp_kmsg_open(true);
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 16 << 10, 0, &bo));
	uint64_t jc = mmu ? pf_job(&bo, 0, PF_JOB_WRITE_VALUE, 1, 0, 0xdeadbeef0000ull,
				   PF_WV_ZERO, 0)
			  : pf_job(&bo, 0, 0 /* NOT_STARTED: no such job */, 1, 0, 0, 0, 0);
	uint32_t sync;
	CHECK_OK(pf_submit(fd, jc, &bo, &sync));
	int st;
	CHECK_OK(pf_wait(fd, sync, 5000, &st));
	const struct pf_job *j = pf_job_at(&bo, 0);
	uint32_t exc = j->exception_status;
	uint64_t fp = j->fault_pointer;
	qp_diag("fence error %d, job exception status 0x%x fault pointer 0x%llx (job 0x%llx)", st,
		exc, (unsigned long long)fp, (unsigned long long)jc);
	/* a fault status (JOB_CONFIG_FAULT, JOB_BUS_FAULT) ends the job with -EINVAL
	 * (panfrost_job.c ~483-488, panfrost_job_handle_err) */
	CHECK(st == -EINVAL, "fence status %d, want -EINVAL (a job fault)", st);
	if (mmu) {
		/* the write faults, the job stalls, panfrost disables the AS and the job fails
		 * without its descriptor written back (docs/jm.md "Memory faults") */
		CHECK(exc == 0 && fp == 0, "the MMU-faulted job's header was written: status 0x%x "
		      "fault pointer 0x%llx", exc, (unsigned long long)fp);
	} else {
		/* type 0 is JOB_CONFIG_FAULT (0x40), written back with the job as fault pointer
		 * (docs/jm.md "Jobs") */
		CHECK(exc == PF_EXC_JOB_CONFIG_FAULT, "job exception status 0x%x, want 0x%x", exc,
		      PF_EXC_JOB_CONFIG_FAULT);
		CHECK(fp == jc, "fault pointer 0x%llx, want the job 0x%llx",
		      (unsigned long long)fp, (unsigned long long)jc);
	}
	/* the driver's fault logging runs in its IRQ threads: poll the log until it shows */
	static char log[1 << 16];
	const char *needle = mmu ? "Unhandled Page fault in AS" : "js fault";
	qp_kmsg_wait(kfd, log, sizeof(log), needle, 5000);
	close(kfd);
	qp_kmsg_show(log);
	CHECK(qp_kmsg_count(log, needle) >= 1, "no \"%s\" in the kernel log within 5 s", needle);
	/* the file's next job runs (its AS is re-enabled after the fault) */
	jc = pf_job(&bo, PF_JOB_SIZE, PF_JOB_WRITE_VALUE, 1, 0, bo.va + 0x2000, PF_WV_IMM32, 7);
	CHECK_OK(pf_submit(fd, jc, &bo, &sync));
	CHECK_OK(pf_wait(fd, sync, 5000, &st));
	CHECK(st == 1 && *(volatile uint32_t *)((char *)bo.map + 0x2000) == 7,
	      "the job after the fault: status %d", st);
	close(fd);
	return QP_PASS;
}

/* a heap BO grows on fault: the job's write into its unbacked pages stalls on the MMU fault,
 * panfrost maps 2 MiB of the heap and restarts the AS, the job completes */
int test_pf_heap_grow_on_fault(void)
{
	int fd = pf_open();
	int kfd = qp_kmsg_open(true);
	struct qp_bo bo, heap;
	CHECK_OK(pf_bo(fd, 16 << 10, 0, &bo));
	CHECK_OK(pf_bo(fd, 8 << 20, PANFROST_BO_HEAP | PANFROST_BO_NOEXEC, &heap));
	uint32_t handles[2] = { bo.handle, heap.handle }, sync;
	int st;
	for (unsigned i = 0; i < 3; i++) { /* the first 2 MiB twice, then the next 2 MiB */
		uint64_t target = heap.va + (i == 2 ? (2u << 20) + 0x40 : 0x1000u * (i + 1));
		uint64_t jc = pf_job(&bo, i * PF_JOB_SIZE, PF_JOB_WRITE_VALUE, 1, 0, target,
				     PF_WV_IMM32, 0xfeed0000u + i);
		CHECK_OK(qp_syncobj_create(fd, &sync, false));
		CHECK_OK(pf_submit_ex(fd, jc, handles, 2, NULL, 0, sync, 0, 0));
		CHECK_OK(pf_wait(fd, sync, 5000, &st));
		CHECK(st == 1, "write %u into the heap: fence status %d", i, st);
		CHECK(pf_job_at(&bo, i * PF_JOB_SIZE)->exception_status == PF_EXC_DONE,
		      "write %u: job status 0x%x", i, pf_job_at(&bo, i * PF_JOB_SIZE)->exception_status);
	}
	static char log[1 << 16];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	CHECK(qp_kmsg_count(log, "Unhandled Page fault") == 0 && qp_kmsg_count(log, "js fault") == 0,
	      "the heap's faults were not handled");
	close(fd);
	return QP_PASS;
}

int test_pf_job_fault(void) { return pf_fault_case(false); }
int test_pf_mmu_fault(void) { return pf_fault_case(true); }

/* per-file address spaces: more open files than AS slots, every file's first BO at the same
 * GPU VA, all submitting before any waits; each job writes into its own file's BO only */
int test_pf_per_fd_address_spaces(void)
{
	enum { FILES = 20, ROUNDS = 3 };
	int fds[FILES];
	struct qp_bo bos[FILES];
	uint32_t syncs[FILES];
	uint64_t as_present = qp_env_or("AS_PRESENT", 0);
	CHECK(FILES > __builtin_popcountll(as_present), "AS_PRESENT 0x%llx",
	      (unsigned long long)as_present);
	for (int i = 0; i < FILES; i++) {
		fds[i] = pf_open();
		CHECK_OK(pf_bo(fds[i], 16 << 10, 0, &bos[i]));
	}
	int same = 0;
	for (int i = 1; i < FILES; i++)
		same += bos[i].va == bos[0].va;
	qp_diag("%d of %d files have their first BO at GPU VA 0x%llx", same + 1, FILES,
		(unsigned long long)bos[0].va);
	CHECK(same == FILES - 1, "the files' first BOs are not all at one VA");
	for (int round = 0; round < ROUNDS; round++) {
		for (int i = 0; i < FILES; i++) {
			uint32_t v = 0x1000u * (unsigned)round + (unsigned)i + 1;
			uint64_t jc = pf_job(&bos[i], (uint32_t)round * PF_JOB_SIZE,
					     PF_JOB_WRITE_VALUE, 1, 0, bos[i].va + 0x2000,
					     PF_WV_IMM32, v);
			CHECK_OK(pf_submit(fds[i], jc, &bos[i], &syncs[i]));
		}
		for (int i = 0; i < FILES; i++) {
			int st;
			CHECK_OK(pf_wait(fds[i], syncs[i], 10000, &st));
			CHECK(st == 1, "round %d file %d fence status %d", round, i, st);
			uint32_t got = *(volatile uint32_t *)((char *)bos[i].map + 0x2000);
			uint32_t want = 0x1000u * (unsigned)round + (unsigned)i + 1;
			CHECK(got == want, "round %d file %d: its BO holds 0x%x, want 0x%x",
			      round, i, got, want);
		}
	}
	for (int i = 0; i < FILES; i++)
		close(fds[i]);
	return QP_PASS;
}

int test_pf_jm_ctx(void)
{
	int fd = pf_open(), minor;
	pf_version(fd, &minor);
	if (minor < 5)
		return qp_skip("panfrost 1.%d has no JM contexts (1.5+)", minor);
	uint64_t prios;
	CHECK_OK(pf_param(fd, DRM_PANFROST_PARAM_ALLOWED_JM_CTX_PRIORITIES, &prios));
	CHECK((prios & 3) == 3, "allowed priorities 0x%llx", (unsigned long long)prios);
	struct drm_panfrost_jm_ctx_create c = { .priority = PANFROST_JM_CTX_PRIORITY_LOW };
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANFROST_JM_CTX_CREATE, &c));
	CHECK(c.handle != 0, "context handle 0 is the default context");
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 16 << 10, 0, &bo));
	uint64_t jc = pf_job(&bo, 0, PF_JOB_WRITE_VALUE, 1, 0, bo.va + 0x1000, PF_WV_IMM32, 42);
	uint32_t sync;
	CHECK_OK(qp_syncobj_create(fd, &sync, false));
	CHECK_OK(pf_submit_ex(fd, jc, &bo.handle, 1, NULL, 0, sync, 0, c.handle));
	int st;
	CHECK_OK(pf_wait(fd, sync, 5000, &st));
	CHECK(st == 1 && ((volatile uint32_t *)bo.map)[0x400] == 42, "status %d", st);
	CHECK_ERR(pf_submit_ex(fd, jc, &bo.handle, 1, NULL, 0, sync, 0, c.handle + 100), EINVAL);
	struct drm_panfrost_jm_ctx_destroy d = { .handle = c.handle };
	CHECK_OK(qp_ioctl(fd, DRM_IOCTL_PANFROST_JM_CTX_DESTROY, &d));
	d.handle = 0;
	CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANFROST_JM_CTX_DESTROY, &d), EINVAL);
	close(fd);
	return QP_PASS;
}

static int pf_runtime_status(char *buf, size_t len)
{
	char dev[PATH_MAX], path[PATH_MAX + 32];
	int r = pf_sysfs(dev, sizeof(dev));
	if (r)
		return r;
	snprintf(path, sizeof(path), "%s/power/runtime_status", dev);
	r = qp_read_file(path, buf, len);
	if (!r)
		buf[strcspn(buf, "\n")] = '\0';
	return r;
}

int test_pf_runtime_pm_cycles(void)
{
	int fd = pf_open();
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 16 << 10, 0, &bo));
	for (unsigned i = 0; i < 5; i++) {
		char st[32] = "";
		double t0 = qp_now();
		/* autosuspend after 50 ms idle: poll up to 3 s */
		while (qp_now() - t0 < 3.0) {
			CHECK_OK(pf_runtime_status(st, sizeof(st)));
			if (!strcmp(st, "suspended"))
				break;
			qp_sleep_ms(20);
		}
		CHECK(!strcmp(st, "suspended"), "cycle %u: runtime status %s after 3 s", i, st);
		/* the submit resumes the GPU: soft reset, power-up, MMU reset, job IRQs */
		uint64_t jc = pf_job(&bo, i * PF_JOB_SIZE, PF_JOB_WRITE_VALUE, 1, 0,
				     bo.va + 0x2000 + 4 * i, PF_WV_IMM32, 0x100 + i);
		uint32_t sync;
		int fs;
		CHECK_OK(pf_submit(fd, jc, &bo, &sync));
		CHECK_OK(pf_wait(fd, sync, 5000, &fs));
		CHECK(fs == 1 && ((volatile uint32_t *)((char *)bo.map + 0x2000))[i] == 0x100 + i,
		      "cycle %u: job after resume, status %d", i, fs);
	}
	close(fd);
	return QP_PASS;
}

/* IGT's job loop (pan-reset): two Write Value jobs whose next pointers form a cycle never
 * end; the scheduler's 500 ms timeout soft-stops the slot and resets the GPU, the fence gets
 * an error, and the GPU runs jobs again afterwards */
int test_pf_job_loop_reset(void)
{
	int fd = pf_open();
	int kfd = qp_kmsg_open(true);
	struct qp_bo bo;
	CHECK_OK(pf_bo(fd, 16 << 10, 0, &bo));
	uint64_t a = bo.va, b = bo.va + PF_JOB_SIZE;
	/* each job zeroes the other's exception status, so re-running it is valid */
	pf_job(&bo, 0, PF_JOB_WRITE_VALUE, 1, b, b, PF_WV_ZERO, 0);
	pf_job(&bo, PF_JOB_SIZE, PF_JOB_WRITE_VALUE, 2, a, a, PF_WV_ZERO, 0);
	uint32_t sync;
	CHECK_OK(pf_submit(fd, a, &bo, &sync));
	int st;
	double t0 = qp_now();
	CHECK_OK(pf_wait(fd, sync, 10000, &st));
	qp_diag("the job loop ended after %.2f s with fence status %d", qp_now() - t0, st);
	CHECK(st < 0, "an endless chain completed (status %d)", st);
	static char log[1 << 16];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	CHECK(qp_kmsg_count(log, "timeout") >= 1, "no scheduler timeout in the kernel log");
	uint64_t jc = pf_job(&bo, 2 * PF_JOB_SIZE, PF_JOB_WRITE_VALUE, 1, 0, bo.va + 0x2000,
			     PF_WV_IMM32, 0x77);
	CHECK_OK(pf_submit(fd, jc, &bo, &sync));
	CHECK_OK(pf_wait(fd, sync, 5000, &st));
	CHECK(st == 1 && *(volatile uint32_t *)((char *)bo.map + 0x2000) == 0x77,
	      "the job after the reset: status %d", st);
	close(fd);
	return QP_PASS;
}

/* the kernel log: panfrost lines with an error or a warning only from the faults and the
 * reset the tests above caused, and no WARN/BUG at all */
int test_pf_kmsg_clean(void)
{
	static char log[1 << 20];
	int fd = qp_kmsg_open(false);
	CHECK(fd >= 0, "/dev/kmsg: %s", strerror(errno));
	qp_kmsg_drain(fd, log, sizeof(log));
	close(fd);
	static const char *const expected[] = {
		"no regulator (mali) found", "Unhandled Page fault", "js fault",
		"gpu sched timeout", "Reason:", "raw fault status", "decoded fault status",
		"exception type", "access type", "source id", "job timeout",
	};
	int bad = 0;
	for (char *line = log, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		if (strstr(line, "WARNING:") || strstr(line, "BUG:") || strstr(line, "Oops")) {
			qp_diag("kernel warning: %s", line);
			bad++;
			continue;
		}
		if (strncmp(line, "panfrost ", 9))
			continue;
		if (!strstr(line, "rror") && !strstr(line, "fault") && !strstr(line, "imeout") &&
		    !strstr(line, "ailed"))
			continue;
		bool ok = false;
		for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
			ok = ok || strstr(line, expected[i]);
		if (!ok) {
			qp_diag("unexpected: %s", line);
			bad++;
		}
	}
	CHECK(bad == 0, "%d unexpected kernel log lines", bad);
	return QP_PASS;
}

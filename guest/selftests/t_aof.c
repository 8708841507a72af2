/* Alloc-on-fault BOs (the panthor RFC as ported in images/kernel/patches, docs/alloc-on-fault.md):
 * a BO created with the flag gets pages only when the GPU first touches them; the MMU fault
 * handler allocates the granule, maps it and restarts the stalled access. The tests skip, with
 * the reason, on a panthor without the uAPI (Debian's kernels; `make run KERNEL=7.2-aof` has
 * it). Values are checked by copying them back with the GPU into a CPU-mapped BO: an
 * alloc-on-fault BO is never CPU-mapped. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "qp.h"

/* DRM_PANTHOR_BO_ALLOC_ON_FAULT of the port (bit 1 is WB_MMAP); the granularity goes in the
 * last u32 of drm_panthor_bo_create (Debian's header calls it pad) */
#define AOF_FLAG (1u << 2)
#define AOF_VA 0x4000000ull
#define AOF_MIN_MINOR 9

static int aof_bo(int fd, uint64_t size, uint32_t granule, struct qp_bo *bo)
{
	struct qp_bo_create_abi a = { .size = size, .flags = DRM_PANTHOR_BO_NO_MMAP | AOF_FLAG,
				      .last = granule };
	return qp_bo_create_raw(fd, &a, bo);
}

/* the reason to skip when this panthor has no alloc-on-fault, else NULL */
static const char *aof_missing(int fd)
{
	int maj = 0, min = 0, pat = 0;
	if (qp_driver_version(fd, &maj, &min, &pat) || min < AOF_MIN_MINOR)
		return "this panthor has no alloc-on-fault BOs (uAPI 1.9 of the port; "
		       "boot --kernel 7.2-aof)";
	struct qp_bo probe;
	int r = aof_bo(fd, 65536, 65536, &probe);
	if (r)
		return "BO_CREATE refuses DRM_PANTHOR_BO_ALLOC_ON_FAULT";
	qp_bo_close(fd, probe.handle);
	return NULL;
}

/* drm-resident-memory of this process's file (bytes), -1 if fdinfo has none */
static long long resident(int fd)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (qp_read_file(path, buf, sizeof(buf)))
		return -1;
	const char *p = strstr(buf, "drm-resident-memory:");
	if (!p)
		return -1;
	char *end;
	long long v = strtoll(p + strlen("drm-resident-memory:"), &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	if (!strncmp(end, "KiB", 3))
		v <<= 10;
	else if (!strncmp(end, "MiB", 3))
		v <<= 20;
	return v;
}

/* open the device and, when this panthor has alloc-on-fault BOs, a context plus one of size
 * bytes bound at AOF_VA (NOEXEC); the context's data BO (16 KiB) receives the GPU's copies.
 * *why: NULL, or the reason to skip (the device is closed again) */
static int aof_begin(struct qp_ctx *c, uint64_t size, uint32_t granule, struct qp_bo *aof,
		     const char **why)
{
	int fd = qp_open();
	*why = aof_missing(fd);
	if (*why) {
		close(fd);
		return 0;
	}
	int r = qp_ctx_init(c, fd, 65536, 16384);
	if (!r)
		r = aof_bo(fd, size, granule, aof);
	if (!r)
		r = qp_vm_map(fd, c->vm, aof, AOF_VA, DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC);
	if (!r)
		aof->va = AOF_VA;
	return r;
}

/* store v at va, then copy it back with the GPU to the data BO at dst */
static void cs_store_and_copy(struct qp_cs *cs, uint64_t va, uint32_t v, uint64_t dst)
{
	cs_store32(cs, va, v);
	cs_emit(cs, CS_MOV48(0, va));
	cs_emit(cs, CS_LOAD_MULTIPLE(3, 0, 0x1, 0));
	cs_emit(cs, CS_WAIT(CS_WAIT_ALL));
	cs_emit(cs, CS_MOV48(0, dst));
	cs_emit(cs, CS_STORE_MULTIPLE(3, 0, 0x1, 0));
	cs_emit(cs, CS_WAIT(CS_WAIT_ALL));
}

/* one job storing into `count` granules (index * stride), each value copied back */
static int aof_store_granules(struct qp_ctx *c, uint32_t granule, const unsigned *idx,
			      unsigned count)
{
	struct qp_cs cs = { c->cmd.map, 0 };
	for (unsigned i = 0; i < count; i++)
		cs_store_and_copy(&cs, AOF_VA + (uint64_t)idx[i] * granule + 0x40, 0xa0f00000u + idx[i],
				  c->data.va + 4 * i);
	cs_flush(&cs);
	int r = qp_ctx_run(c, 0, cs_bytes(&cs), 30000);
	if (r)
		return r;
	int st = 0;
	qp_syncobj_status(c->fd, c->syncobj, &st);
	if (st != 1) {
		qp_diag("the job's fence status %d", st);
		return -EIO;
	}
	volatile uint32_t *d = c->data.map;
	for (unsigned i = 0; i < count; i++) {
		if (d[i] != 0xa0f00000u + idx[i]) {
			qp_diag("granule %u: read back 0x%x, want 0x%x", idx[i], d[i],
				0xa0f00000u + idx[i]);
			return -EIO;
		}
	}
	return 0;
}

/* touch idx[0..count) (granule indices) in one job: every value reads back and the file's
 * resident memory grows by exactly `growth` bytes */
static int aof_touch(struct qp_ctx *c, uint32_t granule, const unsigned *idx, unsigned count,
		     long long growth)
{
	long long before = resident(c->fd);
	if (before < 0) {
		qp_diag("no drm-resident-memory in fdinfo");
		return -EIO;
	}
	int r = aof_store_granules(c, granule, idx, count);
	if (r)
		return r;
	long long after = resident(c->fd);
	qp_diag("%u granules of %u bytes touched: drm-resident-memory %lld -> %lld", count,
		granule, before, after);
	if (after - before != growth) {
		qp_diag("resident grew by %lld bytes, want %lld", after - before, growth);
		return -EIO;
	}
	return 0;
}

int test_alloc_on_fault_store(void)
{
	struct qp_ctx c;
	struct qp_bo aof;
	const char *why;
	CHECK_OK(aof_begin(&c, 1 << 20, 65536, &aof, &why));
	if (why)
		return qp_skip("%s", why);
	int fd = c.fd;
	int kfd = qp_kmsg_open(true);
	/* the invalid forms: no NO_MMAP, a granule below a page or not a power of two, bigger
	 * than the BO, a granule without the flag */
	struct qp_bo_create_abi bad[] = {
		{ .size = 65536, .flags = AOF_FLAG, .last = 65536 },
		{ .size = 65536, .flags = DRM_PANTHOR_BO_NO_MMAP | AOF_FLAG, .last = 2048 },
		{ .size = 65536, .flags = DRM_PANTHOR_BO_NO_MMAP | AOF_FLAG, .last = 3 << 12 },
		{ .size = 65536, .flags = DRM_PANTHOR_BO_NO_MMAP | AOF_FLAG, .last = 1 << 20 },
		{ .size = 65536, .flags = 0, .last = 65536 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANTHOR_BO_CREATE, &bad[i]), EINVAL);
	/* an alloc-on-fault BO has no CPU mapping: it is NO_MMAP (EPERM, as any NO_MMAP BO) */
	struct drm_panthor_bo_mmap_offset mo = { .handle = aof.handle };
	CHECK_ERR(qp_ioctl(fd, DRM_IOCTL_PANTHOR_BO_MMAP_OFFSET, &mo), EPERM);
	/* one store into each of the 16 granules: 16 faults, each handled, every value lands */
	unsigned idx[16];
	for (unsigned i = 0; i < 16; i++)
		idx[i] = i;
	CHECK_OK(aof_touch(&c, 65536, idx, 16, 16 * 65536));
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	CHECK(qp_kmsg_count(log, "Unhandled Page fault") == 0, "a fault was not handled");
	uint32_t state = 0, fq = 0;
	CHECK_OK(qp_group_state(fd, c.group, &state, &fq));
	CHECK(state == 0, "group state 0x%x after handled faults", state);
	CHECK_OK(qp_ctx_fini(&c));
	close(c.fd);
	return QP_PASS;
}

int test_alloc_on_fault_granule(void)
{
	struct qp_ctx c;
	struct qp_bo aof;
	const char *why;
	CHECK_OK(aof_begin(&c, 1 << 20, 65536, &aof, &why));
	if (why)
		return qp_skip("%s", why);
	/* binding populated nothing; 3 granules touched: 3 granules of pages */
	unsigned some[] = { 0, 5, 9 };
	CHECK_OK(aof_touch(&c, 65536, some, 3, 3 * 65536));
	/* the same granules again: no new pages; one more granule: one more */
	unsigned again[] = { 5, 0, 9, 15 };
	CHECK_OK(aof_touch(&c, 65536, again, 4, 65536));
	CHECK_OK(qp_ctx_fini(&c));
	close(c.fd);
	return QP_PASS;
}

int test_alloc_on_fault_many(void)
{
	struct qp_ctx c;
	struct qp_bo aof;
	const char *why;
	/* 4 KiB granules: 256 faults in one stream, each retried in place */
	CHECK_OK(aof_begin(&c, 1 << 20, 4096, &aof, &why));
	if (why)
		return qp_skip("%s", why);
	unsigned idx[256];
	for (unsigned i = 0; i < 256; i++)
		idx[i] = (i * 37) % 256; /* not in address order */
	CHECK_OK(aof_touch(&c, 4096, idx, 256, 256 * 4096));
	CHECK_OK(qp_ctx_fini(&c));
	close(c.fd);
	return QP_PASS;
}

int test_alloc_on_fault_out_of_bo(void)
{
	struct qp_ctx c;
	struct qp_bo aof;
	const char *why;
	CHECK_OK(aof_begin(&c, 65536, 65536, &aof, &why));
	if (why)
		return qp_skip("%s", why);
	int fd = c.fd;
	int kfd = qp_kmsg_open(true);
	/* inside the BO: handled; one byte past its mapping: an ordinary fault, the group dies */
	const uint64_t past = AOF_VA + 65536;
	struct qp_cs cs = { c.cmd.map, 0 };
	cs_store_and_copy(&cs, AOF_VA + 0x100, 0x12345678, c.data.va);
	cs_store32(&cs, past, 0x22222222);
	cs_store32(&cs, c.data.va + 4, 0x33333333);
	cs_flush(&cs);
	double t0 = qp_now();
	CHECK_OK(qp_submit(fd, c.group, c.cmd.va, cs_bytes(&cs), c.syncobj, 0));
	int r = qp_syncobj_wait(fd, &c.syncobj, 1, 20000, true);
	double dt = qp_now() - t0;
	int st = 0;
	uint32_t state = 0, fq = 0;
	qp_syncobj_status(fd, c.syncobj, &st);
	qp_group_state(fd, c.group, &state, &fq);
	qp_diag("faulting job: wait %d, fence %d, group state 0x%x fatal_queues 0x%x after %.2f s",
		r, st, state, fq, dt);
	CHECK(r == 0, "the faulting job's fence never signalled: %s", strerror(-r));
	/* as job_mmu_fault */
	r = qp_check_fault_ended_job(st, state, fq, dt);
	if (r)
		return r;
	volatile uint32_t *d = c.data.map;
	CHECK(d[0] == 0x12345678, "the store inside the BO: 0x%x", d[0]);
	CHECK(d[1] == 0, "a store after the fault landed: 0x%x", d[1]);
	static char log[65536];
	qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	qp_kmsg_show(log);
	bool found = false;
	for (char *l = strtok(log, "\n"); l; l = strtok(NULL, "\n")) {
		const char *p = strstr(l, "Unhandled Page fault in AS");
		if (p && (p = strstr(p, " at VA ")))
			found = found || strtoull(p + 7, NULL, 16) == past;
	}
	CHECK(found, "no 'Unhandled Page fault ... at VA 0x%llx' in the kernel log",
	      (unsigned long long)past);
	close(fd);
	return QP_PASS;
}

/* qemu-panthor in-guest selftests: helpers (environment, sysfs, kmsg, raw panthor uAPI). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/sync_file.h>
#include <linux/udmabuf.h>

#include "qp.h"

/* -- environment ------------------------------------------------------------------ */
/* the value text of KEY in /etc/qp/gpu.env (up to the newline), or NULL */
static const char *env_value(const char *key)
{
	static char env[8192];
	static bool loaded;
	if (!loaded) {
		if (qp_read_file("/etc/qp/gpu.env", env, sizeof(env)))
			env[0] = '\0';
		loaded = true;
	}
	size_t klen = strlen(key);
	for (const char *p = env; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, key, klen) && p[klen] == '=')
			return p + klen + 1;
	return NULL;
}

bool qp_env(const char *key, uint64_t *val)
{
	const char *v = env_value(key);
	if (!v)
		return false;
	char *end;
	*val = strtoull(v, &end, 0);
	return end != v;
}

bool qp_env_str(const char *key, char *buf, size_t len)
{
	const char *v = env_value(key);
	if (!v || !len)
		return false;
	size_t n = strcspn(v, "\n");
	if (n >= len)
		n = len - 1;
	memcpy(buf, v, n);
	buf[n] = '\0';
	return true;
}

uint64_t qp_env_or(const char *key, uint64_t dflt)
{
	uint64_t v;
	return qp_env(key, &v) ? v : dflt;
}

double qp_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void qp_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

int qp_read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t got = 0;
	while (got + 1 < len) {
		ssize_t n = read(fd, buf + got, len - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += n;
	}
	buf[got] = '\0';
	close(fd);
	return 0;
}

int qp_write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = write(fd, s, strlen(s));
	int err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}

int qp_rm_module(const char *name)
{
	/* like rmmod: O_NONBLOCK fails with EWOULDBLOCK instead of waiting while in use */
	for (int i = 0; i < 200; i++) {
		if (syscall(SYS_delete_module, name, O_NONBLOCK) == 0)
			return 0;
		if (errno != EWOULDBLOCK && errno != EAGAIN && errno != EBUSY)
			return -errno;
		usleep(10000); /* bounded: a runtime-PM or close path still holds it */
	}
	return -EBUSY;
}

int qp_ins_module(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = syscall(SYS_finit_module, fd, "", 0) ? -errno : 0;
	close(fd);
	return r;
}

static bool render_node_present(void)
{
	struct stat st;
	return stat("/dev/dri/renderD128", &st) == 0 && S_ISCHR(st.st_mode);
}

int qp_wait_render_node(bool present, int timeout_ms)
{
	for (int ms = 0; ms <= timeout_ms; ms += 5) {
		if (render_node_present() == present)
			return ms;
		usleep(5000);
	}
	return -1;
}

int qp_check_fault_ended_job(int st, uint32_t state, uint32_t fq, double dt)
{
	/* an unhandled fault on the VM: the tick flags the faulty queue (CS_FATAL) or, with
	 * none reported, every queue fatal (panthor_sched.c ~2138-2143); the group ends and
	 * its in-flight jobs get -EINVAL for a fatal queue (~2176-2177), not -ETIMEDOUT, well
	 * before the 5 s job timeout (JOB_TIMEOUT_MS, ~93) */
	CHECK(st == -EINVAL, "fence status %d, want -EINVAL (a fatal queue)", st);
	CHECK(state & DRM_PANTHOR_GROUP_STATE_FATAL_FAULT, "group state 0x%x lacks FATAL_FAULT",
	      state);
	CHECK(!(state & DRM_PANTHOR_GROUP_STATE_TIMEDOUT), "group state 0x%x: TIMEDOUT", state);
	CHECK(fq & 1, "fatal_queues 0x%x lacks queue 0", fq);
	CHECK(dt < 2.5, "the fault ended the job after %.2f s: the 5 s job timeout's path?", dt);
	return QP_PASS;
}

bool qp_module_loaded(const char *name)
{
	static char mods[16384];
	if (qp_read_file("/proc/modules", mods, sizeof(mods)))
		return false;
	size_t n = strlen(name);
	for (const char *p = mods; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (!strncmp(p, name, n) && p[n] == ' ')
			return true;
	return false;
}

int qp_panthor_sysfs(char *buf, size_t len)
{
	return qp_driver_sysfs("panthor", buf, len);
}

int qp_driver_sysfs(const char *driver, char *buf, size_t len)
{
	char path[96];
	snprintf(path, sizeof(path), "/sys/bus/platform/drivers/%s", driver);
	DIR *d = opendir(path);
	if (!d)
		return -errno;
	struct dirent *e;
	int ret = -ENOENT;
	while ((e = readdir(d))) {
		if (!strncmp(e->d_name, "qemu-panthor", 12)) {
			snprintf(buf, len, "/sys/bus/platform/devices/%s", e->d_name);
			ret = 0;
			break;
		}
	}
	closedir(d);
	return ret;
}

static int pm_control_path(char *buf, size_t len)
{
	char dev[200];
	int r = qp_panthor_sysfs(dev, sizeof(dev));
	if (!r)
		snprintf(buf, len, "%s/power/control", dev);
	return r;
}

int qp_pm_control_get(char *buf, size_t len)
{
	char path[300];
	int r = pm_control_path(path, sizeof(path));
	if (!r)
		r = qp_read_file(path, buf, len);
	if (!r)
		buf[strcspn(buf, "\n")] = '\0';
	return r;
}

int qp_pm_control_set(const char *value)
{
	char path[300];
	int r = pm_control_path(path, sizeof(path));
	return r ? r : qp_write_file(path, value);
}

uint64_t qp_virt_to_phys(const void *p)
{
	long pg = sysconf(_SC_PAGESIZE);
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	uint64_t ent = 0;
	off_t off = (off_t)((uintptr_t)p / pg) * 8;
	ssize_t n = pread(fd, &ent, 8, off);
	close(fd);
	if (n != 8 || !(ent & (1ull << 63))) {
		qp_diag("pagemap entry for %p: %zd bytes, 0x%llx", p, n, (unsigned long long)ent);
		return 0;
	}
	uint64_t pfn = ent & ((1ull << 55) - 1);
	if (!pfn)
		return 0;
	return pfn * pg + ((uintptr_t)p % pg);
}

int qp_kmsg_open(bool from_end)
{
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0 && from_end)
		lseek(fd, 0, SEEK_END);
	return fd;
}

size_t qp_kmsg_drain(int fd, char *buf, size_t len)
{
	char rec[8192];
	size_t used = 0;
	buf[0] = '\0';
	for (;;) {
		ssize_t n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0 && errno == EPIPE) /* overwritten records: keep reading */
			continue;
		if (n <= 0)
			break;
		rec[n] = '\0';
		char *msg = strchr(rec, ';');
		if (!msg)
			continue;
		msg++;
		char *nl = strchr(msg, '\n');
		if (nl)
			*nl = '\0';
		size_t m = strlen(msg);
		if (used + m + 2 > len)
			break;
		memcpy(buf + used, msg, m);
		used += m;
		buf[used++] = '\n';
		buf[used] = '\0';
	}
	return used;
}

bool qp_kmsg_wait(int fd, char *buf, size_t len, const char *needle, unsigned timeout_ms)
{
	size_t used = 0;
	double end = qp_now() + timeout_ms / 1000.0;
	buf[0] = '\0';
	for (;;) {
		size_t n = qp_kmsg_drain(fd, buf + used, len - used);
		used += n;
		if (strstr(buf, needle))
			return true;
		if (qp_now() >= end || used + 1 >= len)
			return false;
		if (!n)
			qp_sleep_ms(10);
	}
}

/* -- DRM ------------------------------------------------------------------------- */
int qp_ioctl(int fd, unsigned long req, void *arg)
{
	int r;
	do {
		r = ioctl(fd, req, arg);
	} while (r == -1 && (errno == EINTR || errno == EAGAIN));
	return r == -1 ? -errno : 0;
}

int qp_open(void)
{
	int fd = open("/dev/dri/renderD128", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		qp_diag("open /dev/dri/renderD128: %s", strerror(errno));
		fflush(stdout);
		_exit(QP_FAIL);
	}
	return fd;
}

int qp_query(int fd, uint32_t type, void *out, uint32_t size)
{
	struct drm_panthor_dev_query q = { .type = type, .size = size,
					   .pointer = (uint64_t)(uintptr_t)out };
	return qp_ioctl(fd, DRM_IOCTL_PANTHOR_DEV_QUERY, &q);
}

int qp_driver_version(int fd, int *major, int *minor, int *patch)
{
	char name[64] = "", date[64] = "", desc[128] = "";
	struct drm_version v = { .name_len = sizeof(name) - 1, .name = name,
				 .date_len = sizeof(date) - 1, .date = date,
				 .desc_len = sizeof(desc) - 1, .desc = desc };
	int r = qp_ioctl(fd, DRM_IOCTL_VERSION, &v);
	if (r)
		return r;
	*major = v.version_major;
	*minor = v.version_minor;
	*patch = v.version_patchlevel;
	return strcmp(name, "panthor") ? -ENODEV : 0;
}

const struct drm_panthor_gpu_info *qp_gpu(int fd)
{
	static struct drm_panthor_gpu_info gi;
	static bool have;
	if (!have && !qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, &gi, sizeof(gi)))
		have = true;
	return &gi;
}

const struct drm_panthor_csif_info *qp_csif(int fd)
{
	static struct drm_panthor_csif_info ci;
	static bool have;
	if (!have && !qp_query(fd, DRM_PANTHOR_DEV_QUERY_CSIF_INFO, &ci, sizeof(ci)))
		have = true;
	return &ci;
}

int qp_vm_create(int fd, uint32_t *vm_id)
{
	struct drm_panthor_vm_create a = { 0 };
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_VM_CREATE, &a);
	if (!r)
		*vm_id = a.id;
	return r;
}

int qp_vm_destroy(int fd, uint32_t vm_id)
{
	struct drm_panthor_vm_destroy a = { .id = vm_id };
	return qp_ioctl(fd, DRM_IOCTL_PANTHOR_VM_DESTROY, &a);
}

int qp_vm_state(int fd, uint32_t vm_id, uint32_t *state)
{
	struct drm_panthor_vm_get_state a = { .vm_id = vm_id, .state = 0xdead };
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_VM_GET_STATE, &a);
	if (!r)
		*state = a.state;
	return r;
}

int qp_bo_create_raw(int fd, struct qp_bo_create_abi *a, struct qp_bo *bo)
{
	memset(bo, 0, sizeof(*bo));
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_BO_CREATE, a);
	if (!r) {
		bo->handle = a->handle;
		bo->size = a->size;
	}
	return r;
}

int qp_bo_create(int fd, uint64_t size, uint32_t flags, uint32_t excl_vm, struct qp_bo *bo)
{
	struct qp_bo_create_abi a = { .size = size, .flags = flags, .exclusive_vm_id = excl_vm };
	return qp_bo_create_raw(fd, &a, bo);
}

int qp_bo_mmap(int fd, struct qp_bo *bo)
{
	struct drm_panthor_bo_mmap_offset a = { .handle = bo->handle };
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_BO_MMAP_OFFSET, &a);
	if (r)
		return r;
	void *p = mmap(NULL, bo->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, a.offset);
	if (p == MAP_FAILED)
		return -errno;
	bo->map = p;
	return 0;
}

int qp_bo_close(int fd, uint32_t handle)
{
	struct drm_gem_close a = { .handle = handle };
	return qp_ioctl(fd, DRM_IOCTL_GEM_CLOSE, &a);
}

int qp_vm_bind_op(int fd, uint32_t vm_id, uint32_t bind_flags, struct drm_panthor_vm_bind_op *op)
{
	struct drm_panthor_vm_bind a = {
		.vm_id = vm_id, .flags = bind_flags,
		.ops = { .stride = sizeof(*op), .count = 1, .array = (uint64_t)(uintptr_t)op },
	};
	return qp_ioctl(fd, DRM_IOCTL_PANTHOR_VM_BIND, &a);
}

int qp_vm_map(int fd, uint32_t vm_id, struct qp_bo *bo, uint64_t va, uint32_t flags)
{
	struct drm_panthor_vm_bind_op op = {
		.flags = DRM_PANTHOR_VM_BIND_OP_TYPE_MAP | flags, .bo_handle = bo->handle,
		.bo_offset = 0, .va = va, .size = bo->size,
	};
	int r = qp_vm_bind_op(fd, vm_id, 0, &op);
	if (!r)
		bo->va = va;
	return r;
}

int qp_vm_unmap(int fd, uint32_t vm_id, uint64_t va, uint64_t size)
{
	struct drm_panthor_vm_bind_op op = {
		.flags = DRM_PANTHOR_VM_BIND_OP_TYPE_UNMAP, .va = va, .size = size,
	};
	return qp_vm_bind_op(fd, vm_id, 0, &op);
}

int qp_bo_new_mapped(int fd, uint32_t vm_id, uint64_t size, uint64_t va, uint32_t map_flags,
		     struct qp_bo *bo)
{
	int r = qp_bo_create(fd, size, 0, 0, bo);
	if (!r)
		r = qp_bo_mmap(fd, bo);
	if (!r)
		memset(bo->map, 0, bo->size);
	if (!r)
		r = qp_vm_map(fd, vm_id, bo, va, map_flags);
	return r;
}

int qp_group_create_ex(int fd, uint32_t vm_id, uint8_t priority, uint32_t ringbuf_size,
		       uint32_t nqueues, uint32_t *handle)
{
	const struct drm_panthor_gpu_info *gi = qp_gpu(fd);
	struct drm_panthor_queue_create q[8];
	memset(q, 0, sizeof(q));
	if (nqueues > 8)
		return -E2BIG;
	for (uint32_t i = 0; i < nqueues; i++)
		q[i].ringbuf_size = ringbuf_size;
	struct drm_panthor_group_create a = {
		.queues = { .stride = sizeof(q[0]), .count = nqueues, .array = (uint64_t)(uintptr_t)q },
		.max_compute_cores = 1, .max_fragment_cores = 1, .max_tiler_cores = 1,
		.priority = priority, .compute_core_mask = gi->shader_present,
		.fragment_core_mask = gi->shader_present, .tiler_core_mask = gi->tiler_present,
		.vm_id = vm_id,
	};
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_GROUP_CREATE, &a);
	if (!r)
		*handle = a.group_handle;
	return r;
}

int qp_group_create(int fd, uint32_t vm_id, uint32_t *handle)
{
	return qp_group_create_ex(fd, vm_id, PANTHOR_GROUP_PRIORITY_MEDIUM, 4096, 1, handle);
}

int qp_group_destroy(int fd, uint32_t handle)
{
	struct drm_panthor_group_destroy a = { .group_handle = handle };
	return qp_ioctl(fd, DRM_IOCTL_PANTHOR_GROUP_DESTROY, &a);
}

int qp_group_state(int fd, uint32_t handle, uint32_t *state, uint32_t *fatal_queues)
{
	struct drm_panthor_group_get_state a = { .group_handle = handle };
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_GROUP_GET_STATE, &a);
	if (!r) {
		*state = a.state;
		if (fatal_queues)
			*fatal_queues = a.fatal_queues;
	}
	return r;
}

int qp_submit(int fd, uint32_t group, uint64_t stream_va, uint32_t stream_size,
	      uint32_t signal_syncobj, uint32_t wait_syncobj)
{
	struct drm_panthor_sync_op syncs[2];
	uint32_t ns = 0;
	if (wait_syncobj)
		syncs[ns++] = (struct drm_panthor_sync_op){
			.flags = DRM_PANTHOR_SYNC_OP_WAIT | DRM_PANTHOR_SYNC_OP_HANDLE_TYPE_SYNCOBJ,
			.handle = wait_syncobj };
	if (signal_syncobj)
		syncs[ns++] = (struct drm_panthor_sync_op){
			.flags = DRM_PANTHOR_SYNC_OP_SIGNAL | DRM_PANTHOR_SYNC_OP_HANDLE_TYPE_SYNCOBJ,
			.handle = signal_syncobj };
	struct drm_panthor_queue_submit qs = {
		.queue_index = 0, .stream_size = stream_size, .stream_addr = stream_va,
		.latest_flush = 0,
		.syncs = { .stride = sizeof(syncs[0]), .count = ns,
			   .array = (uint64_t)(uintptr_t)syncs },
	};
	struct drm_panthor_group_submit a = {
		.group_handle = group,
		.queue_submits = { .stride = sizeof(qs), .count = 1, .array = (uint64_t)(uintptr_t)&qs },
	};
	static uint32_t n;
	uint32_t seq = ++n & 0x0fffffffu;
	qp_mark(QP_MARK_SUBMIT | seq);
	int r = qp_ioctl(fd, DRM_IOCTL_PANTHOR_GROUP_SUBMIT, &a);
	qp_mark(QP_MARK_SUBMITTED | seq);
	return r;
}

int qp_syncobj_create(int fd, uint32_t *handle, bool signaled)
{
	struct drm_syncobj_create a = { .flags = signaled ? DRM_SYNCOBJ_CREATE_SIGNALED : 0 };
	int r = qp_ioctl(fd, DRM_IOCTL_SYNCOBJ_CREATE, &a);
	if (!r)
		*handle = a.handle;
	return r;
}

int qp_syncobj_destroy(int fd, uint32_t handle)
{
	struct drm_syncobj_destroy a = { .handle = handle };
	return qp_ioctl(fd, DRM_IOCTL_SYNCOBJ_DESTROY, &a);
}

int qp_syncobj_wait(int fd, const uint32_t *handles, uint32_t n, unsigned timeout_ms, bool all)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t deadline = (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec +
			   (int64_t)timeout_ms * 1000000ll;
	struct drm_syncobj_wait a = {
		.handles = (uint64_t)(uintptr_t)handles, .timeout_nsec = deadline,
		.count_handles = n,
		.flags = (all ? DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL : 0) |
			 DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
	};
	int r;
	do {
		r = ioctl(fd, DRM_IOCTL_SYNCOBJ_WAIT, &a);
	} while (r == -1 && errno == EINTR);
	static uint32_t waits;
	if (r == 0)
		qp_mark(QP_MARK_WAITED | (++waits & 0x0fffffffu));
	return r == -1 ? -errno : 0;
}

int qp_syncobj_status(int fd, uint32_t handle, int *status)
{
	struct drm_syncobj_handle a = { .handle = handle,
					.flags = DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
					.fd = -1 };
	int r = qp_ioctl(fd, DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD, &a);
	if (r)
		return r;
	struct sync_file_info info;
	memset(&info, 0, sizeof(info));
	r = qp_ioctl(a.fd, SYNC_IOC_FILE_INFO, &info);
	close(a.fd);
	if (!r)
		*status = info.status;
	return r;
}

int qp_udmabuf_bo(int fd, uint64_t size, struct qp_bo *bo)
{
	memset(bo, 0, sizeof(*bo));
	int ufd = open("/dev/udmabuf", O_RDWR | O_CLOEXEC);
	if (ufd < 0)
		return -errno;
	int r = 0;
	int mfd = memfd_create("qp-udmabuf", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, size) || fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK)) {
		r = -errno;
		goto out;
	}
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED) {
		r = -errno;
		goto out;
	}
	memset(p, 0, size); /* populate the pages */
	struct udmabuf_create uc = { .memfd = mfd, .flags = UDMABUF_FLAGS_CLOEXEC, .offset = 0,
				     .size = size };
	int dfd = ioctl(ufd, UDMABUF_CREATE, &uc);
	if (dfd < 0) {
		r = -errno;
		munmap(p, size);
		goto out;
	}
	struct drm_prime_handle ph = { .fd = dfd };
	r = qp_ioctl(fd, DRM_IOCTL_PRIME_FD_TO_HANDLE, &ph);
	close(dfd);
	if (r) {
		munmap(p, size);
		goto out;
	}
	bo->handle = ph.handle;
	bo->size = size;
	bo->map = p;
out:
	if (mfd >= 0)
		close(mfd);
	close(ufd);
	return r;
}

/* -- CS helpers ------------------------------------------------------------------ */
void cs_store32(struct qp_cs *cs, uint64_t va, uint32_t v)
{
	cs_emit(cs, CS_MOV48(0, va));
	cs_emit(cs, CS_MOV32(2, v));
	cs_emit(cs, CS_STORE_MULTIPLE(2, 0, 0x1, 0));
	cs_emit(cs, CS_WAIT(CS_WAIT_ALL));
}

void cs_inc32(struct qp_cs *cs, uint64_t va)
{
	cs_emit(cs, CS_MOV48(0, va));
	cs_emit(cs, CS_LOAD_MULTIPLE(2, 0, 0x1, 0));
	cs_emit(cs, CS_WAIT(CS_WAIT_ALL));
	cs_emit(cs, CS_ADD_IMM32(2, 2, 1));
	cs_emit(cs, CS_STORE_MULTIPLE(2, 0, 0x1, 0));
	cs_emit(cs, CS_WAIT(CS_WAIT_ALL));
}

void cs_flush(struct qp_cs *cs)
{
	cs_emit(cs, CS_MOV32(4, 0));
	cs_emit(cs, CS_FLUSH_CACHE2(4));
	cs_emit(cs, CS_WAIT(CS_WAIT_ALL));
}

int qp_ctx_init(struct qp_ctx *c, int fd, uint64_t cmd_size, uint64_t data_size)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	int r = qp_vm_create(fd, &c->vm);
	if (!r)
		r = qp_bo_new_mapped(fd, c->vm, cmd_size, QP_CMD_VA, 0, &c->cmd);
	if (!r)
		r = qp_bo_new_mapped(fd, c->vm, data_size, QP_DATA_VA,
				     DRM_PANTHOR_VM_BIND_OP_MAP_NOEXEC, &c->data);
	if (!r)
		r = qp_group_create(fd, c->vm, &c->group);
	if (!r)
		r = qp_syncobj_create(fd, &c->syncobj, false);
	if (r)
		qp_diag("qp_ctx_init: %s", strerror(-r));
	return r;
}

int qp_ctx_run(struct qp_ctx *c, uint32_t off, uint32_t size, unsigned timeout_ms)
{
	int r = qp_submit(c->fd, c->group, c->cmd.va + off, size, c->syncobj, 0);
	if (r) {
		qp_diag("GROUP_SUBMIT: %s", strerror(-r));
		return r;
	}
	r = qp_syncobj_wait(c->fd, &c->syncobj, 1, timeout_ms, true);
	if (r)
		qp_diag("SYNCOBJ_WAIT: %s", strerror(-r));
	return r;
}

int qp_ctx_regroup_store(struct qp_ctx *c, uint32_t off, uint32_t value, unsigned timeout_ms)
{
	uint32_t g;
	int r = qp_group_create(c->fd, c->vm, &g);
	if (r) {
		qp_diag("GROUP_CREATE on the VM: %s", strerror(-r));
		return r;
	}
	c->group = g;
	struct qp_cs cs = { c->cmd.map, 0 };
	cs_store32(&cs, c->data.va + off, value);
	cs_flush(&cs);
	r = qp_ctx_run(c, 0, cs_bytes(&cs), timeout_ms);
	if (r)
		return r;
	uint32_t got = ((volatile uint32_t *)c->data.map)[off / 4];
	if (got != value) {
		qp_diag("the new group's store at +%u: 0x%x, want 0x%x", off, got, value);
		return -EIO;
	}
	return 0;
}

int qp_ctx_fini(struct qp_ctx *c)
{
	int r = qp_group_destroy(c->fd, c->group);
	if (!r)
		r = qp_syncobj_destroy(c->fd, c->syncobj);
	if (!r)
		r = qp_vm_unmap(c->fd, c->vm, c->cmd.va, c->cmd.size);
	if (!r)
		r = qp_vm_unmap(c->fd, c->vm, c->data.va, c->data.size);
	munmap(c->cmd.map, c->cmd.size);
	munmap(c->data.map, c->data.size);
	if (!r)
		r = qp_bo_close(c->fd, c->cmd.handle);
	if (!r)
		r = qp_bo_close(c->fd, c->data.handle);
	if (!r)
		r = qp_vm_destroy(c->fd, c->vm);
	if (r)
		qp_diag("qp_ctx_fini: %s", strerror(-r));
	return r;
}

volatile uint32_t *qp_tp_map(char *why, size_t len)
{
	static volatile uint32_t *port;
	if (port)
		return port;
	DIR *d = opendir("/sys/bus/pci/devices");
	if (!d) {
		snprintf(why, len, "no /sys/bus/pci/devices");
		return NULL;
	}
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
	if (!path[0]) {
		snprintf(why, len, "no 0x13b5 PCI function");
		return NULL;
	}
	int fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0) {
		snprintf(why, len, "open %s: %s", path, strerror(errno));
		return NULL;
	}
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		snprintf(why, len, "mmap %s: %s", path, strerror(errno));
		return NULL;
	}
	volatile uint32_t *t = m;
	if (t[(QP_TP_BASE + QP_TP_MAGIC) / 4] != QP_TP_MAGIC_VALUE) {
		snprintf(why, len, "no qemu-panthor test port in BAR2 (magic 0x%x)",
			 t[(QP_TP_BASE + QP_TP_MAGIC) / 4]);
		munmap(m, 4096);
		return NULL;
	}
	port = t;
	return port;
}

void qp_mark(uint32_t value)
{
	static int on = -1;
	if (on < 0) {
		const char *m = getenv("QP_MARK");
		char why[256];
		on = m && !strcmp(m, "1") && qp_tp_map(why, sizeof(why));
	}
	if (on)
		qp_tp_map(NULL, 0)[(QP_TP_BASE + QP_TP_MARK) / 4] = value;
}

int qp_kmsg_count(const char *buf, const char *needle)
{
	int n = 0;
	for (const char *p = buf; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

void qp_kmsg_show(const char *buf)
{
	char *copy = strdup(buf);
	for (char *l = strtok(copy, "\n"); l; l = strtok(NULL, "\n"))
		if (strstr(l, "panthor") || strstr(l, "WARN") || strstr(l, "BUG"))
			qp_diag("kmsg: %.200s", l);
	free(copy);
}

int qp_kernel_major(void)
{
	struct utsname u;
	return uname(&u) ? 0 : atoi(u.release);
}

/* qemu-panthor in-guest selftests: shared declarations.
 *
 * Every test is a function returning QP_PASS, QP_FAIL or QP_SKIP; it runs in a forked child
 * (crashes and hangs become failures of that test only) and talks to panthor through the raw
 * uAPI (<drm/panthor_drm.h>, no libdrm). Diagnostics go to stdout as "# ..." KTAP lines.
 */
#ifndef QP_H
#define QP_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <drm/drm.h>
#include <drm/panthor_drm.h>

enum qp_result { QP_PASS = 0, QP_FAIL = 1, QP_SKIP = 2 };

struct qp_test {
	const char *name;
	int (*fn)(void);
	int timeout_s; /* 0: default */
	bool manual;   /* only run when named (--only): a known open bug */
	bool slow;     /* waits on a driver or firmware timer: the "long" suite (--suite) */
};

/* the suites: panthor's (CSF GPUs) and panfrost's (Job Manager GPUs, pf.c); the runner
 * picks by the DRIVER the GPU model names in /etc/qp/gpu.env */
extern const struct qp_test qp_tests[];
extern const size_t qp_ntests;
extern const struct qp_test qp_pf_tests[];
extern const size_t qp_pf_ntests;

/* whether this run of the suite already ran the test of that name (passed, failed or
 * skipped): for tests that check what earlier tests left behind, e.g. in the kernel log */
bool qp_test_ran(const char *name);

/* -- reporting ------------------------------------------------------------------------ */
void qp_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int qp_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CHECK(cond, fmt, ...)                                                               \
	do {                                                                                \
		if (!(cond)) {                                                              \
			qp_diag("%s:%d: check failed: %s", __FILE__, __LINE__, #cond);      \
			qp_diag(fmt, ##__VA_ARGS__);                                        \
			return QP_FAIL;                                                     \
		}                                                                           \
	} while (0)

/* expr returns 0 or -errno */
#define CHECK_OK(expr)                                                                      \
	do {                                                                                \
		int _r = (expr);                                                            \
		if (_r) {                                                                   \
			qp_diag("%s:%d: %s failed: %d (%s)", __FILE__, __LINE__, #expr, _r, \
				strerror(-_r));                                             \
			return QP_FAIL;                                                     \
		}                                                                           \
	} while (0)

#define CHECK_ERR(expr, want)                                                               \
	do {                                                                                \
		int _r = (expr);                                                            \
		if (_r != -(want)) {                                                        \
			qp_diag("%s:%d: %s returned %d (%s), want -%s", __FILE__, __LINE__, \
				#expr, _r, _r ? strerror(-_r) : "success", #want);          \
			return QP_FAIL;                                                     \
		}                                                                           \
	} while (0)

/* -- environment -------------------------------------------------------------------- */
/* /etc/qp/gpu.env value for KEY (hex or decimal); false if absent */
bool qp_env(const char *key, uint64_t *val);
/* /etc/qp/gpu.env string value for KEY into buf; false if absent */
bool qp_env_str(const char *key, char *buf, size_t len);
uint64_t qp_env_or(const char *key, uint64_t dflt);
double qp_now(void);               /* CLOCK_MONOTONIC seconds */
void qp_sleep_ms(unsigned ms);     /* used only inside bounded polls */
int qp_read_file(const char *path, char *buf, size_t len); /* 0 or -errno; NUL-terminated */
int qp_write_file(const char *path, const char *s);        /* 0 or -errno */
bool qp_module_loaded(const char *name);
/* the fence status, group state, fatal queues and time of a job an unhandled GPU fault ended:
 * QP_PASS if panthor ended it as it does (-EINVAL, FATAL_FAULT, queue 0, under 2.5 s) */
int qp_check_fault_ended_job(int st, uint32_t state, uint32_t fq, double dt);
/* rmmod (0, or -EBUSY after ~2 s in use) / insmod of a module file; -errno on failure */
int qp_rm_module(const char *name);
int qp_ins_module(const char *path);
/* wait until /dev/dri/renderD128 is (not) there: ms waited, or -1 after timeout_ms */
int qp_wait_render_node(bool present, int timeout_ms);
int qp_kernel_major(void); /* the running kernel's major version (uname); 0 if unknown */
/* the panthor platform device directory in sysfs, e.g. /sys/bus/platform/devices/qemu-panthor.16 */
int qp_panthor_sysfs(char *buf, size_t len);
/* the same for another platform driver (e.g. panfrost) */
int qp_driver_sysfs(const char *driver, char *buf, size_t len);
/* the panthor device's runtime-PM control (power/control: "on" keeps it out of runtime
 * suspend, "auto" lets it suspend): read into buf without the newline, or write. The test
 * runner restores the value after every test, whatever the test did or how it ended. */
int qp_pm_control_get(char *buf, size_t len);
int qp_pm_control_set(const char *value);
uint64_t qp_virt_to_phys(const void *p); /* via /proc/self/pagemap; 0 if unknown */

/* kernel log: open /dev/kmsg positioned at its end (only new records are read) or at its
 * start; read all records available now into buf (one message per line, text only). */
int qp_kmsg_open(bool from_end);
size_t qp_kmsg_drain(int fd, char *buf, size_t len);
/* occurrences of needle in drained records; show the panthor/WARN/BUG lines as diagnostics */
int qp_kmsg_count(const char *buf, const char *needle);
void qp_kmsg_show(const char *buf);
/* drain the log into buf (as qp_kmsg_drain) until it holds `needle` or timeout_ms passed (or
 * buf is full): whether it does. For lines a driver's IRQ thread or work item prints later */
bool qp_kmsg_wait(int fd, char *buf, size_t len, const char *needle, unsigned timeout_ms);

/* -- the qemu-panthor test port (BAR2 0xF00, docs/test-port.md) ------------------------ */
#define QP_TP_BASE 0xF00
#define QP_TP_MAGIC 0x00
#define QP_TP_MAGIC_VALUE 0x50545051u /* "QPTP" */
#define QP_TP_MARK 0x2C
/* the port's registers (mapped once per process), or NULL with the reason in why */
volatile uint32_t *qp_tp_map(char *why, size_t len);
/* a timestamp mark on --timeline's Guest track (only when the init passed QP_MARK=1) */
void qp_mark(uint32_t value);
#define QP_MARK_SUBMIT 0x10000000u    /* | n: GROUP_SUBMIT n is entered */
#define QP_MARK_SUBMITTED 0x20000000u /* | n: ... and returned */
#define QP_MARK_WAITED 0x30000000u    /* | n: a SYNCOBJ_WAIT returned */

/* -- DRM / panthor ------------------------------------------------------------------ */
int qp_open(void);                          /* /dev/dri/renderD128, aborts the test on failure */
int qp_ioctl(int fd, unsigned long req, void *arg); /* 0 or -errno (EINTR/EAGAIN retried) */
int qp_query(int fd, uint32_t type, void *out, uint32_t size);
int qp_driver_version(int fd, int *major, int *minor, int *patch);

/* drm_panthor_bo_create as the ABI lays it out: its last u32 is `pad` (MBZ) in Debian's 7.2
 * header and `alloc_on_fault_granularity` with the alloc-on-fault port (t_aof.c), so tests
 * that set it do not depend on which header they are built against */
struct qp_bo_create_abi {
	uint64_t size;
	uint32_t flags, exclusive_vm_id, handle, last;
};
_Static_assert(sizeof(struct qp_bo_create_abi) == sizeof(struct drm_panthor_bo_create),
	       "drm_panthor_bo_create layout");

struct qp_bo {
	uint32_t handle;
	uint64_t size;
	uint64_t va;   /* where it is mapped in the test's VM (0: not mapped) */
	void *map;     /* CPU mapping (NULL: none) */
};

int qp_vm_create(int fd, uint32_t *vm_id);
int qp_vm_destroy(int fd, uint32_t vm_id);
int qp_vm_state(int fd, uint32_t vm_id, uint32_t *state);
int qp_bo_create(int fd, uint64_t size, uint32_t flags, uint32_t excl_vm, struct qp_bo *bo);
/* BO_CREATE with every field given (the last u32 too: t_aof.c's granularity) */
int qp_bo_create_raw(int fd, struct qp_bo_create_abi *a, struct qp_bo *bo);
int qp_bo_mmap(int fd, struct qp_bo *bo);
int qp_bo_close(int fd, uint32_t handle);
/* a memfd-backed dma-buf (udmabuf) imported into panthor: bo->map is the memfd mapping,
 * whose pages /proc/self/pagemap resolves (panthor's own BO mappings are VM_PFNMAP) */
int qp_udmabuf_bo(int fd, uint64_t size, struct qp_bo *bo);
int qp_vm_bind_op(int fd, uint32_t vm_id, uint32_t bind_flags, struct drm_panthor_vm_bind_op *op);
int qp_vm_map(int fd, uint32_t vm_id, struct qp_bo *bo, uint64_t va, uint32_t flags);
int qp_vm_unmap(int fd, uint32_t vm_id, uint64_t va, uint64_t size);
/* BO of size bytes, CPU-mapped, zeroed, bound at va in vm (flags: VM_BIND MAP flags) */
int qp_bo_new_mapped(int fd, uint32_t vm_id, uint64_t size, uint64_t va, uint32_t map_flags,
		     struct qp_bo *bo);

int qp_group_create_ex(int fd, uint32_t vm_id, uint8_t priority, uint32_t ringbuf_size,
		       uint32_t nqueues, uint32_t *handle);
int qp_group_create(int fd, uint32_t vm_id, uint32_t *handle);
int qp_group_destroy(int fd, uint32_t handle);
int qp_group_state(int fd, uint32_t handle, uint32_t *state, uint32_t *fatal_queues);
/* one job on queue 0; signal_syncobj/wait_syncobj 0 = none */
int qp_submit(int fd, uint32_t group, uint64_t stream_va, uint32_t stream_size,
	      uint32_t signal_syncobj, uint32_t wait_syncobj);

int qp_syncobj_create(int fd, uint32_t *handle, bool signaled);
int qp_syncobj_destroy(int fd, uint32_t handle);
/* 0 when all (or any) signalled, -ETIME on timeout */
int qp_syncobj_wait(int fd, const uint32_t *handles, uint32_t n, unsigned timeout_ms, bool all);
/* fence status through a sync_file export: 1 signalled ok, 0 pending, <0 fence error */
int qp_syncobj_status(int fd, uint32_t handle, int *status);

/* GPU_INFO/CSIF_INFO of the device, queried once per process */
const struct drm_panthor_gpu_info *qp_gpu(int fd);
const struct drm_panthor_csif_info *qp_csif(int fd);

/* -- CS instructions (Mali v10, Mesa v10.xml "CS Base"; opcode in [63:56]) -------------- */
#define CS_OP(op) ((uint64_t)(op) << 56)
#define CS_NOP() CS_OP(0)
#define CS_MOV48(reg, imm) (CS_OP(1) | ((uint64_t)(reg) << 48) | ((uint64_t)(imm) & 0xffffffffffffull))
#define CS_MOV32(reg, imm) (CS_OP(2) | ((uint64_t)(reg) << 48) | ((uint64_t)(imm) & 0xffffffffull))
#define CS_WAIT(mask) (CS_OP(3) | ((uint64_t)(mask) << 16))
#define CS_RUN_COMPUTE() CS_OP(4)
#define CS_SET_SB_ENTRY(ep, other) (CS_OP(23) | ((uint64_t)(other) << 4) | (uint64_t)(ep))
#define CS_ADD_IMM32(dst, src, imm) \
	(CS_OP(16) | ((uint64_t)(dst) << 48) | ((uint64_t)(src) << 40) | ((uint64_t)(uint32_t)(imm)))
#define CS_LOAD_MULTIPLE(base, addr, mask, off) \
	(CS_OP(20) | ((uint64_t)(base) << 48) | ((uint64_t)(addr) << 40) | \
	 ((uint64_t)(mask) << 16) | ((uint64_t)(uint16_t)(off)))
#define CS_STORE_MULTIPLE(base, addr, mask, off) \
	(CS_OP(21) | ((uint64_t)(base) << 48) | ((uint64_t)(addr) << 40) | \
	 ((uint64_t)(mask) << 16) | ((uint64_t)(uint16_t)(off)))
/* BRANCH: if r(reg) <cond> 0 (signed), go offset instructions from the next one;
 * cond: LEQUAL 0, GREATER 1, EQUAL 2, NEQUAL 3, LESS 4, GEQUAL 5, ALWAYS 6 */
#define CS_BRANCH(offset, cond, reg) \
	(CS_OP(22) | ((uint64_t)(reg) << 40) | ((uint64_t)(cond) << 28) | ((uint64_t)(uint16_t)(offset)))
#define CS_COND_EQUAL 2u
#define CS_COND_NEQUAL 3u
/* JUMP into the linear buffer at pair(addr) of r(len) bytes */
#define CS_JUMP(addr, len) (CS_OP(33) | ((uint64_t)(addr) << 40) | ((uint64_t)(len) << 32))
/* L2 clean+invalidate, LSC clean+invalidate, other: none; flush-ID register */
#define CS_FLUSH_CACHE2(flush_id_reg) \
	(CS_OP(36) | ((uint64_t)(flush_id_reg) << 40) | (3ull << 4) | 3ull)
#define CS_SYNC_ADD64(addr, data) (CS_OP(51) | ((uint64_t)(addr) << 40) | ((uint64_t)(data) << 32))
#define CS_SYNC_SET64(addr, data) (CS_OP(52) | ((uint64_t)(addr) << 40) | ((uint64_t)(data) << 32))
/* SYNC_WAIT32: wait until *(u32 *)pair(addr) <cond> r(data); cond: LEQUAL 0, GREATER 1 */
#define CS_SYNC_WAIT32(addr, data, cond) \
	(CS_OP(39) | ((uint64_t)(addr) << 40) | ((uint64_t)(data) << 32) | ((uint64_t)(cond) << 28))
#define CS_COND_GREATER 1u
#define CS_WAIT_ALL 0xffu
#define CS_ADD_IMM64(dst, src, imm) \
	(CS_OP(17) | ((uint64_t)(dst) << 48) | ((uint64_t)(src) << 40) | ((uint64_t)(uint32_t)(imm)))
/* SYNC_ADD64 with error propagate: the u32 status word after the value := error state */
#define CS_SYNC_ADD64_ERR(addr, data) (CS_SYNC_ADD64(addr, data) | 1ull)
/* SYNC_WAIT64 with error reject: a sync object whose status word is non-zero ends the wait */
#define CS_SYNC_WAIT64_REJECT(addr, data, cond) \
	(CS_OP(53) | ((uint64_t)(addr) << 40) | ((uint64_t)(data) << 32) | \
	 ((uint64_t)(cond) << 28) | 1ull)
#define CS_ERROR_BARRIER() CS_OP(47)
/* tiler heap: HEAP_SET pair(addr); HEAP_OPERATION op (0 VT started, 1 VT completed,
 * 3 fragment completed); RUN_IDVS (staging registers: r40:r41 Tiler Context, r33 vertex
 * count, r34 instance count, r16.. shaders: Mesa's CSF draw); FINISH_FRAGMENT returns the
 * chunk run pair(first)..pair(last) to the heap, bit 0 counts a fragment pass */
#define CS_HEAP_SET(addr) (CS_OP(48) | ((uint64_t)(addr) << 40))
#define CS_HEAP_OPERATION(op) (CS_OP(49) | ((uint64_t)(op) << 32))
#define CS_RUN_IDVS() CS_OP(6)
#define CS_FINISH_FRAGMENT(first, last, inc) \
	(CS_OP(11) | ((uint64_t)(first) << 40) | ((uint64_t)(last) << 32) | (uint64_t)!!(inc))

struct qp_cs {
	uint64_t *buf;
	uint32_t n;
};
static inline void cs_emit(struct qp_cs *cs, uint64_t insn) { cs->buf[cs->n++] = insn; }
/* store the 32-bit value v at va (STORE_MULTIPLE through r0:r1, value in r2) */
void cs_store32(struct qp_cs *cs, uint64_t va, uint32_t v);
/* *(u32 *)va += 1 via LOAD_MULTIPLE / ADD_IMMEDIATE32 / STORE_MULTIPLE */
void cs_inc32(struct qp_cs *cs, uint64_t va);
/* flush caches and wait, as IGT's streams end */
void cs_flush(struct qp_cs *cs);
static inline uint32_t cs_bytes(const struct qp_cs *cs) { return cs->n * 8; }

/* a VM with a 1-queue group, a command BO (executable) and a data BO, all CPU-mapped */
struct qp_ctx {
	int fd;
	uint32_t vm;
	uint32_t group;
	struct qp_bo cmd;  /* at QP_CMD_VA */
	struct qp_bo data; /* at QP_DATA_VA, NOEXEC */
	uint32_t syncobj;
};
#define QP_CMD_VA 0x1000000ull
#define QP_DATA_VA 0x2000000ull
int qp_ctx_init(struct qp_ctx *c, int fd, uint64_t cmd_size, uint64_t data_size);
/* run the stream at cmd offset off (bytes) and wait up to timeout_ms for its fence */
int qp_ctx_run(struct qp_ctx *c, uint32_t off, uint32_t size, unsigned timeout_ms);
/* destroy the group, syncobj, BOs (unbound) and VM of a context */
int qp_ctx_fini(struct qp_ctx *c);
/* a new group on the context's VM (replacing c->group, which the caller has given up on)
 * stores value at data offset off, from cmd offset 0: the VM still runs work. 0 or -errno */
int qp_ctx_regroup_store(struct qp_ctx *c, uint32_t off, uint32_t value, unsigned timeout_ms);
/* t_probe.c: n runtime suspend/resume cycles, each resume checked */
int qp_runtime_pm_cycles(int n);

/* tests: t_probe.c */
int test_modules_drm(void);
int test_modules_drm_exec(void);
int test_modules_gpu_sched(void);
int test_modules_drm_gpuvm(void);
int test_modules_panthor(void);
int test_gpu_pci_function(void);
int test_glue_bound(void);
int test_panthor_probed(void);
int test_render_node(void);
int test_query_gpu_info(void);
int test_query_csif_info(void);
int test_query_timestamp_info(void);
int test_query_invalid(void);
int test_query_group_priorities(void);
int test_runtime_pm_cycles(void);
int test_kmsg_probe_clean(void);
/* t_jobs.c */
int test_job_store_deadbeef(void);
int test_job_1000_sequential(void);
int test_job_8_concurrent_groups(void);
int test_csg_concurrent(void);
int test_timeslice_resume(void);
int test_job_bad_opcode_fatal(void);
int test_job_many_vms(void);
int test_job_fault_among_many_vms(void);
int test_job_mmu_fault(void);
int test_group_destroy_in_flight(void);
int test_job_wait_syncobj(void);
int test_job_timeout_recovery(void);
int test_kmsg_faults_only_expected(void);
/* t_uapi.c */
int test_gem_create_mmap(void);
int test_gem_no_mmap_offset(void);
int test_glue_reload_cycles(void);
int test_gem_invalid(void);
int test_vm_create_destroy(void);
int test_vm_invalid(void);
int test_vm_bind_invalid(void);
int test_vm_bind_sync_data(void);
int test_vm_bind_async(void);
int test_vm_partial_unmap_2m(void);
int test_vm_unmap_unmapped(void);
int test_group_create_invalid(void);
int test_group_priorities(void);
int test_group_submit_invalid(void);
int test_tiler_heap(void);
int test_bo_set_label(void);
int test_bo_query_info(void);
int test_bo_sync(void);
/* t_reset.c */
int test_gpu_reset_recovery(void);
int test_vm_bind_async_failure_unusable(void);
int test_progress_timeout(void);
int test_ping_timeout_reset(void);
int test_reset_in_flight(void);
int test_lock_region_stall(void);
int test_fw_boot_fail_unplug(void);
/* t_csf.c */
int test_tiler_oom_grow(void);
int test_tiler_oom_fail(void);
int test_cs_fault_recoverable(void);
/* t_soak.c (MANUAL) */
int test_soak_jobs(void);
int test_soak_vms(void);
int test_soak_runtime_pm(void);
/* t_bench.c */
int test_bench_job_latency(void);
/* t_aof.c: alloc-on-fault BOs (skipped without the port's uAPI) */
int test_alloc_on_fault_store(void);
int test_alloc_on_fault_granule(void);
int test_alloc_on_fault_many(void);
int test_alloc_on_fault_out_of_bo(void);
/* t_repro.c: driver-bug reproducers (MANUAL) */
int test_repro_submit_bogus_signal_syncobj(void);
int test_repro_vm_bind_bogus_signal_syncobj(void);
/* pf.c: panfrost */
int test_pf_modules(void);
int test_pf_probed(void);
int test_pf_render_node(void);
int test_pf_get_param(void);
int test_pf_get_param_invalid(void);
int test_pf_timestamp(void);
int test_pf_bo_create_mmap(void);
int test_pf_write_value_chain(void);
int test_pf_null_flush_fragment_jobs(void);
int test_pf_submit_deps(void);
int test_pf_submit_invalid(void);
int test_pf_heap_grow_on_fault(void);
int test_pf_job_fault(void);
int test_pf_mmu_fault(void);
int test_pf_per_fd_address_spaces(void);
int test_pf_jm_ctx(void);
int test_pf_runtime_pm_cycles(void);
int test_pf_job_loop_reset(void);
int test_pf_kmsg_clean(void);

#endif

/* Reproducers of driver bugs found under the suite (docs/driver-bugs.md). MANUAL: they run
 * only when named (qp.only=repro_...), because on an affected kernel they oops it. On a fixed
 * kernel each passes: the bad request is refused with the errno the uAPI promises.
 */
#include "qp.h"
#include <unistd.h>

static int submit_one(int fd, uint32_t group, struct drm_panthor_queue_submit *qs)
{
	struct drm_panthor_group_submit a = { .group_handle = group,
					      .queue_submits = { sizeof(*qs), 1, (uintptr_t)qs } };
	return qp_ioctl(fd, DRM_IOCTL_PANTHOR_GROUP_SUBMIT, &a);
}

/* driver-bugs.md #1: a GROUP_SUBMIT signal operation naming a syncobj handle that does not
 * exist. panthor_submit_ctx_add_sync_signal() fails drm_syncobj_find() and frees the half-built
 * signal with drm_syncobj_put(NULL): NULL pointer dereference (7.2.13). Fixed: -EINVAL. */
int test_repro_submit_bogus_signal_syncobj(void)
{
	int fd = qp_open();
	struct qp_ctx c;
	CHECK_OK(qp_ctx_init(&c, fd, 4096, 4096));
	struct qp_cs cs = { c.cmd.map, 0 };
	cs_inc32(&cs, c.data.va);
	cs_flush(&cs);
	struct drm_panthor_sync_op so = { .flags = DRM_PANTHOR_SYNC_OP_SIGNAL, .handle = 0x7777 };
	struct drm_panthor_queue_submit qs = { .stream_size = cs_bytes(&cs),
					       .stream_addr = c.cmd.va,
					       .syncs = { sizeof(so), 1, (uintptr_t)&so } };
	qp_diag("GROUP_SUBMIT with a SIGNAL op on syncobj handle 0x7777 (does not exist)");
	CHECK_ERR(submit_one(fd, c.group, &qs), EINVAL);
	CHECK(((volatile uint32_t *)c.data.map)[0] == 0, "the refused job ran");
	CHECK_OK(qp_ctx_fini(&c));
	close(fd);
	return QP_PASS;
}

/* The same path through an asynchronous VM_BIND (its signal operations go through the same
 * submit context). Fixed: -EINVAL, nothing mapped. */
int test_repro_vm_bind_bogus_signal_syncobj(void)
{
	int fd = qp_open();
	uint32_t vm;
	CHECK_OK(qp_vm_create(fd, &vm));
	struct qp_bo bo;
	CHECK_OK(qp_bo_create(fd, 4096, 0, vm, &bo));
	struct drm_panthor_sync_op so = { .flags = DRM_PANTHOR_SYNC_OP_SIGNAL, .handle = 0x7777 };
	struct drm_panthor_vm_bind_op op = {
		.flags = DRM_PANTHOR_VM_BIND_OP_TYPE_MAP, .bo_handle = bo.handle, .va = 0x4000000,
		.size = 4096, .syncs = { sizeof(so), 1, (uintptr_t)&so },
	};
	qp_diag("async VM_BIND with a SIGNAL op on syncobj handle 0x7777 (does not exist)");
	CHECK_ERR(qp_vm_bind_op(fd, vm, DRM_PANTHOR_VM_BIND_ASYNC, &op), EINVAL);
	CHECK_OK(qp_bo_close(fd, bo.handle));
	CHECK_OK(qp_vm_destroy(fd, vm));
	close(fd);
	return QP_PASS;
}

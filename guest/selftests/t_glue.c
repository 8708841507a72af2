/* [glue] The glue's remove path: `rmmod panthor; rmmod panthor_glue; insmod panthor_glue.ko;
 * insmod panthor.ko` repeatedly, with panthor fully re-probed each time (firmware boot on
 * our GPU, a working render node) and no kernel warnings, leaks or driver errors. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "qp.h"

#define CYCLES 3

static bool glue_platform_device_exists(void)
{
	DIR *d = opendir("/sys/bus/platform/devices");
	if (!d)
		return false;
	bool found = false;
	for (struct dirent *e; (e = readdir(d));)
		found |= !strncmp(e->d_name, "qemu-panthor.", 13); /* not the 6.12 DTB regulator */
	closedir(d);
	return found;
}

/* a kernel record that would betray a broken remove path */
static bool bad_record(const char *line)
{
	static const char *const bad[] = {
		"WARNING:", "BUG:", "refcount_t", "Oops", "use-after-free", "leak",
		"OF: ERROR", "can't request region", "resource busy", "already registered",
		"Duplicate name", "sysfs: cannot create duplicate",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (strstr(line, bad[i]))
			return true;
	/* driver errors, except the missing-supply line every boot prints (7.2 tolerates it) */
	if (!strncmp(line, "panthor ", 8) && (strstr(line, "rror") || strstr(line, "failed") ||
					      strstr(line, "timeout")))
		return !strstr(line, "no regulator (mali) found");
	return false;
}

int test_glue_reload_cycles(void)
{
	static char log[1 << 18];
	int kfd = qp_kmsg_open(true);
	CHECK(kfd >= 0, "/dev/kmsg: %s", strerror(errno));
	double t0 = qp_now();
	for (int i = 0; i < CYCLES; i++) {
		CHECK_OK(qp_rm_module("panthor"));
		CHECK(qp_wait_render_node(false, 2000) >= 0, "cycle %d: render node outlived panthor", i);
		CHECK_OK(qp_rm_module("panthor_glue"));
		CHECK(!qp_module_loaded("panthor_glue"), "cycle %d: glue still loaded", i);
		CHECK(!glue_platform_device_exists(),
		      "cycle %d: a qemu-panthor platform device survived the glue", i);
		CHECK_OK(qp_ins_module("/lib/modules/panthor_glue.ko"));
		CHECK_OK(qp_ins_module("/lib/modules/panthor.ko"));
		int ms = qp_wait_render_node(true, 10000);
		CHECK(ms >= 0, "cycle %d: panthor did not re-probe (no render node)", i);
		/* the re-probed driver talks to the GPU: identity and firmware interface */
		int fd = qp_open();
		struct drm_panthor_gpu_info gi;
		CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_GPU_INFO, &gi, sizeof(gi)));
		CHECK(gi.gpu_id == qp_env_or("GPU_ID", 0), "cycle %d: GPU_ID 0x%x", i, gi.gpu_id);
		struct drm_panthor_csif_info ci;
		CHECK_OK(qp_query(fd, DRM_PANTHOR_DEV_QUERY_CSIF_INFO, &ci, sizeof(ci)));
		CHECK(ci.csg_slot_count > 0 && ci.cs_slot_count > 0,
		      "cycle %d: CSIF info %u/%u", i, ci.csg_slot_count, ci.cs_slot_count);
		close(fd);
		qp_diag("cycle %d: re-probed in %d ms", i, ms);
	}
	size_t n = qp_kmsg_drain(kfd, log, sizeof(log));
	close(kfd);
	int bad = 0, probes = 0;
	for (char *line = log, *nl; n && *line; line = nl + 1) {
		nl = strchr(line, '\n');
		if (!nl)
			break;
		*nl = '\0';
		if (strstr(line, "Initialized panthor"))
			probes++;
		if (bad_record(line)) {
			qp_diag("unexpected: %s", line);
			bad++;
		}
	}
	qp_diag("%d reload cycles in %.2f s", CYCLES, qp_now() - t0);
	CHECK(probes == CYCLES, "%d 'Initialized panthor' lines for %d cycles", probes, CYCLES);
	CHECK(bad == 0, "%d unexpected kernel log lines during the cycles", bad);
	return QP_PASS;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * panthor_glue - let the unmodified panthor platform driver drive the
 * qemu-panthor PCI function.
 *
 * panthor (and panfrost) are platform drivers matched by device-tree
 * compatible; the emulated Mali GPU is a PCI function (Arm 0x13b5:0xc5f0,
 * BAR0 = the 2 MiB GPU register window, MSI-X vectors job/mmu/gpu or one
 * shared INTx). GPU_ID's architecture says which driver's node to build: a
 * CSF part (arch >= 10) gets panthor's, a Job Manager part (Midgard,
 * Bifrost, Valhall JM) panfrost's. For every such function this module:
 *
 *  1. enables it, reads GPU_ID and COHERENCY_FEATURES from BAR0;
 *  2. allocates 3 MSI-X vectors (0 = job, 1 = mmu, 2 = gpu), or falls back
 *     to the INTx line shared by all three;
 *  3. finds the device-tree nodes for it, /qemu-panthor@<id>/gpu with
 *     <id> = (domain << 16) | (bus << 8) | devfn in hex: either supplied by
 *     the boot device tree (needed on kernels without CONFIG_OF_DYNAMIC,
 *     e.g. Debian 6.12; see README.md), or built at runtime with an
 *     of_changeset (CONFIG_OF_DYNAMIC, e.g. Debian 7.2):
 *       /qemu-panthor@<id>              container without "compatible",
 *                                       marked OF_POPULATED so of_platform
 *                                       never makes a device for it
 *         core-clock                    "fixed-clock", #clock-cells = <0>
 *         opp-table                     "operating-points-v2"
 *           opp-<hz>                    opp-hz = /bits/ 64 <hz>
 *         gpu                           CSF: "rockchip,rk3588-mali",
 *                                       "arm,mali-valhall-csf", clock-names
 *                                       = "core"; JM: "rockchip,rk3568-mali",
 *                                       "arm,mali-bifrost", clock-names =
 *                                       "gpu"; clocks, operating-points-v2,
 *                                       dma-coherent or dma-noncoherent
 *  4. registers the fixed-rate clock and its OF provider (runtime nodes
 *     only: a boot device tree's "fixed-clock" is registered at boot);
 *  5. registers a platform device "qemu-panthor.<id>" on the gpu node, child
 *     of the PCI device, with MEM resource = BAR0 and IRQ resources named
 *     "job", "mmu", "gpu" (platform_get_irq_byname() falls back to named
 *     resources when the node has no "interrupts" property).
 *
 * Removal undoes all of it in reverse order.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/clk-provider.h>
#include <linux/dma-mapping.h>
#include <linux/fwnode.h>
#include <linux/io.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/of.h>
#include <linux/pci.h>
#include <linux/platform_device.h>

#ifndef CONFIG_COMMON_CLK
#error "panthor_glue needs CONFIG_COMMON_CLK"
#endif

#define QP_PCI_VENDOR_ARM		0x13b5
#define QP_PCI_DEVICE_GPU		0xc5f0

/* GPU_CONTROL registers read before the nodes are built (docs/reference/gpu-registers.md). */
#define QP_GPU_ID			0x000
#define QP_GPU_ARCH_MAJOR(id)		((id) >> 28)
#define QP_GPU_FIRST_CSF_ARCH		10	/* Valhall CSF; older parts have a Job Manager */
#define QP_COHERENCY_FEATURES		0x300
#define QP_COHERENCY_ACE_LITE		BIT(0)
#define QP_PROBE_MAP_LEN		0x1000

/*
 * Doorbell pages reach 0x80000 + 16 * 0x10000 (docs/reference/guest.md). A test
 * build may lower it (-DQP_BAR0_MIN_LEN=...) to bind a stand-in device.
 */
#ifndef QP_BAR0_MIN_LEN
#define QP_BAR0_MIN_LEN			0x190000
#endif

#define QP_NUM_IRQS			3

static const char * const qp_irq_names[QP_NUM_IRQS] = { "job", "mmu", "gpu" };

static ulong clock_hz = 800000000;
module_param(clock_hz, ulong, 0444);
MODULE_PARM_DESC(clock_hz, "GPU core clock and single OPP frequency in Hz (default 800000000)");

/* RK3588's device tree has no dma-coherent on the GPU: panthor's non-coherent paths (cache
 * maintenance of BOs and page tables) run unless the launcher asks (boot --coherent). */
static bool allow_coherent;
module_param(allow_coherent, bool, 0444);
MODULE_PARM_DESC(allow_coherent,
		 "Mark the GPU dma-coherent when it reports ACE-Lite in COHERENCY_FEATURES (default N, as on RK3588)");

static bool force_intx;
module_param(force_intx, bool, 0444);
MODULE_PARM_DESC(force_intx, "Use the shared INTx line even when MSI-X is offered (default N)");

struct qp_glue {
	struct pci_dev *pdev;
	u32 id;
	u32 gpu_id;
	u32 coherency;
	bool coherent;
	bool jm;		/* a Job Manager GPU: panfrost's node */

	bool irqs_allocated;
	bool msix;
	int irqs[QP_NUM_IRQS];

	/* gpu node: one reference held by the glue in both modes. */
	struct device_node *gpu_np;
	bool boot_dt;		/* nodes came from the boot device tree */

#ifdef CONFIG_OF_DYNAMIC
	struct of_changeset ocs;
	bool ocs_init;
	bool ocs_applied;
	struct device_node *bus_np;
	struct device_node *clk_np;
	struct device_node *opp_np;
	struct device_node *opp_entry_np;

	struct clk_hw *clk_hw;
	bool clk_provider;
#endif

	struct platform_device *plat;

	char bus_name[40];
	char opp_entry_name[40];
	char clk_name[64];
};

/* The generic compatible each driver matches (checked on boot device-tree nodes too). */
static const char *qp_driver_compatible(const struct qp_glue *g)
{
	return g->jm ? "arm,mali-bifrost" : "arm,mali-valhall-csf";
}

#ifdef CONFIG_OF_DYNAMIC
/* As on the boards: RK3588's Mali-G610 (panthor), RK3568's Mali-G52 (panfrost). */
static const char * const qp_csf_compatible[] = {
	"rockchip,rk3588-mali",
	"arm,mali-valhall-csf",
};
static const char * const qp_jm_compatible[] = {
	"rockchip,rk3568-mali",
	"arm,mali-bifrost",
};

/* Serialises phandle allocation with changeset application. */
static DEFINE_MUTEX(qp_of_lock);

/* Highest phandle in the live tree; the new nodes get the next two. */
static phandle qp_max_phandle(void)
{
	struct device_node *np;
	phandle max = 0;

	for (np = of_find_all_nodes(NULL); np; np = of_find_all_nodes(np))
		if (np->phandle > max)
			max = np->phandle;
	return max;
}

static struct device_node *qp_create_node(struct qp_glue *g,
					   struct device_node *parent,
					   const char *name, int *err)
{
	struct device_node *np;

	if (*err)
		return NULL;
	np = of_changeset_create_node(&g->ocs, parent, name);
	if (IS_ERR_OR_NULL(np)) {
		*err = np ? PTR_ERR(np) : -ENOMEM;
		return NULL;
	}
	return np;
}

static void qp_chk(int *err, int ret)
{
	if (!*err && ret)
		*err = ret;
}

/* Fills the changeset; caller holds qp_of_lock. */
static int qp_dt_build(struct qp_glue *g, phandle clk_ph, phandle opp_ph)
{
	u32 opp_hz[2] = { upper_32_bits((u64)clock_hz), lower_32_bits((u64)clock_hz) };
	int err = 0;

	of_changeset_init(&g->ocs);
	g->ocs_init = true;

	g->bus_np = qp_create_node(g, of_root, g->bus_name, &err);
	g->clk_np = qp_create_node(g, g->bus_np, "core-clock", &err);
	g->opp_np = qp_create_node(g, g->bus_np, "opp-table", &err);
	g->opp_entry_np = qp_create_node(g, g->opp_np, g->opp_entry_name, &err);
	g->gpu_np = qp_create_node(g, g->bus_np, "gpu", &err);
	if (err)
		return err;

	/*
	 * Keep of_platform's reconfig notifier from making a device for the
	 * container (a new child of the root would otherwise get one).
	 */
	of_node_set_flag(g->bus_np, OF_POPULATED);

	qp_chk(&err, of_changeset_add_prop_string(&g->ocs, g->clk_np, "compatible",
						  "fixed-clock"));
	qp_chk(&err, of_changeset_add_prop_u32(&g->ocs, g->clk_np, "#clock-cells", 0));
	qp_chk(&err, of_changeset_add_prop_u32(&g->ocs, g->clk_np, "clock-frequency",
					       (u32)clock_hz));
	qp_chk(&err, of_changeset_add_prop_string(&g->ocs, g->clk_np, "clock-output-names",
						  g->clk_name));
	qp_chk(&err, of_changeset_add_prop_u32(&g->ocs, g->clk_np, "phandle", clk_ph));

	qp_chk(&err, of_changeset_add_prop_string(&g->ocs, g->opp_np, "compatible",
						  "operating-points-v2"));
	qp_chk(&err, of_changeset_add_prop_u32(&g->ocs, g->opp_np, "phandle", opp_ph));
	qp_chk(&err, of_changeset_add_prop_u32_array(&g->ocs, g->opp_entry_np, "opp-hz",
						     opp_hz, ARRAY_SIZE(opp_hz)));

	if (g->jm)
		qp_chk(&err, of_changeset_add_prop_string_array(&g->ocs, g->gpu_np, "compatible",
								qp_jm_compatible,
								ARRAY_SIZE(qp_jm_compatible)));
	else
		qp_chk(&err, of_changeset_add_prop_string_array(&g->ocs, g->gpu_np, "compatible",
								qp_csf_compatible,
								ARRAY_SIZE(qp_csf_compatible)));
	qp_chk(&err, of_changeset_add_prop_u32(&g->ocs, g->gpu_np, "clocks", clk_ph));
	/* panthor asks for "core"; panfrost takes the first clock, named "gpu" on RK3568 */
	qp_chk(&err, of_changeset_add_prop_string(&g->ocs, g->gpu_np, "clock-names",
						  g->jm ? "gpu" : "core"));
	qp_chk(&err, of_changeset_add_prop_u32(&g->ocs, g->gpu_np, "operating-points-v2",
					       opp_ph));
	/*
	 * Say which, explicitly: of_dma_is_coherent() walks up to the root, and QEMU's virt
	 * machine marks its root node dma-coherent, which would make the GPU coherent.
	 */
	qp_chk(&err, of_changeset_add_prop_bool(&g->ocs, g->gpu_np,
						g->coherent ? "dma-coherent" : "dma-noncoherent"));
	return err;
}

static void qp_dt_put_nodes(struct qp_glue *g)
{
	/*
	 * Drop the references of_changeset_create_node() handed us (the gpu
	 * node's one is g->gpu_np, dropped by the caller).
	 */
	of_node_put(g->opp_entry_np);
	of_node_put(g->opp_np);
	of_node_put(g->clk_np);
	of_node_put(g->bus_np);
	g->opp_entry_np = NULL;
	g->opp_np = NULL;
	g->clk_np = NULL;
	g->bus_np = NULL;
}

static int qp_dt_create_dynamic(struct qp_glue *g)
{
	phandle base;
	int err;

	mutex_lock(&qp_of_lock);
	base = qp_max_phandle();
	err = qp_dt_build(g, base + 1, base + 2);
	if (!err) {
		err = of_changeset_apply(&g->ocs);
		if (!err) {
			g->ocs_applied = true;
			/*
			 * The changeset attaches each node before adding its
			 * properties, so attach saw no "phandle" and left
			 * np->phandle = 0: set it here so of_parse_phandle()
			 * (clocks, operating-points-v2) can find the nodes,
			 * and so detach invalidates the phandle cache entry.
			 */
			g->clk_np->phandle = base + 1;
			g->opp_np->phandle = base + 2;
		}
	}
	mutex_unlock(&qp_of_lock);

	if (err) {
		pci_err(g->pdev, "building device-tree nodes failed: %d\n", err);
		return err;
	}
	pci_info(g->pdev, "created device-tree nodes %pOF\n", g->bus_np);

	/*
	 * These nodes never get a struct device of their own: tell fw_devlink
	 * so that the gpu device never waits for them as suppliers.
	 */
	fwnode_dev_initialized(of_fwnode_handle(g->bus_np), true);
	fwnode_dev_initialized(of_fwnode_handle(g->opp_np), true);
	return 0;
}

static void qp_dt_destroy_dynamic(struct qp_glue *g)
{
	int ret;

	if (!g->ocs_init)
		return;

	mutex_lock(&qp_of_lock);
	if (g->ocs_applied) {
		ret = of_changeset_revert(&g->ocs);
		if (ret) {
			/* Nodes may still be live: leak them rather than free them. */
			pr_err("%s: reverting device-tree nodes failed: %d (nodes leaked)\n",
			       pci_name(g->pdev), ret);
			mutex_unlock(&qp_of_lock);
			g->ocs_init = false;
			g->gpu_np = NULL;
			return;
		}
		g->ocs_applied = false;
	}
	of_changeset_destroy(&g->ocs);
	g->ocs_init = false;
	qp_dt_put_nodes(g);
	of_node_put(g->gpu_np);
	g->gpu_np = NULL;
	mutex_unlock(&qp_of_lock);
}

static int qp_clk_create(struct qp_glue *g)
{
	struct clk_hw *hw;
	int err;

	/* No struct device: the clock must not runtime-resume the PCI function. */
	hw = clk_hw_register_fixed_rate(NULL, g->clk_name, NULL, 0, clock_hz);
	if (IS_ERR(hw)) {
		pci_err(g->pdev, "registering clock %s failed: %ld\n", g->clk_name,
			PTR_ERR(hw));
		return PTR_ERR(hw);
	}
	g->clk_hw = hw;

	err = of_clk_add_hw_provider(g->clk_np, of_clk_hw_simple_get, hw);
	if (err) {
		pci_err(g->pdev, "adding clock provider failed: %d\n", err);
		return err;
	}
	g->clk_provider = true;
	return 0;
}

static void qp_clk_destroy(struct qp_glue *g)
{
	if (g->clk_provider) {
		of_clk_del_provider(g->clk_np);
		g->clk_provider = false;
	}
	if (g->clk_hw) {
		clk_hw_unregister_fixed_rate(g->clk_hw);
		g->clk_hw = NULL;
	}
}

#else /* !CONFIG_OF_DYNAMIC */

static int qp_dt_create_dynamic(struct qp_glue *g)
{
	pci_err(g->pdev,
		"no /%s/gpu node in the boot device tree, and this kernel lacks CONFIG_OF_DYNAMIC to create one (see the glue's README.md)\n",
		g->bus_name);
	return -ENODEV;
}

static void qp_dt_destroy_dynamic(struct qp_glue *g)
{
}

static int qp_clk_create(struct qp_glue *g)
{
	return 0;
}

static void qp_clk_destroy(struct qp_glue *g)
{
}

#endif /* CONFIG_OF_DYNAMIC */

/*
 * A boot device tree may already describe this function (required without
 * CONFIG_OF_DYNAMIC): then its nodes are used as they are, and its
 * "fixed-clock" was registered at boot by of_clk_init().
 */
static int qp_dt_find_boot(struct qp_glue *g)
{
	char path[64];
	struct device_node *np;

	snprintf(path, sizeof(path), "/%s/gpu", g->bus_name);
	np = of_find_node_by_path(path);
	if (!np)
		return -ENOENT;
	if (!of_device_is_available(np)) {
		pci_err(g->pdev, "%pOF is disabled\n", np);
		of_node_put(np);
		return -ENODEV;
	}
	if (!of_device_is_compatible(np, qp_driver_compatible(g)))
		pci_warn(g->pdev, "%pOF is not compatible with \"%s\" (GPU_ID %#010x)\n", np,
			 qp_driver_compatible(g), g->gpu_id);
	if (of_property_read_bool(np, "dma-coherent") &&
	    !(g->coherency & QP_COHERENCY_ACE_LITE))
		pci_warn(g->pdev,
			 "%pOF is dma-coherent but COHERENCY_FEATURES lacks ACE-Lite: the driver will refuse it\n",
			 np);
	g->gpu_np = np;
	g->boot_dt = true;
	g->coherent = of_property_read_bool(np, "dma-coherent");
	pci_info(g->pdev, "using boot device-tree node %pOF\n", np);
	return 0;
}

static int qp_dt_create(struct qp_glue *g)
{
	int err;

	if (!of_root) {
		pci_err(g->pdev, "no device-tree root: boot the guest with a device tree\n");
		return -ENODEV;
	}
	err = qp_dt_find_boot(g);
	if (err != -ENOENT)
		return err;
	err = qp_dt_create_dynamic(g);
	if (err)
		return err;
	return qp_clk_create(g);
}

static void qp_dt_destroy(struct qp_glue *g)
{
	if (g->boot_dt) {
		of_node_put(g->gpu_np);
		g->gpu_np = NULL;
		g->boot_dt = false;
		return;
	}
	qp_clk_destroy(g);
	qp_dt_destroy_dynamic(g);
}

static int qp_irqs_alloc(struct qp_glue *g)
{
	struct pci_dev *pdev = g->pdev;
	int n, i;

	n = -ENODEV;
	if (!force_intx && pdev->msix_cap)
		n = pci_alloc_irq_vectors(pdev, QP_NUM_IRQS, QP_NUM_IRQS, PCI_IRQ_MSIX);
	if (n == QP_NUM_IRQS) {
		g->msix = true;
		for (i = 0; i < QP_NUM_IRQS; i++)
			g->irqs[i] = pci_irq_vector(pdev, i);
	} else {
		if (pdev->msix_cap && !force_intx)
			pci_info(pdev, "MSI-X with %d vectors unavailable (%d), using INTx\n",
				 QP_NUM_IRQS, n);
		n = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_INTX);
		if (n != 1) {
			pci_err(pdev, "no usable interrupt (MSI-X or INTx): %d\n", n);
			return n < 0 ? n : -ENODEV;
		}
		g->msix = false;
		for (i = 0; i < QP_NUM_IRQS; i++)
			g->irqs[i] = pci_irq_vector(pdev, 0);
	}
	g->irqs_allocated = true;

	for (i = 0; i < QP_NUM_IRQS; i++) {
		if (g->irqs[i] <= 0) {
			pci_err(pdev, "bad irq for %s: %d\n", qp_irq_names[i], g->irqs[i]);
			return g->irqs[i] < 0 ? g->irqs[i] : -ENODEV;
		}
	}
	return 0;
}

static int qp_read_ids(struct qp_glue *g)
{
	void __iomem *regs;

	regs = pci_iomap_range(g->pdev, 0, 0, QP_PROBE_MAP_LEN);
	if (!regs) {
		pci_err(g->pdev, "cannot map BAR0\n");
		return -ENOMEM;
	}
	g->gpu_id = readl(regs + QP_GPU_ID);
	g->coherency = readl(regs + QP_COHERENCY_FEATURES);
	pci_iounmap(g->pdev, regs);

	if (g->gpu_id == 0xffffffff) {
		pci_err(g->pdev, "GPU_ID reads all ones: device not responding\n");
		return -ENODEV;
	}
	if (g->gpu_id == 0)
		pci_warn(g->pdev, "GPU_ID reads 0: the driver will refuse this GPU\n");
	g->jm = QP_GPU_ARCH_MAJOR(g->gpu_id) < QP_GPU_FIRST_CSF_ARCH;

	g->coherent = allow_coherent && (g->coherency & QP_COHERENCY_ACE_LITE);
	return 0;
}

static int qp_plat_create(struct qp_glue *g)
{
	struct pci_dev *pdev = g->pdev;
	struct resource res[1 + QP_NUM_IRQS];
	struct platform_device_info info = {};
	struct platform_device *plat;
	int i;

	res[0] = DEFINE_RES_MEM_NAMED(pci_resource_start(pdev, 0),
				      pci_resource_len(pdev, 0), "qemu-panthor-regs");
	/*
	 * Nest the platform MEM resource inside the PCI BAR. Without a parent,
	 * platform_device_add() would insert it into iomem_resource *above*
	 * the BAR (same range), and platform_device_del()'s release_resource()
	 * would then unlink the BAR together with it. panthor's own
	 * devm_request_mem_region() nests below this one; the glue does not
	 * request the region itself.
	 */
	res[0].parent = &pdev->resource[0];
	for (i = 0; i < QP_NUM_IRQS; i++) {
		res[1 + i] = DEFINE_RES_IRQ_NAMED(g->irqs[i], qp_irq_names[i]);
		if (!g->msix)
			res[1 + i].flags |= IORESOURCE_IRQ_SHAREABLE;
	}

	info.parent = &pdev->dev;
	info.fwnode = of_fwnode_handle(g->gpu_np);
	info.name = "qemu-panthor";
	info.id = g->id & 0x7fffffff;
	info.res = res;
	info.num_res = ARRAY_SIZE(res);
	info.dma_mask = DMA_BIT_MASK(64);

	plat = platform_device_register_full(&info);
	if (IS_ERR(plat)) {
		pci_err(pdev, "registering platform device failed: %ld\n", PTR_ERR(plat));
		return PTR_ERR(plat);
	}
	g->plat = plat;
	return 0;
}

static void qp_teardown(struct qp_glue *g)
{
	if (g->plat) {
		platform_device_unregister(g->plat);
		g->plat = NULL;
	}
	qp_dt_destroy(g);
	if (g->irqs_allocated) {
		pci_free_irq_vectors(g->pdev);
		g->irqs_allocated = false;
	}
}

static int qp_probe(struct pci_dev *pdev, const struct pci_device_id *ent)
{
	struct qp_glue *g;
	resource_size_t bar_start, bar_len;
	char irq_desc[64];
	char nodes_desc[48];
	int err;

	if (!clock_hz || clock_hz > U32_MAX) {
		pci_err(pdev, "clock_hz=%lu out of range (1..%u)\n", clock_hz, U32_MAX);
		return -EINVAL;
	}

	g = devm_kzalloc(&pdev->dev, sizeof(*g), GFP_KERNEL);
	if (!g)
		return -ENOMEM;
	g->pdev = pdev;
	g->id = ((u32)pci_domain_nr(pdev->bus) << 16) | pci_dev_id(pdev);
	snprintf(g->bus_name, sizeof(g->bus_name), "qemu-panthor@%x", g->id);
	snprintf(g->opp_entry_name, sizeof(g->opp_entry_name), "opp-%lu", clock_hz);
	snprintf(g->clk_name, sizeof(g->clk_name), "qemu-panthor-%s-core", pci_name(pdev));

	err = pcim_enable_device(pdev);
	if (err) {
		pci_err(pdev, "enabling device failed: %d\n", err);
		return err;
	}
	pci_set_master(pdev);

	if (!(pci_resource_flags(pdev, 0) & IORESOURCE_MEM) || !pdev->resource[0].parent) {
		pci_err(pdev, "BAR0 is not an assigned memory BAR\n");
		return -ENODEV;
	}
	bar_start = pci_resource_start(pdev, 0);
	bar_len = pci_resource_len(pdev, 0);
	if (bar_len < QP_BAR0_MIN_LEN) {
		pci_err(pdev, "BAR0 is %#llx bytes, need at least %#x\n",
			(unsigned long long)bar_len, QP_BAR0_MIN_LEN);
		return -ENODEV;
	}

	err = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (err)
		pci_warn(pdev, "64-bit DMA mask refused: %d\n", err);

	err = qp_read_ids(g);
	if (err)
		return err;

	pci_set_drvdata(pdev, g);

	err = qp_irqs_alloc(g);
	if (err)
		goto fail;
	err = qp_dt_create(g);
	if (err)
		goto fail;
	err = qp_plat_create(g);
	if (err)
		goto fail;

	if (g->msix)
		snprintf(irq_desc, sizeof(irq_desc), "msix job=%d mmu=%d gpu=%d",
			 g->irqs[0], g->irqs[1], g->irqs[2]);
	else
		snprintf(irq_desc, sizeof(irq_desc), "intx %d", g->irqs[0]);

	if (g->boot_dt)
		snprintf(nodes_desc, sizeof(nodes_desc), "boot device tree");
	else
		snprintf(nodes_desc, sizeof(nodes_desc), "runtime nodes, clock %lu Hz", clock_hz);

	pr_info("bound %s (BAR0 %pa size %#llx, GPU_ID %#010x (%s), COHERENCY_FEATURES %#x%s, irqs: %s), created platform device %s on %pOF (%s)\n",
		pci_name(pdev), &bar_start, (unsigned long long)bar_len, g->gpu_id,
		g->jm ? "Job Manager: panfrost" : "CSF: panthor",
		g->coherency, g->coherent ? " dma-coherent" : "", irq_desc,
		dev_name(&g->plat->dev), g->gpu_np, nodes_desc);
	return 0;

fail:
	qp_teardown(g);
	pci_set_drvdata(pdev, NULL);
	return err;
}

static void qp_remove(struct pci_dev *pdev)
{
	struct qp_glue *g = pci_get_drvdata(pdev);

	if (!g)
		return;
	qp_teardown(g);
	pci_set_drvdata(pdev, NULL);
	pr_info("unbound %s\n", pci_name(pdev));
}

static const struct pci_device_id qp_pci_ids[] = {
	{ PCI_DEVICE(QP_PCI_VENDOR_ARM, QP_PCI_DEVICE_GPU) },
	{ }
};
MODULE_DEVICE_TABLE(pci, qp_pci_ids);

static struct pci_driver qp_pci_driver = {
	.name = KBUILD_MODNAME,
	.id_table = qp_pci_ids,
	.probe = qp_probe,
	.remove = qp_remove,
};
module_pci_driver(qp_pci_driver);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("qemu-panthor");
MODULE_DESCRIPTION("Bind the panthor (or panfrost) platform driver to the qemu-panthor PCI GPU function");
MODULE_SOFTDEP("post: panthor");

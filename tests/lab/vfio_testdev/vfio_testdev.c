// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfio_testdev - a minimal VFIO PCI variant driver for the hypervisor.vfio lab.
 *
 * It drives QEMU's "pci-testdev" (1b36:0005) through vfio_pci_core exactly like the
 * upstream variant drivers (mlx5_vfio_pci, virtio_vfio_pci, ...) do, and its id table
 * holds only a PCI_DRIVER_OVERRIDE_DEVICE_VFIO() entry, so modpost emits
 *   alias vfio_pci:v00001B36d00000005sv*sd*bc*sc*i* vfio_testdev
 * and the device is bound only through driver_override (never autoprobed).
 *
 * Fault injection for the reliability tests (writable at runtime through
 * /sys/module/vfio_testdev/parameters/):
 *   fail_probe=1         probe() returns -EIO (with a pr_err naming the device)
 *   remove_delay_ms=N    remove() sleeps N ms before unregistering, which
 *                        simulates an unbind that blocks (a VM holding the device)
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/delay.h>
#include <linux/device.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/pci.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>

static int fail_probe;
module_param(fail_probe, int, 0644);
MODULE_PARM_DESC(fail_probe, "If non-zero, probe() fails with -EIO (fault injection)");

static unsigned int remove_delay_ms;
module_param(remove_delay_ms, uint, 0644);
MODULE_PARM_DESC(remove_delay_ms, "remove() sleeps this many ms before unregistering (simulates a blocking unbind)");

static int vfio_testdev_open_device(struct vfio_device *core_vdev)
{
	struct vfio_pci_core_device *vdev =
		container_of(core_vdev, struct vfio_pci_core_device, vdev);
	int ret;

	ret = vfio_pci_core_enable(vdev);
	if (ret)
		return ret;
	vfio_pci_core_finish_enable(vdev);
	return 0;
}

static const struct vfio_device_ops vfio_testdev_ops = {
	.name = "vfio-testdev",
	.init = vfio_pci_core_init_dev,
	.release = vfio_pci_core_release_dev,
	.open_device = vfio_testdev_open_device,
	.close_device = vfio_pci_core_close_device,
	.ioctl = vfio_pci_core_ioctl,
	.device_feature = vfio_pci_core_ioctl_feature,
	.read = vfio_pci_core_read,
	.write = vfio_pci_core_write,
	.mmap = vfio_pci_core_mmap,
	.request = vfio_pci_core_request,
	.match = vfio_pci_core_match,
	.bind_iommufd = vfio_iommufd_physical_bind,
	.unbind_iommufd = vfio_iommufd_physical_unbind,
	.attach_ioas = vfio_iommufd_physical_attach_ioas,
	.detach_ioas = vfio_iommufd_physical_detach_ioas,
};

static int vfio_testdev_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct vfio_pci_core_device *vdev;
	int ret;

	if (READ_ONCE(fail_probe)) {
		pr_err("%s: probe failed on purpose (fail_probe=%d): -EIO\n",
		       pci_name(pdev), READ_ONCE(fail_probe));
		return -EIO;
	}

	vdev = vfio_alloc_device(vfio_pci_core_device, vdev, &pdev->dev,
				 &vfio_testdev_ops);
	if (IS_ERR(vdev))
		return PTR_ERR(vdev);

	dev_set_drvdata(&pdev->dev, vdev);
	ret = vfio_pci_core_register_device(vdev);
	if (ret) {
		vfio_put_device(&vdev->vdev);
		return ret;
	}
	pr_info("%s: bound\n", pci_name(pdev));
	return 0;
}

static void vfio_testdev_remove(struct pci_dev *pdev)
{
	struct vfio_pci_core_device *vdev = dev_get_drvdata(&pdev->dev);
	unsigned int delay = READ_ONCE(remove_delay_ms);

	if (delay) {
		pr_info("%s: remove blocks for %u ms (remove_delay_ms)\n",
			pci_name(pdev), delay);
		msleep(delay);
	}
	vfio_pci_core_unregister_device(vdev);
	vfio_put_device(&vdev->vdev);
	pr_info("%s: unbound\n", pci_name(pdev));
}

static const struct pci_device_id vfio_testdev_table[] = {
	/* QEMU pci-testdev; override-only: matches through driver_override alone */
	{ PCI_DRIVER_OVERRIDE_DEVICE_VFIO(0x1b36, 0x0005) },
	{}
};
MODULE_DEVICE_TABLE(pci, vfio_testdev_table);

static struct pci_driver vfio_testdev_driver = {
	.name = KBUILD_MODNAME,
	.id_table = vfio_testdev_table,
	.probe = vfio_testdev_probe,
	.remove = vfio_testdev_remove,
	.err_handler = &vfio_pci_core_err_handlers,
	.driver_managed_dma = true,
};
module_pci_driver(vfio_testdev_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("VFIO PCI variant driver for QEMU pci-testdev with fault injection (hypervisor.vfio lab)");

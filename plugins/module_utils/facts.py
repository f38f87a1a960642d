# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The facts vfio_facts returns."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hypervisor.vfio.plugins.module_utils import bootloader as boot
from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import module_names
from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI

# Files of this collection an initramfs may carry (the udev rule, the modprobe configuration).
OWN_FILE_MARK = 'hypervisor-vfio'


def collect_facts(host, bus=PCI, list_initramfs=None, items=None, snapshot=None):
    """Everything vfio_facts returns.

    ``list_initramfs(path)`` returns the paths inside an initramfs image (lsinitramfs,
    lsinitrd) or None; given only when asked, because unpacking every image is slow.
    ``items`` (parse_selection) restricts ``devices`` to the devices they select and
    ``iommu_groups`` to the groups holding them; ``kernels`` and the warnings then speak of
    those devices only.
    ``snapshot`` (snapshot.read_snapshot of the same host and bus, nothing written since; the
    whole host, so not with ``items``): the devices, IOMMU groups and loaded modules come from
    it instead of a new scan of sysfs; the rest (kernel command line, IOMMU units, no-IOMMU
    mode, CPU, boot loader, installed kernels) is read as always.  Same facts as a scan.
    """
    selection_warnings = []
    if snapshot is not None and items is None:
        devices = dict((a, dict(r)) for a, r in snapshot.devices.items())
        loaded_vfio = sorted(snapshot.vfio_modules)
        groups = devs.classify(bus, host.resolver, devices, dict((g, list(m)) for g, m in snapshot.groups.items()),
                               loaded_vfio)
        iommu = devs.iommu_facts(host.fs, groups, loaded_vfio=loaded_vfio)
    elif items is None:
        devices, groups = devs.gather(host.fs, bus, host.resolver)
        iommu = devs.iommu_facts(host.fs, groups)
    else:
        from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import selects
        present = set(host.fs.entries(bus.devices_dir()))
        hits = devs.select(host.fs, bus, present, [item.selector for item in items], selects)
        selection_warnings = ['%s selects no device on this host' % item.label
                              for item in items if not hits[item.index]]
        devices, groups = devs.gather(host.fs, bus, host.resolver, set(a for h in hits.values() for a in h))
        iommu = devs.iommu_facts(host.fs, groups, len(devs.iommu_groups_names(host.fs)))
    iommu['cpu_vendor'] = boot.cpu_vendor(host.fs.read_proc('cpuinfo'))
    iommu['vendor'] = boot.iommu_vendor(iommu['units'], iommu['cpu_vendor'])
    iommu['enable_args'] = list(boot.IOMMU_ENABLE_ARGS[iommu['vendor']])
    rootfs = getattr(host, 'rootfs_path', '/')
    kernels = boot.installed_kernels(rootfs, host.modules_dir)
    kernels = kernel_checks(kernels, host, devices, rootfs, list_initramfs)
    warnings = (host.warnings() + selection_warnings + reset_warnings(devices)
                + kernel_warnings(kernels, devices))
    return {
        'kernel_release': host.kernel_release,
        'iommu': iommu,
        'boot': boot.read_boot(host.fs, rootfs, kernels),
        'kernels': kernels,
        'devices': devices,
        'iommu_groups': groups,
        'warnings': warnings,
    }


def parse_selection(raw, bus=PCI):
    """vfio_facts' ``devices`` option: plan Items whose selectors are vfio_bind's (one rule,
    plan.parse_item), every problem reported at once.  The keys that act on a device
    (state, driver, optional, the settings) are refused: the facts only read."""
    # imported here: plan.py is only compiled when a selection is given (AnsiballZ compiles
    # every imported module_utils file on every run)
    from ansible_collections.hypervisor.vfio.plugins.module_utils import plan
    problems = plan.Problems()
    items = []
    if not isinstance(raw, list):
        problems.append('devices must be a list of PCI addresses or selector dicts')
    elif len(raw) > plan.MAX_ITEMS:
        problems.append('devices has %d entries; at most %d are accepted' % (len(raw), plan.MAX_ITEMS))
    else:
        for index, entry in enumerate(raw):
            if isinstance(entry, dict):
                acting = [k for k in plan.ITEM_KEYS if k in entry and k not in plan.SELECTOR_KEYS]
                if acting:
                    problems.append('devices[%d]: %s would change a device (hypervisor.vfio.vfio_bind); vfio_facts '
                                    'only selects, with %s' % (index, ', '.join(acting), ', '.join(plan.SELECTOR_KEYS)))
                    entry = dict((k, v) for k, v in entry.items() if k not in acting)
            items.append(plan.parse_item(index, entry, 'vfio', None, bus, problems))
    problems.raise_any()
    return items


def vfio_modules_in_use(devices):
    """{module: [addresses]} of the VFIO driver modules devices are bound to now."""
    used = {}
    for addr, rec in sorted(devices.items()):
        if rec.get('vfio_bound'):
            mod = (rec.get('driver_module') or rec.get('driver') or '').replace('-', '_')
            if mod:
                used.setdefault(mod, []).append(addr)
    return used


def kernel_checks(kernels, host, devices, rootfs, list_initramfs):
    """Per installed kernel: does it ship the VFIO modules in use, does its initramfs carry them.

    A kernel upgrade can drop a variant driver or ship the host driver in the initramfs; this
    is where that shows before a reboot into it leaves a device without its VFIO driver.
    """
    used = sorted(vfio_modules_in_use(devices))
    out = []
    for k in kernels:
        rec = dict(k)
        rec['running'] = k['release'] == host.kernel_release
        # the running kernel's tree is the resolver's (a plan has parsed it already): one parse
        names = (host.resolver.tree.shipped_names() if rec['running']
                 else module_names(host.modules_dir, k['release']))
        rec['vfio_modules'] = None if names is None else dict((m, m in names) for m in used)
        rec['missing_vfio_modules'] = None if names is None else [m for m in used if m not in names]
        rec['initramfs_checked'] = False
        rec['initramfs_vfio_modules'] = None
        rec['initramfs_files'] = None
        if list_initramfs is not None and k['initramfs']:
            listing = list_initramfs(os.path.join(rootfs, k['initramfs'].lstrip('/')))
            if listing is not None:
                inside = boot.initramfs_modules(listing)
                rec['initramfs_checked'] = True
                rec['initramfs_vfio_modules'] = dict((m, m in inside) for m in used)
                rec['initramfs_files'] = sorted(set(
                    line.split()[-1] for line in listing if OWN_FILE_MARK in line and line.split()))
        out.append(rec)
    return out


def kernel_warnings(kernels, devices):
    used = vfio_modules_in_use(devices)
    out = []
    for k in kernels:
        for m in k['missing_vfio_modules'] or ():
            out.append('kernel %s has no module %s, which drives %s now: booting that kernel leaves %s '
                       'without its VFIO driver (install the module for it, or keep the running kernel)'
                       % (k['release'], m, ', '.join(used[m]), 'them' if len(used[m]) > 1 else 'it'))
    return out


def reset_warnings(devices):
    """A device on VFIO the kernel cannot reset: a VM restart hands it over in the state the
    guest left it (the reason for out-of-tree reset modules such as vendor-reset)."""
    out = []
    for addr, rec in sorted(devices.items()):
        if not rec.get('vfio_bound') or rec.get('is_bridge'):
            continue
        reason = devs.no_reset_reason(rec)
        if reason:
            out.append('%s: %s' % (addr, reason))
    return out

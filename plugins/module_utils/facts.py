# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The facts vfio_facts returns."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI


def collect_facts(host, bus=PCI):
    devices, groups = devs.gather(host.fs, bus, host.resolver)
    return {
        'kernel_release': host.kernel_release,
        'iommu': devs.iommu_facts(host.fs, groups),
        'devices': devices,
        'iommu_groups': groups,
        'warnings': host.warnings(),
    }

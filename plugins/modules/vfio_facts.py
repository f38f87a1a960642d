#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: vfio_facts
short_description: Gather PCI, IOMMU and VFIO facts, including each device's best VFIO variant driver
version_added: 0.1.0
description:
  - Reads every PCI device from sysfs with its IDs, driver, C(driver_override), IOMMU group,
    NUMA node, SR-IOV state and network interfaces.
  - For each device, resolves the VFIO drivers that claim it the way the kernel's VFIO variant
    algorithm does, as libvirt >= 10.0 does. The device's C(modalias) prefixed with
    C(vfio_) is matched, with kmod's glob rules, against the C(alias vfio_pci:...) lines of
    C(modules.alias), the aliases of built-in drivers and the modprobe configuration; the match
    with the fewest C(*) wins.
  - Reports IOMMU groups and whether each could be handed to a virtual machine as it stands.
  - Usable as a fact gatherer in C(gather_facts) (C(facts_modules = smart, hypervisor.vfio.vfio_facts)).
  - Reads only; never writes to sysfs or loads modules.
author:
  - hypervisor.vfio contributors (@hypervisor-vfio)
extends_documentation_fragment:
  - hypervisor.vfio.host_paths
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  facts:
    support: full
  platform:
    platforms: posix
notes:
  - Attributes a kernel does not expose are returned as V(null).
  - Runs as any user; some attributes (for example C(driver_override)) need root to read on some kernels.
seealso:
  - module: hypervisor.vfio.vfio_bind
'''

EXAMPLES = r'''
- name: Gather VFIO facts
  hypervisor.vfio.vfio_facts:

- name: Show the best VFIO driver of a device
  ansible.builtin.debug:
    msg: "{{ ansible_facts.vfio.devices['0000:01:00.0'].vfio_module }}"

- name: Inspect the host through its filesystem mounted in a container
  hypervisor.vfio.vfio_facts:
    sysfs_path: /host/sys
    procfs_path: /host/proc
    modules_dir: /host/lib/modules
    modprobe_config_dirs: [/host/etc/modprobe.d, /host/lib/modprobe.d]

- name: Ask which variant drivers a newly installed kernel would choose
  hypervisor.vfio.vfio_facts:
    kernel_release: 6.12.48+deb13-amd64

# In ansible.cfg, to gather these facts with the play's facts:
# [defaults]
# facts_modules = smart, hypervisor.vfio.vfio_facts
'''

RETURN = r'''
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    vfio:
      description: PCI, IOMMU and VFIO state of the host.
      returned: always
      type: dict
      contains:
        kernel_release:
          description: Kernel release whose module files were searched.
          type: str
          sample: 6.12.48+deb12-amd64
        iommu:
          description:
            - IOMMU state. C(enabled), C(group_count), C(units) (IOMMU units in
              C(/sys/class/iommu)), C(cmdline_flags) (intel_iommu, amd_iommu, iommu,
              iommu.passthrough, iommu.strict, vfio-pci.ids, vfio_pci.ids,
              vfio.enable_unsafe_noiommu_mode, pci, pcie_acs_override; V(null) when absent,
              V(true) for a flag without a value), C(cmdline), C(noiommu_mode) and
              C(loaded_vfio_modules).
          type: dict
          sample:
            enabled: true
            group_count: 12
            units: [dmar0]
            cmdline_flags: {intel_iommu: "on", iommu: pt}
            loaded_vfio_modules: [vfio, vfio_iommu_type1, vfio_pci, vfio_pci_core]
        devices:
          description:
            - Every PCI device, keyed by full address (C(0000:01:00.0)).
            - Each has C(vendor), C(device), C(subsystem_vendor), C(subsystem_device) (4 hex digits),
              C(class) (6 hex digits), C(modalias), C(driver) and C(driver_module) (V(null) when
              unbound), C(driver_override) (V(null) when unset), C(iommu_group) (int or V(null)),
              C(numa_node), C(sriov_totalvfs), C(sriov_numvfs), C(sriov_drivers_autoprobe),
              C(physfn) (the PF of a VF), C(virtfns), C(net_interfaces), C(vfio_dev), C(is_bridge),
              C(vfio_module) (best VFIO driver module or V(null)), C(vfio_candidates) (list of
              C(module), C(pattern), C(wildcards), C(source), C(location), C(blacklisted), best first),
              C(vfio_ambiguous) (two modules tie for best) and C(vfio_bound).
          type: dict
          sample:
            "0000:00:03.0":
              vendor: 1af4
              device: "1041"
              class: "020000"
              driver: virtio-pci
              driver_override: null
              iommu_group: 3
              vfio_module: virtio_vfio_pci
              vfio_ambiguous: false
              vfio_bound: false
              vfio_candidates:
                - {module: virtio_vfio_pci, pattern: "vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i*",
                   wildcards: 5, source: modules.alias}
                - {module: vfio_pci, pattern: "vfio_pci:v*d*sv*sd*bc*sc*i*", wildcards: 7,
                   source: modules.alias}
        iommu_groups:
          description:
            - IOMMU groups keyed by number; C(devices) lists the members and C(viable) tells
              whether every non-bridge member is unbound or on a VFIO driver (or pci-stub).
          type: dict
          sample: {"3": {devices: ["0000:00:03.0"], viable: false}}
        warnings:
          description: Problems that limit the facts, such as a missing modules.alias.
          type: list
          elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hypervisor.vfio.plugins.module_utils.common import (
    HostContext, host_path_argument_spec)
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts


def build_module():
    return AnsibleModule(argument_spec=host_path_argument_spec(), supports_check_mode=True)


def main():
    module = build_module()
    try:
        host = HostContext(module.params)
        facts = collect_facts(host)
    except (ValueError, OSError) as e:
        module.fail_json(msg='vfio_facts: %s' % e)
    for warning in facts['warnings']:
        module.warn(warning)
    module.exit_json(changed=False, ansible_facts={'vfio': facts})


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: vfio_sriov
short_description: Create SR-IOV virtual functions on PCI physical functions, safely and idempotently
version_added: 0.1.0
description:
  - Sets C(sriov_drivers_autoprobe) first (off by default, so host drivers do not grab the new
    virtual functions before they are bound to VFIO), then C(sriov_numvfs), then waits (bounded)
    until every VF is a PCI device, and re-reads both attributes to verify.
  - Everything is planned before the first write; an unknown PF, a device that is not an SR-IOV
    physical function, a count above C(sriov_totalvfs), or a change of an existing nonzero count
    without O(force) fails the task before anything changes.
  - A PF already as asked is not touched, so re-runs never destroy VFs that VMs use.
  - The kernel changes a nonzero count only through 0, which destroys the existing VFs (and unplugs
    them from any VM); that needs O(force).
  - When a step fails, every PF this call changed is put back to its previous count and
    C(sriov_drivers_autoprobe) (VFs this call created are removed), and the task fails naming the
    PF, the step, the kernel's error and what to do.
  - Every write is bounded by O(timeout); runs on one host are serialized by the lock file
    M(hypervisor.vfio.vfio_bind) uses.
author:
  - hypervisor.vfio contributors (@hypervisor-vfio)
extends_documentation_fragment:
  - hypervisor.vfio.host_paths
  - hypervisor.vfio.host_paths.lock
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Returns the plan (per PF action and reason) without writing to sysfs.
  diff_mode:
    support: full
    details: Shows each PF's C(sriov_numvfs) and C(sriov_drivers_autoprobe) before and after.
  platform:
    platforms: posix
options:
  pfs:
    description:
      - The physical functions and the VFs each must have, in one call.
    type: list
    elements: dict
    required: true
    suboptions:
      pf:
        description: PCI address of the physical function (V(0000:3b:00.0), or V(3b:00.0) meaning domain 0000; quote it in YAML).
        type: str
        required: true
      numvfs:
        description: Number of VFs it must have; V(0) removes them.
        type: int
        required: true
      drivers_autoprobe:
        description:
          - Value of C(sriov_drivers_autoprobe), written before the count.
          - V(false) keeps host drivers (for example C(igbvf), C(iavf)) from binding the new VFs, so they
            can go to VFIO without being taken from the host first.
        type: bool
        default: false
  force:
    description:
      - Allow changing a nonzero VF count, which destroys the existing VFs first. B(Dangerous) when VMs use them.
    type: bool
    default: false
  timeout:
    description: Seconds each sysfs write may take (creating VFs makes the PF driver reset them, which can take a while).
    type: int
    default: 30
  wait_timeout:
    description: Seconds to wait, after the count is written, for every VF to appear as a PCI device.
    type: int
    default: 30
notes:
  - Needs root on the managed host.
  - A PF's VF count only exists while its host driver is loaded (for example C(igb), C(ixgbe), C(ice)).
seealso:
  - module: hypervisor.vfio.vfio_bind
  - module: hypervisor.vfio.vfio_facts
  - name: Linux PCI SR-IOV documentation
    description: The kernel's description of C(sriov_numvfs) and C(sriov_drivers_autoprobe).
    link: https://docs.kernel.org/PCI/pci-iov-howto.html
'''

EXAMPLES = r'''
- name: Create four VFs on a NIC, with host drivers kept off them
  hypervisor.vfio.vfio_sriov:
    pfs:
      - pf: "0000:3b:00.0"
        numvfs: 4

- name: Then bind every VF of that PF to VFIO
  hypervisor.vfio.vfio_bind:
    devices:
      - physfn: "0000:3b:00.0"

- name: Preview a change of the count (it destroys the existing VFs, hence force)
  hypervisor.vfio.vfio_sriov:
    pfs:
      - pf: "0000:3b:00.0"
        numvfs: 8
    force: true
  check_mode: true
  diff: true

- name: Remove the VFs
  hypervisor.vfio.vfio_sriov:
    pfs:
      - pf: "0000:3b:00.0"
        numvfs: 0
    force: true
'''

RETURN = r'''
desired:
  description:
    - The PFs as validated (C(pf) a full address, C(numvfs), C(drivers_autoprobe)), in the form the role
      persists for the boot (C(sriov) of C(/etc/hypervisor-vfio/state.json)).
  returned: success
  type: dict
  sample: {sriov: [{pf: "0000:3b:00.0", numvfs: 4, drivers_autoprobe: false}]}
pfs:
  description: One entry per physical function.
  returned: always
  type: list
  elements: dict
  contains:
    pf:
      description: Full PCI address of the PF.
      type: str
      sample: "0000:3b:00.0"
    action:
      description: V(none), V(create), V(resize) (through 0, with O(force)), V(remove) or V(autoprobe) (only
        C(sriov_drivers_autoprobe) changes).
      type: str
      sample: create
    reason:
      description: Why this action.
      type: str
    numvfs_before:
      description: C(sriov_numvfs) before the call.
      type: int
    numvfs_after:
      description: C(sriov_numvfs) asked for.
      type: int
    totalvfs:
      description: C(sriov_totalvfs) of the PF.
      type: int
    autoprobe_before:
      description: C(sriov_drivers_autoprobe) before the call.
      type: bool
    autoprobe_after:
      description: C(sriov_drivers_autoprobe) asked for.
      type: bool
    vfs:
      description: PCI addresses of the PF's VFs after the call (before it, in check mode).
      type: list
      elements: str
      sample: ["0000:3c:10.0", "0000:3c:10.1"]
    result:
      description: V(unchanged), V(planned) (check mode), V(changed), V(rolled_back), V(rollback_failed), V(pending).
      type: str
failure:
  description: On failure after a write, the PF, step, kernel error and what was put back.
  returned: failure
  type: dict
errors:
  description: On refusal before any write, every problem found.
  returned: failure
  type: list
  elements: str
ansible_facts:
  description: The host's PCI, IOMMU and VFIO facts read after the call, as M(hypervisor.vfio.vfio_facts)
    returns them (see its C(vfio) return value).
  returned: success, when O(return_facts=true)
  type: dict
  contains:
    vfio:
      description: Kernel release, IOMMU state, devices and IOMMU groups.
      type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hypervisor.vfio.plugins.module_utils.common import (
    HostContext, engine_argument_spec, run_module)
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts
from ansible_collections.hypervisor.vfio.plugins.module_utils.sriov import run_sriov


def build_module():
    spec = engine_argument_spec(
        pfs=dict(type='list', elements='dict', required=True, options=dict(
            pf=dict(type='str', required=True),
            numvfs=dict(type='int', required=True),
            drivers_autoprobe=dict(type='bool', default=False),
        )),
        force=dict(type='bool', default=False),
        timeout=dict(type='int', default=30),
        wait_timeout=dict(type='int', default=30),
    )
    return AnsibleModule(argument_spec=spec, supports_check_mode=True)


def main():
    module = build_module()
    hosts = []  # the HostContext work() builds (a bad path option is refused there), for finish()

    def work():
        hosts.append(HostContext(module.params))
        return run_sriov(module.params, hosts[0].fs, check_mode=module.check_mode)

    def finish(result):
        if module.params['return_facts']:
            result['ansible_facts'] = {'vfio': collect_facts(hosts[0])}
    run_module(module, 'vfio_sriov', work, finish)


if __name__ == '__main__':
    main()

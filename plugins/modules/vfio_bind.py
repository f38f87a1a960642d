#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: vfio_bind
short_description: Bind PCI devices to their best VFIO driver (or give them back to the host), safely and idempotently
version_added: 0.1.0
description:
  - Carries out the kernel's VFIO variant-driver algorithm for a whole list of devices in one call.
    C(modprobe) the chosen module by name, write its driver name to C(driver_override), unbind the
    device from its current driver, bind it, and re-read the C(driver) link to verify.
  - The VFIO driver is the one whose C(alias vfio_pci:...) pattern matches C(vfio_) + the device's
    C(modalias) with the fewest C(*) (for example C(virtio_vfio_pci) over C(vfio_pci) for a modern
    virtio-net), as M(hypervisor.vfio.vfio_facts) reports it; O(driver) pins another one.
  - Everything is planned before the first write; any invalid entry, unknown device, non-viable IOMMU
    group or device in use by the host fails the task before anything changes.
  - A device already on its target driver with C(driver_override) set is not touched, so re-runs
    never bounce running virtual machines.
  - When a device does not end on its target, it and every device this call already changed are put
    back on their previous driver and C(driver_override), and the task fails naming the device, the
    step, the kernel's message and what to do.
  - Runs on one host are serialized by a lock file.
author:
  - hypervisor.vfio contributors (@hypervisor-vfio)
extends_documentation_fragment:
  - hypervisor.vfio.host_paths
  - hypervisor.vfio.host_paths.lock
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Returns the plan (per device action and reason) without loading modules or writing to sysfs.
  diff_mode:
    support: full
    details: Shows each device's driver and C(driver_override) before and after, and the reset and power settings an entry changes.
  platform:
    platforms: posix
options:
  devices:
    description:
      - The devices to act on, in one call.
      - Each entry is a PCI address (V(0000:01:00.0), or V(01:00.0) meaning domain 0000; quote it in YAML)
        or a selector dict.
      - A selector selects every device whose attributes equal all the given keys
        C(address), C(vendor), C(device), C(subsystem_vendor), C(subsystem_device) (hex ids, quote them),
        C(class) (hex prefix of the 6-digit class, for example V(0200) for Ethernet), C(physfn)
        (every virtual function of that physical function), C(iommu_group) (int), C(current_driver)
        (the driver bound now).
      - A selector entry may also carry C(state) and C(driver) for its devices, and C(optional) (bool)
        so that matching nothing is not an error.
      - "Reset and power settings, per entry, written after the binding and read back (check mode and
        diff show them; a device already set is not touched): C(reset_method), the reset methods the
        kernel may use, in the order it tries them (a list or a string separated by spaces, among V(flr),
        V(af_flr), V(pm), V(bus), V(cxl_bus), V(device_specific); the kernel refuses a method the device
        does not support, and the task then fails naming it), and C(d3cold_allowed) (bool: whether the
        device may enter D3cold). An attribute the kernel does not show for the device (C(reset_method)
        needs kernel 5.15+) is an error before any write."
      - A device handed to VFIO that the kernel cannot reset (no reset method) is bound with a warning
        (a VM restart cannot reset it).
      - Addresses, ids and classes must be strings. YAML 1.1 reads an unquoted V(01:00.0) as the number
        60.0, V(0x10de) as 4318 and V(0300) as 192; such a number (or a boolean) is refused with the
        value to quote, never converted. Every problem of the request is reported at once.
    type: list
    elements: raw
    required: true
  state:
    description:
      - V(vfio) binds to the best (or pinned) VFIO driver.
      - V(host) gives devices back to the host, clears C(driver_override), unbinds from the VFIO driver,
        loads and probes the host drivers that match the device, and verifies that a non-VFIO driver
        took it (or warns that the kernel has none for it).
    type: str
    choices: [vfio, host]
    default: vfio
  driver:
    description:
      - Pin a VFIO module or driver name (for example V(vfio_pci) or V(vfio-pci)) instead of the
        alias search, for devices whose entry has no C(driver) of its own.
      - The escape hatch for ambiguous or unwanted variants, like libvirt's C(<driver model=...>).
      - A blacklisted module is refused.
      - It must be a VFIO driver, V(vfio_pci) or a variant built on C(vfio_pci_core) (listed as a dependency
        in C(modules.dep), or holding it in C(/sys/module) when loaded). A host driver such as V(nouveau) or
        V(e1000e) is refused, even with O(force); O(state=host) gives a device to its host driver.
    type: str
  consumer:
    description:
      - The software that will use the devices, whose rules the binding then follows (before any write).
      - V(kubevirt) pins every VFIO entry to C(vfio_pci) and refuses another pinned driver. KubeVirt's device
        plugin offers a PCI device only while it is bound to C(vfio-pci), so a device on a VFIO variant
        driver (for example C(mlx5_vfio_pci)) would be invisible to C(permittedHostDevices).
      - V(proxmox) pins C(vfio_pci) too. Proxmox VE binds a passthrough device to C(vfio-pci) when the VM
        starts, which fails for a device held on a variant driver by C(driver_override).
      - V(libvirt) and V(nova) accept any VFIO driver (variant drivers included) and change nothing; give the
        devices to them with C(managed='no') (filters P(hypervisor.vfio.libvirt_hostdev#filter) and
        P(hypervisor.vfio.nova_pci#filter)), since this collection binds them ahead of time.
      - The result's RV(consumer) says what was pinned and why.
    type: str
    choices: [kubevirt, libvirt, nova, proxmox]
    version_added: 1.0.0
  iommu_group:
    description:
      - What to do when binding would leave a device's IOMMU group non-viable (another endpoint of
        the group on a host driver).
      - V(strict) fails before any write, naming the other members.
      - V(all) also binds every non-bridge member of the group to its best VFIO driver.
      - V(ignore) proceeds and warns.
      - Whatever the policy, a device with no IOMMU group (the IOMMU is off or does not cover it) is
        refused before any write when it would go to a VFIO driver (the kernel's probe would fail
        with -22), unless vfio's C(enable_unsafe_noiommu_mode) is on.
    type: str
    choices: [strict, all, ignore]
    default: strict
  force:
    description:
      - Bypass the in-use guards. B(Dangerous.)
      - Without it, a device is refused when one of its network interfaces (or a bond, bridge or VLAN on
        top of it) carries the default route or an IP address; when one of its disks is mounted, holds
        swap or is used by LVM/md/dm; and, when moving it away from VFIO, when a process (a VM) holds its
        C(/dev/vfio) group open.
      - GPUs the host uses are refused too, naming the process (pid and command) - when a process holds one
        of its DRM nodes (C(/dev/dri/cardN), C(/dev/dri/renderDN)) or, on the C(nvidia) driver, its
        C(/dev/nvidiaN), C(/dev/nvidiactl) or C(/dev/nvidia-modeset) open; and when it is the boot VGA
        device (C(boot_vga)) and a firmware framebuffer (C(BOOTFB), C(efifb), C(vesafb),
        C(simple-framebuffer) in C(/proc/iomem)) lives in one of its BARs, the host console.
      - PCI bridges are always refused, and so is a NIC whose interface (or a bond, bridge or VLAN on top
        of it) carries a live SSH session into the host, force or not, so that no run cuts its operator off;
        make that change from the console. Sessions are found in the kernel (TCP connections held by
        C(sshd) processes, in C(/proc)), so this holds under C(become) too, where C(SSH_CONNECTION) is gone.
    type: bool
    default: false
  timeout:
    description:
      - Seconds each sysfs write that can block (C(unbind), C(bind), C(drivers_probe)) may take.
      - Unbinding a device a VM holds blocks in the kernel until the VM lets go; the task then fails
        within this bound and says so, and a later run converges.
    type: int
    default: 10
  journal_file:
    description:
      - The intent journal. Before its first device write, a run records there every device's driver
        and C(driver_override) before and after, then each step before taking it, and removes the file
        when it is over. The file is written atomically (temporary file, C(fsync), rename), mode 0600 in a
        directory created 0700, never through a symbolic link.
      - A run killed between two kernel steps (SIGKILL, the OOM killer) leaves it behind. The next run
        reports it (C(journal) in the result and a warning) and repairs before it plans anything new
        (in check mode it only reports). A device already on the interrupted run's target is kept, one
        still as it was is left alone, any other is rolled back to the driver and C(driver_override) the
        journal recorded. If a device cannot be repaired the task fails and the journal stays.
      - A failed run that rolled back cleanly removes it too; one that left a write pending in the kernel
        or could not roll back keeps it, so the next run repairs first.
    type: path
    default: /run/hypervisor-vfio/journal.json
notes:
  - Needs root on the managed host.
  - Modules loaded by a failed run stay loaded; they do not hold any device.
seealso:
  - module: hypervisor.vfio.vfio_facts
  - name: Linux VFIO documentation
    description: The kernel's description of VFIO and IOMMU groups.
    link: https://docs.kernel.org/driver-api/vfio.html
'''

EXAMPLES = r'''
- name: Bind a NIC and a GPU (with its audio function) to their best VFIO drivers
  hypervisor.vfio.vfio_bind:
    devices:
      - "0000:3b:00.0"
      - "0000:af:00.0"
      - "0000:af:00.1"

- name: Bind every virtual function of a PF, pinning vfio-pci
  hypervisor.vfio.vfio_bind:
    devices:
      - physfn: "0000:3b:00.0"
    driver: vfio_pci

- name: Bind all Mellanox ConnectX-7 devices and every other member of their IOMMU groups
  hypervisor.vfio.vfio_bind:
    devices:
      - vendor: "15b3"
        device: "1021"
        optional: true
    iommu_group: all

- name: Bind a GPU, let the kernel reset it only by a bus reset, and keep it out of D3cold
  hypervisor.vfio.vfio_bind:
    devices:
      - address: "0000:41:00.0"
        reset_method: [bus]
        d3cold_allowed: false

- name: Mixed intents in one call
  hypervisor.vfio.vfio_bind:
    devices:
      - "0000:01:00.0"
      - address: "0000:02:00.0"
        driver: vfio_pci
      - address: "0000:03:00.0"
        state: host

- name: Bind the GPUs for KubeVirt (pinned to vfio-pci, which KubeVirt's device plugin needs)
  hypervisor.vfio.vfio_bind:
    devices:
      - vendor: "10de"
        class: "0302"
    consumer: kubevirt

- name: Preview what would change
  hypervisor.vfio.vfio_bind:
    devices: ["0000:01:00.0"]
  check_mode: true
  diff: true
  register: plan

- name: Give the devices back to the host drivers
  hypervisor.vfio.vfio_bind:
    devices: ["0000:01:00.0", "0000:02:00.0"]
    state: host

- name: Bind, and refresh the vfio facts in the same call
  hypervisor.vfio.vfio_bind:
    devices: ["0000:01:00.0"]
    return_facts: true

- name: Check the device from the refreshed facts
  ansible.builtin.assert:
    that: ansible_facts.vfio.devices['0000:01:00.0'].vfio_bound
'''

RETURN = r'''
desired:
  description:
    - The desired state this call leaves, in the form the role persists for the boot
      (C(/etc/hypervisor-vfio/state.json), applied by C(vfio-passthrough apply)).
    - C(devices) lists every device the call leaves (or, in check mode, would leave) on a VFIO driver, with
      its C(vendor) and C(device) IDs and C(driver) set only where its entry pinned one (otherwise the best
      VFIO variant is resolved again for the kernel that boots).
  returned: success
  type: dict
  sample: {devices: [{address: "0000:00:03.0", vendor: "1af4", device: "1041", driver: null}]}
devices:
  description: One entry per device acted on (including group members added by O(iommu_group=all)).
  returned: always
  type: list
  elements: dict
  contains:
    address:
      description: Full PCI address.
      type: str
      sample: "0000:00:03.0"
    state:
      description: The requested state.
      type: str
      sample: vfio
    action:
      description: V(none), V(bind) (was unbound), V(rebind) (was on another driver), V(override)
        (already bound to the target, only C(driver_override) set), V(restore) (back to the host),
        V(clear_override).
      type: str
      sample: rebind
    reason:
      description: Why this action.
      type: str
      sample: moving from virtio-pci to virtio_vfio_pci
    module:
      description: The VFIO module chosen (V(null) for state V(host)).
      type: str
      sample: virtio_vfio_pci
    candidates:
      description: Every matching VFIO alias, best first (C(module), C(pattern), C(wildcards), C(source),
        C(location), C(blacklisted)).
      type: list
      elements: dict
    ambiguous:
      description: Two different modules tie for best; the first in file order was taken.
      type: bool
    driver_before:
      description: Driver bound before the call (V(null) when unbound).
      type: str
    driver_after:
      description: Driver bound after the call (planned value in check mode).
      type: str
    override_before:
      description: C(driver_override) before the call (V(null) when unset).
      type: str
    override_after:
      description: C(driver_override) after the call.
      type: str
    iommu_group:
      description: IOMMU group number.
      type: int
    guards:
      description: In-use reasons found (non-empty only when O(force) overrode them).
      type: list
      elements: str
    result:
      description: V(unchanged), V(planned) (check mode), V(changed), V(rolled_back), V(rollback_failed), V(pending).
      type: str
    warnings:
      description: Warnings for this device (ambiguous variant, skipped blacklisted candidate, forced guard,
        no reset method).
      type: list
      elements: str
    settings:
      description: The reset and power settings this call changes (or would change, in check mode).
      type: list
      elements: dict
      sample: [{attribute: reset_method, before: "flr bus", after: "bus"}]
      contains:
        attribute:
          description: V(reset_method) or V(d3cold_allowed).
          type: str
        before:
          description: The attribute as the kernel showed it (reset methods separated by spaces, V(1) or V(0)).
          type: str
        after:
          description: The value written.
          type: str
modules_loaded:
  description: Modules this call loaded.
  returned: always
  type: list
  elements: str
  sample: [virtio_vfio_pci]
consumer:
  description: With O(consumer), the consumer's rules as applied to this call.
  returned: success, when O(consumer) is given
  type: dict
  version_added: 1.0.0
  contains:
    name:
      description: The consumer.
      type: str
      sample: kubevirt
    driver:
      description: The driver the consumer pins (V(null) when any VFIO driver will do).
      type: str
      sample: vfio_pci
    managed:
      description: The C(managed) value the consumer's configuration must use for these devices (V(null) when
        not applicable).
      type: str
      sample: "no"
    reason:
      description: Why.
      type: str
    pinned:
      description: The entries of O(devices) the consumer pinned to RV(consumer.driver).
      type: list
      elements: str
      sample: ["devices[0] (0000:3b:00.0)"]
failure:
  description: On failure after a write, the device, step, kernel error, kernel log lines, and what was rolled back.
  returned: failure
  type: dict
journal:
  description:
    - Present when a run interrupted before it finished left O(journal_file) behind; what this run found and
      did about it before planning.
    - C(path), C(pid) and C(started) of the interrupted run, C(problems), and C(devices), each with C(address),
      C(action), the last C(step) recorded, C(driver_before) and C(override_before) as recorded, C(driver_found)
      and C(override_found) (after the repair), and C(decision), one of V(untouched), V(keep) (already on the
      interrupted run's target), V(rolled_back), V(rollback) (in check mode, would roll back), V(rollback_failed),
      V(rollback_refused) (a process holds its C(/dev/vfio) file), V(gone) (the device is no longer there).
  returned: when a journal was left
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

from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import run_bind
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import (
    HostContext, engine_argument_spec, run_module)
from ansible_collections.hypervisor.vfio.plugins.module_utils.consumers import CONSUMERS, constrain_params


def build_module():
    spec = engine_argument_spec(
        devices=dict(type='list', elements='raw', required=True),
        state=dict(type='str', choices=['vfio', 'host'], default='vfio'),
        driver=dict(type='str'),
        iommu_group=dict(type='str', choices=['strict', 'all', 'ignore'], default='strict'),
        force=dict(type='bool', default=False),
        timeout=dict(type='int', default=10),
        journal_file=dict(type='path', default='/run/hypervisor-vfio/journal.json'),
        consumer=dict(type='str', choices=list(CONSUMERS)),
    )
    return AnsibleModule(argument_spec=spec, supports_check_mode=True)


def main():
    module = build_module()

    def work():
        params, consumer = constrain_params(module.params)  # the consumer's pins, before anything is read
        result = run_bind(params, HostContext(params), module.run_command, check_mode=module.check_mode)
        if consumer is not None:
            result['consumer'] = consumer
        return result
    run_module(module, 'vfio_bind', work)


if __name__ == '__main__':
    main()

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
  - Tells which boot loader started the running kernel (from the EFI variables systemd-boot sets
    and the C(BOOT_IMAGE=) GRUB puts on the command line, not from the tools installed) and how
    this collection would set its kernel arguments (C(boot)).
  - Lists every installed kernel with its image and initramfs, and whether it ships the VFIO
    modules the devices use now (C(kernels)); with O(initramfs_contents), also what each
    initramfs carries.
  - Reports each device's reset methods and power state, and warns about a device on VFIO the
    kernel cannot reset.
  - Reads only; never writes to sysfs or loads modules.
options:
  devices:
    description:
      - Report only these devices; omitted, every device of the host.
      - Each entry is a PCI address (V(0000:01:00.0), or V(01:00.0) meaning domain 0000; quote it in YAML)
        or a selector dict with the keys of M(hypervisor.vfio.vfio_bind)'s selectors, by the same rule
        (a device is selected when its attributes equal all the keys given) - C(address), C(vendor),
        C(device), C(subsystem_vendor), C(subsystem_device) (hex ids, quote them), C(class) (hex prefix of
        the 6-digit class, for example V(0200) for Ethernet), C(physfn), C(iommu_group) (int),
        C(current_driver). The keys that change a device (C(state), C(driver), C(optional), C(reset_method),
        C(d3cold_allowed)) are refused.
      - With a selection, C(devices) holds the selected devices and C(iommu_groups) the groups that hold
        them (their viability is decided on every member, read for it); C(kernels) checks the VFIO modules
        of the selected devices, and the warnings are about them; C(iommu) still describes the whole host.
        A selected device's record is the one the whole-host run returns.
      - Per device only what the selectors look at is read (nothing more for addresses, C(modalias) for the
        ids and the class), then the selected devices in full; the cost of a run follows the devices
        reported.
      - An entry that selects no device is a warning, not an error.
    type: list
    elements: raw
  initramfs_contents:
    description:
      - List every installed kernel's initramfs (C(lsinitramfs) on Debian/Ubuntu, C(lsinitrd) with
        dracut) to report which VFIO modules and files of this collection it carries.
      - Slow (each image is unpacked, seconds per kernel), so off by default.
    type: bool
    default: false
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

- name: Read only the GPUs of one model and one NIC (a run then costs what these devices cost)
  hypervisor.vfio.vfio_facts:
    devices:
      - {vendor: "10de", device: "2204"}
      - "0000:3b:00.0"

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
            - C(cpu_vendor) (V(intel), V(amd) or V(other), from C(vendor_id) in C(/proc/cpuinfo)), C(vendor)
              (whose IOMMU - V(intel) for C(dmar) units, V(amd) for C(ivhd) units, the CPU vendor while the
              IOMMU is off) and C(enable_args), the kernel arguments that switch that IOMMU on
              (V([intel_iommu=on]); none for AMD-Vi, which the kernel enables whenever the firmware describes it).
          type: dict
          sample:
            enabled: true
            cpu_vendor: intel
            vendor: intel
            enable_args: [intel_iommu=on]
            group_count: 12
            units: [dmar0]
            cmdline_flags: {intel_iommu: "on", iommu: pt}
            loaded_vfio_modules: [vfio, vfio_iommu_type1, vfio_pci, vfio_pci_core]
        boot:
          description:
            - How the running kernel was started and how its arguments are set.
            - C(loader) is V(grub), V(systemd-boot), V(other) (sets the EFI variable LoaderInfo but is not
              systemd-boot) or V(none) (no boot loader left a trace - QEMU C(-kernel), kexec, PXE, an EFI
              stub entry); C(evidence) says what it was decided from; C(loader_info) and C(entry_selected)
              are the EFI variables LoaderInfo and LoaderEntrySelected; C(firmware) is V(uefi) or V(bios).
            - C(method) is how this collection sets kernel arguments for that loader, V(null) when it does
              not manage it (C(method_reason) says why) - V(grub_dropin) (C(/etc/default/grub.d) and
              C(update-grub)), V(grubby) (RHEL family), V(kernel_install) (C(/etc/kernel/cmdline) and
              C(kernel-install add) per kernel), V(proxmox_boot_tool) (C(/etc/kernel/cmdline) and
              C(proxmox-boot-tool refresh)). C(apply_commands) are the commands that make the loader take
              a changed configuration.
            - C(cmdline_args) are the running kernel's arguments; C(kernel_cmdline_file_args) those of
              C(/etc/kernel/cmdline) (V(null) when absent) and C(kernel_cmdline_base) what that file starts
              from (its own arguments, else the running ones without C(BOOT_IMAGE=) and C(initrd=)).
            - C(entries) are the Boot Loader Specification entries found (C(id), C(path), C(title),
              C(version), C(linux), C(efi), C(options) as a list with EL8's C($kernelopts) expanded from
              grubenv, C(selected)); C(tools) maps update-grub, grub2-mkconfig, grubby, kernel-install,
              bootctl, proxmox-boot-tool and the initramfs generators update-initramfs and dracut to their path
              or V(null); C(proxmox_boot) tells whether
              C(/etc/kernel/proxmox-boot-uuids) exists.
          type: dict
          sample:
            loader: none
            method: null
            method_reason: no boot loader configuration sets this kernel's command line
            firmware: bios
            cmdline_args: [console=ttyS0, intel_iommu=on]
        kernels:
          description:
            - Every kernel with a folder in O(modules_dir), for kernel upgrades - C(release), C(running),
              C(image), C(initramfs) (paths or V(null)), C(modules_alias) (its modules.alias exists),
              C(vfio_modules) (for each VFIO module a device is bound to now, whether this kernel ships it;
              V(null) without modules.dep) and C(missing_vfio_modules).
            - With O(initramfs_contents) - C(initramfs_checked), C(initramfs_vfio_modules) (the same
              modules, whether the image carries them) and C(initramfs_files) (files of this collection
              inside, such as its udev rule); V(null) otherwise.
          type: list
          elements: dict
          sample:
            - release: 6.12.48+deb12-amd64
              running: true
              image: /boot/vmlinuz-6.12.48+deb12-amd64
              initramfs: /boot/initrd.img-6.12.48+deb12-amd64
              vfio_modules: {vfio_pci: true, virtio_vfio_pci: true}
              missing_vfio_modules: []
        devices:
          description:
            - Every PCI device (with O(devices), the selected ones), keyed by full address (C(0000:01:00.0)).
            - Each has C(vendor), C(device), C(subsystem_vendor), C(subsystem_device) (4 hex digits),
              C(class) (6 hex digits), C(modalias), C(driver) and C(driver_module) (V(null) when
              unbound), C(driver_override) (V(null) when unset), C(iommu_group) (int or V(null)),
              C(numa_node), C(sriov_totalvfs), C(sriov_numvfs), C(sriov_drivers_autoprobe),
              C(physfn) (the PF of a VF), C(virtfns), C(net_interfaces), C(vfio_dev), C(is_bridge),
              C(vfio_module) (best VFIO driver module or V(null)), C(vfio_candidates) (list of
              C(module), C(pattern), C(wildcards), C(source), C(location), C(blacklisted), best first),
              C(vfio_ambiguous) (two modules tie for best) and C(vfio_bound).
            - Reset and power - C(reset_method) (the enabled reset methods in the order the kernel tries
              them, such as C([flr, bus]); V([]) when all were disabled; V(null) when the kernel shows no
              such attribute), C(reset_supported) (the C(reset) attribute exists, so the kernel found a
              method when it added the device), C(d3cold_allowed), C(power_state) (C(D0), C(D3hot)...)
              and C(boot_vga) (the firmware's boot display; V(null) for non-VGA devices).
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
            - IOMMU groups (with O(devices), those holding a selected device) keyed by number; C(devices) lists
              the members and C(viable) tells
              whether every non-bridge member is unbound or on a VFIO driver (or pci-stub).
            - C(blockers) lists the members that make the group non-viable (a non-bridge member on a host
              driver), by the same rule M(hypervisor.vfio.vfio_bind) plans with; empty when C(viable).
          type: dict
          sample: {"3": {devices: ["0000:00:03.0", "0000:00:03.1"], viable: false, blockers: ["0000:00:03.1"]}}
        warnings:
          description: Problems that limit the facts, such as a missing modules.alias.
          type: list
          elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hypervisor.vfio.plugins.module_utils.common import (
    HostContext, host_path_argument_spec)
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts, parse_selection


def build_module():
    spec = host_path_argument_spec()
    spec['devices'] = dict(type='list', elements='raw')
    spec['initramfs_contents'] = dict(type='bool', default=False)
    return AnsibleModule(argument_spec=spec, supports_check_mode=True)


def initramfs_lister(module):
    """lsinitramfs (initramfs-tools) or lsinitrd (dracut): the paths inside an image, or None."""
    path = module.get_bin_path('lsinitramfs') or module.get_bin_path('lsinitrd')
    if not path:
        module.warn('initramfs_contents: neither lsinitramfs nor lsinitrd is installed')
        return None

    def list_image(image):
        rc, out, err = module.run_command([path, image])
        if rc != 0:
            module.warn('%s %s failed (%d): %s' % (path, image, rc, err.strip()))
            return None
        return out.splitlines()
    return list_image


def main():
    module = build_module()
    try:
        items = None if module.params['devices'] is None else parse_selection(module.params['devices'])
        host = HostContext(module.params)
        lister = initramfs_lister(module) if module.params['initramfs_contents'] else None
        facts = collect_facts(host, list_initramfs=lister, items=items)
    except (ValueError, OSError) as e:
        module.fail_json(msg='vfio_facts: %s' % e)
    for warning in facts['warnings']:
        module.warn(warning)
    module.exit_json(changed=False, ansible_facts={'vfio': facts})


if __name__ == '__main__':
    main()

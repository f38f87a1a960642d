#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: vfio_persist
short_description: Make VFIO bindings and SR-IOV VFs survive a reboot, from what vfio_bind and vfio_sriov did
version_added: 1.1.0
description:
  - Writes, in one run, every file that makes the host come back with its devices on VFIO after a reboot,
    from the result of M(hypervisor.vfio.vfio_bind) (O(bind)) and the result of M(hypervisor.vfio.vfio_sriov)
    (O(sriov)), each taken as registered. The role P(hypervisor.vfio.passthrough#role) uses it.
  - "For the devices meant for VFIO: the udev rule C(/etc/udev/rules.d/40-hypervisor-vfio.rules) that sets
    C(driver_override) as each device appears (matching its address, vendor and device IDs) and loads its VFIO
    module, the module list C(/etc/modules-load.d/hypervisor-vfio.conf), and for the initramfs the marked block
    in C(/etc/initramfs-tools/modules) (O(initramfs=update-initramfs)) or
    C(/etc/dracut.conf.d/50-hypervisor-vfio.conf) (O(initramfs=dracut))."
  - "With O(boot_reapply): the desired state C(/etc/hypervisor-vfio/state.json) (vfio_bind's C(desired) devices and
    O(sriov)), the command C(/usr/local/sbin/vfio-passthrough) that runs the collection's engine from
    C(/usr/local/lib/hypervisor-vfio/engine.zip) (installed by the caller, see the lookup
    P(hypervisor.vfio.engine_archive#lookup)), the boot unit C(/etc/systemd/system/hypervisor-vfio-reapply.service),
    enabled by the link C(systemctl enable) makes, and a kernel hook (C(/etc/kernel/postinst.d) when the host has
    that folder, else C(/etc/kernel/install.d)) that checks a newly installed kernel for the VFIO drivers."
  - Devices no longer meant for VFIO drop out of every file; when none is left the files are removed, and the boot
    unit, the desired state and the engine too when no SR-IOV PF is left either.
  - Every file is planned before the first write and written atomically (a temporary file in its folder, fsync,
    rename). When a write fails, every file this run changed is put back and the task fails naming the file.
  - What must follow is returned, not done (RV(udev_reload), RV(initramfs_regenerate)), except systemd's
    C(daemon-reload), which the module runs when the boot unit changed on a host booted with systemd.
  - The files are written below O(rootfs_path) (the host's root mounted in a container, or a fake tree in tests).
author:
  - hypervisor.vfio contributors (@hypervisor-vfio)
extends_documentation_fragment:
  - hypervisor.vfio.host_paths
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Returns the files that would be written, linked or removed, and writes nothing.
  diff_mode:
    support: full
    details: Shows each file's content before and after.
  platform:
    platforms: posix
options:
  bind:
    description:
      - The result of M(hypervisor.vfio.vfio_bind) as registered (or a dict with its C(devices) and C(desired)).
      - The devices whose C(state) is V(vfio) are persisted with the C(driver_after) and C(module) vfio_bind chose;
        C(desired.devices) becomes the devices of the desired state.
      - An empty dict (the default) persists no device.
    type: dict
    default: {}
  sriov:
    description:
      - The result of M(hypervisor.vfio.vfio_sriov) as registered, taken as it is - its C(desired.sriov) are the PFs
        whose VFs are made again at boot. A skipped vfio_sriov task (no SR-IOV asked, or a restore) persists no PF;
        the result of a failed run is refused.
      - Or a list of PFs in the form of vfio_sriov's O(hypervisor.vfio.vfio_sriov#module:pfs) (its C(desired.sriov)
        is one), validated the same way (C(pf) a PCI address, C(numvfs) from 0 to 4096, C(drivers_autoprobe) a
        boolean, default false).
      - An empty list (the default) persists no PF.
      - Bad input fails before anything is read or written, naming the entry.
    type: raw
    default: []
  iommu_group:
    description: The IOMMU group policy the boot applies the devices with (see M(hypervisor.vfio.vfio_bind)).
    type: str
    choices: [strict, all, ignore]
    default: strict
  timeout:
    description: Seconds each write of the engine may take at boot.
    type: int
    default: 10
  boot_lock_timeout:
    description: Seconds the engine waits at boot for the host lock.
    type: int
    default: 30
  boot_timeout:
    description: C(TimeoutStartSec) of the boot unit.
    type: int
    default: 120
  initramfs:
    description:
      - The initramfs generator of the host, which gets the VFIO modules (and, for dracut, the udev rule).
      - V(none) touches no initramfs configuration.
    type: str
    choices: [update-initramfs, dracut, none]
    default: none
  boot_reapply:
    description:
      - Install the desired state, the C(vfio-passthrough) command, the boot unit and the kernel hook.
      - With V(false) they are removed.
    type: bool
    default: true
  engine_python:
    description: The Python the C(vfio-passthrough) command runs the engine with (standard library only, 3.9+).
    type: path
    default: /usr/bin/python3
  engine_sha1:
    description:
      - The SHA-1 of the engine archive the caller installs (the lookup P(hypervisor.vfio.engine_archive#lookup)
        with C(checksum=true)). RV(engine_install) then tells whether the host's C(engine.zip) differs, so the
        copy runs only then.
    type: str
seealso:
  - module: hypervisor.vfio.vfio_bind
  - module: hypervisor.vfio.vfio_sriov
  - plugin: hypervisor.vfio.engine_archive
    plugin_type: lookup
'''

EXAMPLES = r'''
- name: Create 4 VFs on a PF
  hypervisor.vfio.vfio_sriov:
    pfs:
      - {pf: "0000:3b:00.0", numvfs: 4}
  register: vfs

- name: Bind the device and the VFs
  hypervisor.vfio.vfio_bind:
    devices: ["0000:5e:00.0", {physfn: "0000:3b:00.0"}]
  register: bound

- name: Make the binding and the VFs survive a reboot
  hypervisor.vfio.vfio_persist:
    bind: "{{ bound }}"
    sriov: "{{ vfs }}"
    initramfs: update-initramfs
    engine_sha1: "{{ lookup('hypervisor.vfio.engine_archive', checksum=true) }}"
  register: persisted

- name: Install the engine the boot unit runs, when the host's is not this one
  ansible.builtin.copy:
    src: "{{ lookup('hypervisor.vfio.engine_archive') }}"
    dest: /usr/local/lib/hypervisor-vfio/engine.zip
    mode: "0644"
  when: persisted.engine_install

- name: Rebuild the initramfs when its configuration changed
  ansible.builtin.command:
    argv: [update-initramfs, -u, -k, all]
  changed_when: true
  when: persisted.initramfs_regenerate

- name: Give everything back and remove the persistence
  hypervisor.vfio.vfio_persist:
    bind: {}
'''

RETURN = r'''
files:
  description: The paths this run changed (or would change, in check mode), with what was done.
  returned: always
  type: list
  elements: dict
  sample: [{path: /etc/udev/rules.d/40-hypervisor-vfio.rules, action: write}]
  contains:
    path:
      description: The path on the host (below O(rootfs_path)).
      type: str
    action:
      description: V(write), V(link), V(create) (a folder) or V(remove).
      type: str
persist:
  description: Whether any device is persisted for VFIO.
  returned: always
  type: bool
boot_engine:
  description: Whether the boot unit and the engine are installed.
  returned: always
  type: bool
engine_install:
  description:
    - Whether the caller must install the engine archive C(/usr/local/lib/hypervisor-vfio/engine.zip) (below
      O(rootfs_path)) - RV(boot_engine) and, with O(engine_sha1), the host's archive is missing, differs or does not
      have mode C(0644).
  returned: always
  type: bool
udev_reload:
  description: The udev rule changed and udevd runs (its control socket C(/run/udev/control) exists below
    O(rootfs_path)); its rules should be reloaded (C(udevadm control --reload-rules)).
  returned: always
  type: bool
initramfs_regenerate:
  description: What goes into the initramfs changed; the initramfs should be regenerated.
  returned: always
  type: bool
daemon_reload:
  description: The module ran C(systemctl daemon-reload) (the boot unit changed on a host booted with systemd).
  returned: always
  type: bool
failed_path:
  description: On failure, the file that could not be written or removed.
  returned: failure
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hypervisor.vfio.plugins.module_utils.common import host_path_argument_spec, run_module
from ansible_collections.hypervisor.vfio.plugins.module_utils.persist import INITRAMFS_TOOLS, run_persist


def build_module():
    spec = dict(
        bind=dict(type='dict', default={}),
        sriov=dict(type='raw', default=[]),
        iommu_group=dict(type='str', choices=['strict', 'all', 'ignore'], default='strict'),
        timeout=dict(type='int', default=10),
        boot_lock_timeout=dict(type='int', default=30),
        boot_timeout=dict(type='int', default=120),
        initramfs=dict(type='str', choices=list(INITRAMFS_TOOLS), default='none'),
        boot_reapply=dict(type='bool', default=True),
        engine_python=dict(type='path', default='/usr/bin/python3'),
        engine_sha1=dict(type='str'),
    )
    spec.update(host_path_argument_spec())
    return AnsibleModule(argument_spec=spec, supports_check_mode=True)


def main():
    module = build_module()
    run_module(module, 'vfio_persist', lambda: run_persist(module.params, module.run_command,
                                                           check_mode=module.check_mode))


if __name__ == '__main__':
    main()

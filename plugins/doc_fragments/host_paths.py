# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options shared by every module that reads the kernel's view of devices (DOCUMENTATION), and
    by the modules that change the host (LOCK)."""

    DOCUMENTATION = r'''
options:
  sysfs_path:
    description:
      - Where the kernel's sysfs is mounted.
      - Point it at the host's sysfs when running in a container (for example C(/host/sys)),
        or at a fake tree in tests.
    type: path
    default: /sys
  procfs_path:
    description:
      - Where procfs is mounted. Used for the kernel command line, network routes, mounts,
        swaps and the processes that hold C(/dev/vfio) files open.
    type: path
    default: /proc
  modules_dir:
    description:
      - Directory holding one folder of kernel modules per kernel release
        (C(modules.alias), C(modules.dep), C(modules.builtin.modinfo)).
    type: path
    default: /lib/modules
  rootfs_path:
    description:
      - The host's root filesystem. The boot loader configuration (C(/etc/kernel/cmdline),
        C(/boot/loader/entries), C(/boot/efi/loader/entries), C(/boot/grub2/grubenv)), the kernel
        images and initramfs images in C(/boot) and the boot tools (C(update-grub), C(grubby),
        C(kernel-install), C(proxmox-boot-tool)) are looked up below it.
      - Point it at the host's root mounted in a container (for example C(/host)), or at a fake tree in tests.
    type: path
    default: /
  kernel_release:
    description:
      - Kernel release whose module files are searched for VFIO drivers.
      - Defaults to the running kernel, read from O(procfs_path)C(/sys/kernel/osrelease).
      - Set it to inspect another installed kernel, for example before rebooting into it.
    type: str
  modprobe_config_dirs:
    description:
      - The modprobe configuration directories, in kmod's order of precedence.
      - C(alias) lines there win over C(modules.alias), exactly as kmod treats them;
        C(blacklist) and C(install <module> /bin/false) lines disqualify a module.
    type: list
    elements: path
    default: [/etc/modprobe.d, /run/modprobe.d, /usr/local/lib/modprobe.d, /usr/lib/modprobe.d, /lib/modprobe.d]
'''

    # hypervisor.vfio.host_paths.lock: the options of the modules that change the host (vfio_bind, vfio_sriov)
    LOCK = r'''
options:
  lock_file:
    description:
      - File locked to serialize concurrent runs on the host; M(hypervisor.vfio.vfio_bind) and
        M(hypervisor.vfio.vfio_sriov) share it.
    type: path
    default: /run/hypervisor-vfio.lock
  lock_timeout:
    description: Seconds to wait for another run to release O(lock_file).
    type: int
    default: 300
  return_facts:
    description:
      - Also return C(ansible_facts.vfio), the facts M(hypervisor.vfio.vfio_facts) gives, read from sysfs
        after the call, so that later tasks see the new state (drivers, new VFs) and can verify it without
        another module run. M(hypervisor.vfio.vfio_bind) returns them also when the call is refused or
        fails (the host as the call left it).
    type: bool
    default: false
'''

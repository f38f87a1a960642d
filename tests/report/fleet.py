# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake fleet of three hypervisors (fake sysfs trees) plus one unreachable host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import yaml

from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost


def hv1(root):
    """Intel, IOMMU on: a NIC on vfio-pci, a virtio-net with its variant, a GPU group half bound,
    an SR-IOV PF with two VFs (one on vfio-pci)."""
    h = FakeHost(root)
    h.add_modules('vfio_pci', loaded=True)
    h.add_modules('e1000e')
    h.add_module('virtio_pci', driver='virtio-pci', loaded=True)
    h.add_modules('virtio_vfio_pci', 'snd_hda_intel')
    h.add_module('ixgbe', ids=[('8086', '10fb')], loaded=True)
    h.add_module('ixgbevf', ids=[('8086', '10ed')], loaded=True)
    h.add_device('0000:00:01.0', '8086', '1901', cls='060400', driver='pcieport')
    h.add_device('0000:00:02.0', '8086', '10d3', driver='vfio-pci', override='vfio-pci')
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio-pci', net=['enp0s3'])
    h.add_device('0000:01:00.0', '10de', '1eb8', cls='030000', driver='vfio-pci', override='vfio-pci', group=20)
    h.add_device('0000:01:00.1', '10de', '10f0', cls='040300', driver='snd_hda_intel', group=20)
    h.add_device('0000:3b:00.0', '8086', '10fb', driver='ixgbe', net=['eno1'], sriov_totalvfs=64)
    for i, drv in enumerate(('vfio-pci', 'ixgbevf')):
        h.add_device('0000:3b:10.%d' % (i * 2), '8086', '10ed', driver=drv, physfn='0000:3b:00.0')
    h.write('sys/bus/pci/devices/0000:3b:00.0/sriov_numvfs', '2\n')
    h.write('sys/bus/pci/devices/0000:3b:00.0/sriov_drivers_autoprobe', '0\n')
    os.makedirs(os.path.join(h.sys, 'class/iommu/dmar0'))
    # Booted through Debian's GRUB (BOOT_IMAGE= on the command line, update-grub installed).
    h.write('usr/sbin/update-grub', '#!/bin/sh\n')
    return h


def hv2(root):
    """AMD, IOMMU on: a device two variant drivers claim equally (ambiguous), nothing bound."""
    h = FakeHost(root)
    h.add_modules('vfio_pci', 'mlx5_core', 'mlx5_vfio_pci')
    h.add_module('acme_vfio_pci', ids=[('15b3', '101e')], override_only=True)
    h.add_device('0000:00:01.0', '1022', '1483', cls='060400', driver='pcieport')
    h.add_device('0000:41:00.2', '15b3', '101e', driver='mlx5_core', net=['ens1f0v0'])
    h.add_device('0000:42:00.0', '1b36', '0005', cls='00ff00', reset_method=None)
    os.makedirs(os.path.join(h.sys, 'class/iommu/ivhd0'))
    h.write('proc/cmdline', 'BOOT_IMAGE=/vmlinuz root=/dev/sda1 iommu=pt\n')
    return h


def hv3(root):
    """IOMMU off: no groups, no IOMMU units, no IOMMU arguments."""
    h = FakeHost(root)
    h.add_modules('vfio_pci', 'e1000e')
    h.add_device('0000:00:19.0', '8086', '10d3', driver='e1000e', net=['eno1'], group=None)
    h.write('proc/cmdline', 'BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet\n')
    return h


def make_fleet(base):
    """Build the trees under base and return the inventory path."""
    hosts = {}
    for name, build in (('hv1', hv1), ('hv2', hv2), ('hv3', hv3)):
        h = build(os.path.join(str(base), name))
        hosts[name] = {
            'ansible_connection': 'local',
            'ansible_python_interpreter': '{{ ansible_playbook_python }}',
            'passthrough_sysfs_path': h.sys,
            'passthrough_procfs_path': h.proc,
            'passthrough_modules_dir': h.moddir,
            'passthrough_rootfs_path': h.root,
            'passthrough_modprobe_config_dirs': [h.confdir],
        }
    # Nothing listens on the discard port of the loopback: the connection is refused at once.
    hosts['hv4-down'] = {'ansible_host': '127.0.0.1', 'ansible_port': 9, 'ansible_user': 'nobody',
                         'ansible_connection': 'ssh', 'ansible_ssh_args': '-o ConnectTimeout=3'}
    inventory = os.path.join(str(base), 'inventory.yml')
    with open(inventory, 'w') as f:
        yaml.safe_dump({'all': {'children': {'hypervisors': {'hosts': hosts}}}}, f)
    return inventory

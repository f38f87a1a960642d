# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role's boot loader step (tasks/iommu_cmdline.yml) in check mode on fake host trees:
the loader that started the kernel chooses the path, not the tools installed; an unmanaged
loader is a warning while the IOMMU is on and a failure while it is off.

Check mode only, with passthrough_rootfs_path at the fake tree: nothing on this machine is
written and no boot tool runs (the role's commands are skipped in check mode)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost
from ansible_collections.hypervisor.vfio.tests.unit.plugins.module_utils.test_bootloader import (
    DEB_RELEASE, EL9_ENTRY, EL9_RELEASE, SDBOOT_ENTRY, SDBOOT_MACHINE_ID, cmdline, tool, uefi, write)

from test_role_check import run_role  # noqa: I202 (this folder's sibling test)


def run(tmp_path, h, devices=()):
    """The role in check mode with the boot loader step on; -v shows why a task was skipped."""
    rc, out, dummy = run_role(tmp_path, h, list(devices), cli=['-v'], passthrough_iommu_cmdline=True)
    return rc, out


def task(out, name):
    """The output of one task (from its TASK line to the next)."""
    m = re.search(r'^TASK \[hypervisor\.vfio\.passthrough : %s\].*?(?=^TASK |^RUNNING HANDLER|^PLAY RECAP)'
                  % re.escape(name), out, re.M | re.S)
    assert m, 'task %r not in the output:\n%s' % (name, out[-4000:])
    return m.group(0)


def handler(out, name):
    """The output of one handler (from its RUNNING HANDLER line to the next)."""
    m = re.search(r'^RUNNING HANDLER \[hypervisor\.vfio\.passthrough : %s\].*?(?=^TASK |^RUNNING HANDLER|^PLAY RECAP)'
                  % re.escape(name), out, re.M | re.S)
    assert m, 'handler %r not in the output:\n%s' % (name, out[-4000:])
    return m.group(0)


def ran(block):
    """The task ran (or, for a command in check mode, would have run)."""
    if 'Conditional result was False' in block:
        return False
    return 'changed:' in block or 'ok:' in block or 'would have run' in block


def iommu_on(h):
    h.add_device('0000:00:10.0')        # an IOMMU group: the IOMMU is on
    os.makedirs(os.path.join(h.sys, 'class/iommu/dmar0'))


def test_systemd_boot_host_with_update_grub_gets_kernel_cmdline_not_a_grub_dropin(tmp_path):
    h = FakeHost(tmp_path / 'host', release=DEB_RELEASE)
    iommu_on(h)
    uefi(h, 'systemd-boot 252.33-1~deb12u1', '%s-%s.conf' % (SDBOOT_MACHINE_ID, DEB_RELEASE))
    cmdline(h, 'initrd=\\x\\initrd root=UUID=1f9a0b2c-3d4e-5f60-7a8b-9c0d1e2f3a4b ro quiet intel_iommu=on')
    tool(h, 'update-grub')
    tool(h, 'kernel-install', 'usr/bin')
    write(h.root, 'boot/efi/loader/entries/%s-%s.conf' % (SDBOOT_MACHINE_ID, DEB_RELEASE), SDBOOT_ENTRY)
    write(h.root, 'boot/vmlinuz-' + DEB_RELEASE, '')
    rc, out = run(tmp_path, h)
    assert rc == 0, out[-6000:]
    assert not ran(task(out, 'Write the GRUB drop-in with the IOMMU arguments'))
    block = task(out, 'Write /etc/kernel/cmdline with the IOMMU arguments')
    assert 'changed:' in block and '+root=UUID=1f9a0b2c-3d4e-5f60-7a8b-9c0d1e2f3a4b ro quiet intel_iommu=on iommu=pt' in block
    assert not os.path.exists(os.path.join(h.root, 'etc/kernel/cmdline'))      # check mode
    assert 'REBOOT REQUIRED' in out and 'lacks' not in out
    # No reboot in this run: the entries are not rewritten now but once, by the handler at the end
    # of the run (after the initramfs regeneration when there is one), with the new arguments.
    assert not ran(task(out, 'Rewrite the boot entry of every installed kernel before the reboot'))
    block = task(out, 'Leave the rewrite of the boot entries to the handler at the end of the run')
    assert 'changed:' in block and 'the boot entries get initrd' not in block, block
    assert 'the boot entries get root=UUID=1f9a0b2c-3d4e-5f60-7a8b-9c0d1e2f3a4b ro quiet intel_iommu=on iommu=pt at ' \
        'the end of the run' in block, block
    block = handler(out, 'Install the boot entries (systemd-boot)')
    assert 'would have run' in block and "'kernel-install', 'add', '%s', '/boot/vmlinuz-%s'" % (DEB_RELEASE, DEB_RELEASE) in block, block


def test_directly_started_kernel_with_iommu_on_warns_and_goes_on(tmp_path):
    h = FakeHost(tmp_path / 'host')
    iommu_on(h)
    cmdline(h, 'console=ttyS0 root=/dev/vda intel_iommu=on')
    tool(h, 'kernel-install', 'usr/bin')
    h.add_module('vfio_pci', driver='vfio-pci')
    rc, out = run(tmp_path, h, devices=['0000:00:10.0'])
    assert rc == 0, out[-6000:]
    assert "WARNING: localhost: the running kernel lacks iommu=pt and the role cannot add them: the boot loader is 'none'" in out
    assert 'update-grub is missing' not in out and 'REBOOT REQUIRED' not in out
    assert ran(task(out, 'Bind the requested devices in one transaction'))


def test_directly_started_kernel_with_iommu_off_fails_naming_the_arguments(tmp_path):
    h = FakeHost(tmp_path / 'host')
    write(h.proc, 'cpuinfo', 'processor\t: 0\nvendor_id\t: GenuineIntel\n')
    cmdline(h, 'console=ttyS0 root=/dev/vda')
    rc, out = run(tmp_path, h)
    assert rc != 0
    assert 'the IOMMU is off and the role cannot turn it on' in out
    assert "Add intel_iommu=on iommu=pt where this kernel's command line is made" in out


def test_el9_grubby_runs_only_while_an_entry_lacks_an_argument(tmp_path):
    h = FakeHost(tmp_path / 'host', release=EL9_RELEASE)
    iommu_on(h)
    cmdline(h, 'BOOT_IMAGE=(hd0,msdos1)/vmlinuz-%s root=/dev/mapper/rhel-root ro' % EL9_RELEASE)
    tool(h, 'grubby')
    entry = os.path.join('boot/loader/entries', '0f6e-%s.conf' % EL9_RELEASE)
    write(h.root, entry, EL9_ENTRY)
    rc, out = run(tmp_path, h)
    assert rc == 0, out[-6000:]
    assert 'would have run' in task(out, 'Add the IOMMU arguments to every boot entry with grubby (RHEL family)')
    assert 'REBOOT REQUIRED' in out
    write(h.root, entry, EL9_ENTRY.replace('rhgb quiet', 'rhgb quiet intel_iommu=on iommu=pt'))
    rc, out = run(tmp_path, h)
    assert rc == 0, out[-6000:]
    assert not ran(task(out, 'Add the IOMMU arguments to every boot entry with grubby (RHEL family)'))

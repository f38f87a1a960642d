# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot loader detection (bootloader.py) and the boot, kernel, reset and power facts, on fake
host trees. The EL layouts (BLS entry files, grubenv and ``grubby --info=ALL`` of the same
entries) are written after the documented RHEL 8 and 9 formats, not captured from real hosts:
no EL image can be booted here."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hypervisor.vfio.plugins.module_utils import bootloader as boot
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, FakeKernel

EFI_ATTRS = b'\x06\x00\x00\x00'   # EFI_VARIABLE_BOOTSERVICE_ACCESS | RUNTIME_ACCESS

EL9_RELEASE = '5.14.0-427.13.1.el9_4.x86_64'
EL9_ENTRY = """title Red Hat Enterprise Linux (5.14.0-427.13.1.el9_4.x86_64) 9.4 (Plow)
version 5.14.0-427.13.1.el9_4.x86_64
linux /vmlinuz-5.14.0-427.13.1.el9_4.x86_64
initrd /initramfs-5.14.0-427.13.1.el9_4.x86_64.img $tuned_initrd
options root=/dev/mapper/rhel-root ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap \
rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet $tuned_params
grub_users $grub_users
grub_arg --unrestricted
grub_class rhel
"""
# grubby --info=ALL on the same host: root= is split out of args, $tuned_params stays unexpanded.
EL9_GRUBBY_INFO = """index=0
kernel="/boot/vmlinuz-5.14.0-427.13.1.el9_4.x86_64"
args="ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet $tuned_params"
root="/dev/mapper/rhel-root"
initrd="/boot/initramfs-5.14.0-427.13.1.el9_4.x86_64.img $tuned_initrd"
title="Red Hat Enterprise Linux (5.14.0-427.13.1.el9_4.x86_64) 9.4 (Plow)"
id="0f6e5c4d3b2a49188a7b6c5d4e3f2a1b-5.14.0-427.13.1.el9_4.x86_64"
"""
EL9_GRUBENV = '# GRUB Environment Block\nsaved_entry=0f6e5c4d3b2a49188a7b6c5d4e3f2a1b-5.14.0-427.13.1.el9_4.x86_64\n' \
              'boot_success=1\n' + '#' * 900 + '\n'
# RHEL 8: the entries say "options $kernelopts"; GRUB expands it from grubenv.
EL8_ENTRY = """title Red Hat Enterprise Linux (4.18.0-513.5.1.el8_9.x86_64) 8.9 (Ootpa)
version 4.18.0-513.5.1.el8_9.x86_64
linux /vmlinuz-4.18.0-513.5.1.el8_9.x86_64
initrd /initramfs-4.18.0-513.5.1.el8_9.x86_64.img $tuned_initrd
options $kernelopts $tuned_params
id rhel-20231106123456-4.18.0-513.5.1.el8_9.x86_64
grub_users $grub_users
grub_arg --unrestricted
grub_class kernel
"""
EL8_GRUBENV = ('# GRUB Environment Block\nsaved_entry=fe1b-4.18.0-513.5.1.el8_9.x86_64\n'
               'kernelopts=root=/dev/mapper/rhel-root ro crashkernel=auto resume=/dev/mapper/rhel-swap '
               'rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet intel_iommu=on iommu=pt \n'
               'boot_success=0\n' + '#' * 700 + '\n')
# Debian 12 with systemd-boot 252: the entry kernel-install wrote on the ESP.
SDBOOT_MACHINE_ID = '6c1a9e0b5f2d4c3e8a7b9d0e1f2a3b4c'
DEB_RELEASE = '6.1.0-28-amd64'
SDBOOT_ENTRY = """# Boot Loader Specification type#1 entry
# File created by /usr/lib/kernel/install.d/90-loaderentry.install (systemd 252.33-1~deb12u1)
title      Debian GNU/Linux 12 (bookworm)
version    6.1.0-28-amd64
machine-id 6c1a9e0b5f2d4c3e8a7b9d0e1f2a3b4c
sort-key   debian
options    root=UUID=1f9a0b2c-3d4e-5f60-7a8b-9c0d1e2f3a4b ro quiet
linux      /6c1a9e0b5f2d4c3e8a7b9d0e1f2a3b4c/6.1.0-28-amd64/linux
initrd     /6c1a9e0b5f2d4c3e8a7b9d0e1f2a3b4c/6.1.0-28-amd64/initrd.img-6.1.0-28-amd64
"""


def write(root, rel, text, mode='w'):
    path = os.path.join(str(root), rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, mode) as f:
        f.write(text)
    return path


def efivar(text):
    return EFI_ATTRS + (text + '\x00').encode('utf-16-le')


def tool(h, name, where='usr/sbin'):
    write(h.root, '%s/%s' % (where, name), '#!/bin/sh\n')


def cmdline(h, text):
    write(h.proc, 'cmdline', text + '\n')


def uefi(h, loader_info=None, entry=None):
    os.makedirs(os.path.join(h.sys, 'firmware/efi/efivars'))
    if loader_info:
        write(h.sys, 'firmware/efi/efivars/' + boot.LOADER_INFO, efivar(loader_info), 'wb')
    if entry:
        write(h.sys, 'firmware/efi/efivars/' + boot.LOADER_ENTRY_SELECTED, efivar(entry), 'wb')


def facts(h, **kw):
    return collect_facts(HostContext(h.params(), fs=FakeKernel(h)), **kw)


def boot_facts(h):
    return facts(h)['boot']


# -- which loader started the kernel -------------------------------------------------------

def test_directly_started_kernel_is_unmanaged_even_with_kernel_install(tmp_path):
    # The lab guest of the issue: QEMU -kernel with intel_iommu=on, no GRUB; kernel-install is
    # installed (systemd ships it) but wrote no entry this kernel came from.
    h = FakeHost(tmp_path)
    cmdline(h, 'console=ttyS0 root=/dev/vda intel_iommu=on')
    tool(h, 'kernel-install', 'usr/bin')
    b = boot_facts(h)
    assert (b['loader'], b['method'], b['firmware']) == ('none', None, 'bios')
    assert 'QEMU -kernel' in b['evidence'][0] and 'no boot loader configuration' in b['method_reason']
    assert b['apply_commands'] == [] and b['cmdline_args'] == ['console=ttyS0', 'root=/dev/vda', 'intel_iommu=on']
    assert b['tools']['kernel-install'] == '/usr/bin/kernel-install' and b['tools']['update-grub'] is None


def test_debian_grub(tmp_path):
    h = FakeHost(tmp_path)
    cmdline(h, 'BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=1f9a ro quiet')
    tool(h, 'update-grub')
    tool(h, 'grub-mkconfig')
    b = boot_facts(h)
    assert (b['loader'], b['method']) == ('grub', 'grub_dropin')
    assert b['apply_commands'] == [['update-grub']]
    assert 'BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64' in b['evidence'][0]


def test_systemd_boot_wins_over_an_installed_update_grub(tmp_path):
    # The issue's trap: update-grub is installed, but systemd-boot started the kernel, so a GRUB
    # drop-in would never apply. /etc/kernel/cmdline + kernel-install add per kernel is the way.
    h = FakeHost(tmp_path, release=DEB_RELEASE)
    uefi(h, 'systemd-boot 252.33-1~deb12u1', '%s-%s.conf' % (SDBOOT_MACHINE_ID, DEB_RELEASE))
    cmdline(h, 'initrd=\\%s\\%s\\initrd.img-%s root=UUID=1f9a0b2c-3d4e-5f60-7a8b-9c0d1e2f3a4b ro quiet'
            % (SDBOOT_MACHINE_ID, DEB_RELEASE, DEB_RELEASE))
    tool(h, 'update-grub')
    tool(h, 'kernel-install', 'usr/bin')
    tool(h, 'bootctl', 'usr/bin')
    write(h.root, 'boot/efi/loader/entries/%s-%s.conf' % (SDBOOT_MACHINE_ID, DEB_RELEASE), SDBOOT_ENTRY)
    write(h.root, 'boot/vmlinuz-' + DEB_RELEASE, '')
    write(h.root, 'boot/initrd.img-' + DEB_RELEASE, '')
    os.makedirs(os.path.join(h.moddir, '6.1.0-27-amd64'))      # an old kernel's leftover modules
    b = boot_facts(h)
    assert (b['loader'], b['method'], b['firmware']) == ('systemd-boot', 'kernel_install', 'uefi')
    assert b['loader_info'] == 'systemd-boot 252.33-1~deb12u1'
    assert b['entry_selected'] == '%s-%s.conf' % (SDBOOT_MACHINE_ID, DEB_RELEASE)
    # Only a kernel with an image gets an entry; the initramfs goes with it.
    assert b['apply_commands'] == [['kernel-install', 'add', DEB_RELEASE, '/boot/vmlinuz-' + DEB_RELEASE,
                                    '/boot/initrd.img-' + DEB_RELEASE]]
    [entry] = b['entries']
    assert entry['options'] == ['root=UUID=1f9a0b2c-3d4e-5f60-7a8b-9c0d1e2f3a4b', 'ro', 'quiet']
    assert entry['version'] == DEB_RELEASE and entry['linux'].endswith('/linux')
    # Without /etc/kernel/cmdline kernel-install takes /proc/cmdline: without initrd= (set by the loader).
    assert b['kernel_cmdline_file_args'] is None
    assert b['kernel_cmdline_base'] == ['root=UUID=1f9a0b2c-3d4e-5f60-7a8b-9c0d1e2f3a4b', 'ro', 'quiet']
    assert b['kernel_cmdline_file'] == os.path.join(h.root, 'etc/kernel/cmdline')

    write(h.root, 'etc/kernel/cmdline', '# set by hand\nroot=UUID=1f9a ro  quiet\n')
    b = boot_facts(h)
    assert b['kernel_cmdline_file_args'] == b['kernel_cmdline_base'] == ['root=UUID=1f9a', 'ro', 'quiet']


def test_proxmox_systemd_boot_and_grub(tmp_path):
    h = FakeHost(tmp_path)
    uefi(h, 'systemd-boot 252.31-1~deb12u1')
    write(h.root, 'etc/kernel/proxmox-boot-uuids', 'B2A1-7C3D\n')
    for t in ('proxmox-boot-tool', 'update-grub'):
        tool(h, t)
    tool(h, 'kernel-install', 'usr/bin')
    b = boot_facts(h)
    assert (b['loader'], b['method'], b['proxmox_boot']) == ('systemd-boot', 'proxmox_boot_tool', True)
    assert b['apply_commands'] == [['proxmox-boot-tool', 'refresh']]
    # The same Proxmox host booted in legacy mode through GRUB: drop-in, then refresh the ESPs.
    os.remove(os.path.join(h.sys, 'firmware/efi/efivars', boot.LOADER_INFO))
    cmdline(h, 'BOOT_IMAGE=/boot/vmlinuz-6.8.12-4-pve root=ZFS=rpool/ROOT/pve-1 boot=zfs')
    b = boot_facts(h)
    assert (b['loader'], b['method']) == ('grub', 'grub_dropin')
    assert b['apply_commands'] == [['proxmox-boot-tool', 'refresh']]


def test_systemd_boot_chainloading_grub_is_grub(tmp_path):
    h = FakeHost(tmp_path)
    uefi(h, 'systemd-boot 254.5-1', 'grub.conf')
    write(h.root, 'efi/loader/entries/grub.conf', 'title GRUB\nefi /EFI/debian/grubx64.efi\n')
    cmdline(h, 'BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=/dev/sda2 ro')
    tool(h, 'update-grub')
    b = boot_facts(h)
    assert (b['loader'], b['method']) == ('grub', 'grub_dropin')
    assert [e['selected'] for e in b['entries']] == [True]


def test_unmanaged_loaders_say_why(tmp_path):
    h = FakeHost(tmp_path)
    cmdline(h, 'BOOT_IMAGE=/vmlinuz-linux root=/dev/sda2 rw')    # Arch: GRUB, grub-mkconfig only
    tool(h, 'grub-mkconfig', 'usr/bin')
    b = boot_facts(h)
    assert (b['loader'], b['method']) == ('grub', None)
    assert 'without update-grub or grubby' in b['method_reason']
    uefi(h, 'rEFInd 0.14.0')
    b = boot_facts(h)
    assert (b['loader'], b['method']) == ('other', None) and 'not systemd-boot' in b['method_reason']
    uefi_dir = os.path.join(h.sys, 'firmware/efi/efivars')
    os.remove(os.path.join(uefi_dir, boot.LOADER_INFO))
    write(h.sys, 'firmware/efi/efivars/' + boot.LOADER_INFO, efivar('systemd-boot 252'), 'wb')
    assert boot_facts(h)['method_reason'].startswith('systemd-boot without kernel-install')


# -- the RHEL family (documented layouts) -----------------------------------------------------

def grubby_view(text):
    """What grubby --info=ALL says each entry boots with (args plus root=), as lists."""
    out, cur = [], None
    for line in text.splitlines():
        key, dummy, value = line.partition('=')
        value = value.strip('"')
        if key == 'index':
            cur = {}
            out.append(cur)
        elif key in ('args', 'root'):
            cur[key] = value
    return [(['root=' + e['root']] if e.get('root') else []) + e['args'].split() for e in out]


def test_el9_bls_entries_read_like_grubby_reads_them(tmp_path):
    h = FakeHost(tmp_path, release=EL9_RELEASE)
    cmdline(h, 'BOOT_IMAGE=(hd0,msdos1)/vmlinuz-%s root=/dev/mapper/rhel-root ro rhgb quiet' % EL9_RELEASE)
    tool(h, 'grubby', 'usr/sbin')
    tool(h, 'grub2-mkconfig', 'usr/sbin')
    write(h.root, 'boot/loader/entries/0f6e5c4d3b2a49188a7b6c5d4e3f2a1b-%s.conf' % EL9_RELEASE, EL9_ENTRY)
    write(h.root, 'boot/grub2/grubenv', EL9_GRUBENV)
    write(h.root, 'boot/vmlinuz-' + EL9_RELEASE, '')
    write(h.root, 'boot/initramfs-%s.img' % EL9_RELEASE, '')
    b = boot_facts(h)
    assert (b['loader'], b['method']) == ('grub', 'grubby') and b['apply_commands'] == []
    [entry] = b['entries']
    # $tuned_params is unset in grubenv, so GRUB expands it to nothing.
    assert sorted(entry['options']) == sorted(a for a in grubby_view(EL9_GRUBBY_INFO)[0] if a != '$tuned_params')
    assert entry['version'] == EL9_RELEASE
    kernels = facts(h)['kernels']
    assert [(k['release'], k['image'], k['initramfs']) for k in kernels] == [
        (EL9_RELEASE, '/boot/vmlinuz-' + EL9_RELEASE, '/boot/initramfs-%s.img' % EL9_RELEASE)]


def test_el8_kernelopts_are_expanded_from_grubenv(tmp_path):
    h = FakeHost(tmp_path)
    cmdline(h, 'BOOT_IMAGE=(hd0,msdos1)/vmlinuz-4.18.0-513.5.1.el8_9.x86_64 root=/dev/mapper/rhel-root ro')
    tool(h, 'grubby')
    write(h.root, 'boot/loader/entries/fe1b-4.18.0-513.5.1.el8_9.x86_64.conf', EL8_ENTRY)
    write(h.root, 'boot/grub2/grubenv', EL8_GRUBENV)
    [entry] = boot_facts(h)['entries']
    assert entry['options'][:2] == ['root=/dev/mapper/rhel-root', 'ro']
    assert {'intel_iommu=on', 'iommu=pt'} <= set(entry['options']) and '$kernelopts' not in entry['options']


# -- pure helpers ------------------------------------------------------------------------------

def test_cmdline_words_and_values():
    args = boot.split_cmdline('BOOT_IMAGE=/vmlinuz  root=/dev/sda1 dyndbg="file x.c +p" quiet iommu=on iommu=pt\n')
    assert args == ['BOOT_IMAGE=/vmlinuz', 'root=/dev/sda1', 'dyndbg=file x.c +p', 'quiet', 'iommu=on', 'iommu=pt']
    assert boot.cmdline_value(args, 'iommu') == 'pt' and boot.cmdline_value(args, 'quiet') is True
    assert boot.cmdline_value(args, 'intel_iommu') is None
    assert boot.without_loader_args(['initrd=\\a\\b', 'BOOT_IMAGE=/x', 'ro']) == ['ro']


def test_efi_strings_and_vendors():
    assert boot.read_efi_string(efivar('systemd-boot 252.33-1~deb12u1')) == 'systemd-boot 252.33-1~deb12u1'
    assert boot.read_efi_string(b'\x06\x00') is None and boot.read_efi_string(None) is None
    assert boot.cpu_vendor('processor\t: 0\nvendor_id\t: GenuineIntel\n') == 'intel'
    assert boot.cpu_vendor('vendor_id\t: AuthenticAMD\n') == 'amd'
    assert boot.cpu_vendor('processor\t: 0\nCPU implementer\t: 0x41\n') == 'other'
    # The IOMMU units decide over the CPU: the lab's TCG guest shows an AMD CPU with Intel's VT-d.
    assert boot.iommu_vendor(['dmar0'], 'amd') == 'intel' and boot.iommu_vendor(['ivhd0'], 'intel') == 'amd'
    assert boot.iommu_vendor([], 'amd') == 'amd'


def test_iommu_facts_carry_vendor_and_enable_args(tmp_path):
    h = FakeHost(tmp_path)
    write(h.proc, 'cpuinfo', 'processor\t: 0\nvendor_id\t: AuthenticAMD\n')
    os.makedirs(os.path.join(h.sys, 'class/iommu/dmar0'))
    i = facts(h)['iommu']
    assert (i['cpu_vendor'], i['vendor'], i['enable_args']) == ('amd', 'intel', ['intel_iommu=on'])
    os.rmdir(os.path.join(h.sys, 'class/iommu/dmar0'))
    i = facts(h)['iommu']
    assert (i['vendor'], i['enable_args']) == ('amd', [])


# -- installed kernels (kernel upgrades) --------------------------------------------------------

def kernel_host(tmp_path):
    h = FakeHost(tmp_path)
    h.add_modules('vfio_pci', 'virtio_vfio_pci', loaded=True)
    h.add_device('0000:00:10.0', driver='vfio-pci')
    h.add_device('0000:00:11.0', '1af4', '1041', driver='virtio_vfio_pci')
    os.makedirs(os.path.join(h.dev_dir('0000:00:11.0'), 'vfio-dev', 'vfio0'))
    # A second kernel that ships vfio-pci built in but not the virtio variant.
    new = '6.12.57+deb12-amd64'
    write(h.moddir, new + '/modules.dep', 'kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz:\n')
    write(h.moddir, new + '/modules.builtin', 'kernel/drivers/vfio/pci/vfio-pci.ko\n')
    write(h.root, 'boot/vmlinuz-' + new, '')
    write(h.root, 'boot/initrd.img-' + new, '')
    return h, new


def test_every_installed_kernel_is_checked_for_the_vfio_modules_in_use(tmp_path):
    h, new = kernel_host(tmp_path)
    f = facts(h)
    by_rel = dict((k['release'], k) for k in f['kernels'])
    assert sorted(by_rel) == sorted([h.release, new])
    assert by_rel[h.release]['running'] and not by_rel[new]['running']
    assert by_rel[h.release]['vfio_modules'] == {'vfio_pci': True, 'virtio_vfio_pci': True}
    assert by_rel[new]['vfio_modules'] == {'vfio_pci': True, 'virtio_vfio_pci': False}
    assert by_rel[new]['missing_vfio_modules'] == ['virtio_vfio_pci']
    assert by_rel[new]['initramfs'] == '/boot/initrd.img-' + new and by_rel[new]['initramfs_checked'] is False
    [warning] = [w for w in f['warnings'] if w.startswith('kernel ')]
    assert warning.startswith('kernel %s has no module virtio_vfio_pci, which drives 0000:00:11.0' % new)


def test_initramfs_contents_on_request(tmp_path):
    h, new = kernel_host(tmp_path)
    listed = []

    def lister(image):
        listed.append(image)
        if image.endswith(new):
            # lsinitrd prints ls -l lines; the path is the last word
            return ['-rw-r--r--   1 root root  2345 Nov 29 12:00 usr/lib/modules/%s/kernel/drivers/vfio/pci/vfio-pci.ko.xz' % new,
                    '-rw-r--r--   1 root root   120 Nov 29 12:00 etc/udev/rules.d/40-hypervisor-vfio.rules']
        return None
    by_rel = dict((k['release'], k) for k in facts(h, list_initramfs=lister)['kernels'])
    assert listed == [os.path.join(h.root, 'boot/initrd.img-' + new)]     # the running one has no image here
    k = by_rel[new]
    assert k['initramfs_checked'] and k['initramfs_vfio_modules'] == {'vfio_pci': True, 'virtio_vfio_pci': False}
    assert k['initramfs_files'] == ['etc/udev/rules.d/40-hypervisor-vfio.rules']
    assert by_rel[h.release]['initramfs_vfio_modules'] is None
    assert boot.initramfs_modules(['usr/lib/modules/6.1/kernel/drivers/vfio/vfio.ko', 'etc/modprobe.d/x.conf']) == {'vfio'}


# -- reset and power ---------------------------------------------------------------------------

def test_reset_and_power_attributes_and_the_no_reset_warning(tmp_path):
    h = FakeHost(tmp_path)
    h.add_module('vfio_pci', driver='vfio-pci', loaded=True)
    h.add_device('0000:00:10.0', driver='vfio-pci', reset_method=None)
    h.add_device('0000:00:11.0', driver='vfio-pci', reset_method=None)
    h.add_device('0000:01:00.0', '10de', '2204', cls='030000', driver='vfio-pci', reset_method=None)
    for rel, text in (('0000:00:10.0/reset_method', 'flr bus\n'), ('0000:00:10.0/reset', ''),
                      ('0000:00:10.0/d3cold_allowed', '1\n'), ('0000:00:10.0/power_state', 'D0\n'),
                      ('0000:01:00.0/reset_method', '\n'), ('0000:01:00.0/reset', ''),
                      ('0000:01:00.0/boot_vga', '1\n'), ('0000:01:00.0/d3cold_allowed', '0\n')):
        addr, attr = rel.split('/')
        write(h.dev_dir(addr), attr, text)
    f = facts(h)
    d = f['devices']
    a = d['0000:00:10.0']
    assert (a['reset_method'], a['reset_supported'], a['d3cold_allowed'], a['power_state'], a['boot_vga']) == (
        ['flr', 'bus'], True, True, 'D0', None)
    b = d['0000:00:11.0']
    assert (b['reset_method'], b['reset_supported'], b['d3cold_allowed'], b['power_state']) == (None, False, None, None)
    g = d['0000:01:00.0']
    assert (g['reset_method'], g['boot_vga'], g['d3cold_allowed']) == ([], True, False)
    warned = sorted(w.split(': ', 1)[0] for w in f['warnings'] if 'no reset method' in w)
    assert warned == ['0000:00:11.0', '0000:01:00.0']
    assert any('0000:01:00.0: the kernel has no reset method for this device (reset_method is empty)' in w
               for w in f['warnings'])

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which boot loader started the running kernel, and how its kernel arguments are set.

Decided from what the running system shows, not from which tools are installed (a host that
boots through systemd-boot may still carry update-grub):

- the EFI variable ``LoaderInfo`` of the Boot Loader Interface exists only when systemd-boot
  (or another loader implementing that interface) ran during this boot; ``LoaderEntrySelected``
  names the entry it started;
- GRUB's ``linux`` command puts ``BOOT_IMAGE=<path>`` first on the kernel command line;
- neither: the kernel was started directly (QEMU ``-kernel``, kexec, PXE, an EFI stub entry of
  the firmware), and no configuration file on the host changes its arguments.

Then the way to set arguments for that loader, if this collection manages it:

==================  ===============================================================
``grub_dropin``     GRUB on Debian/Ubuntu: ``/etc/default/grub.d/*.cfg`` + ``update-grub``
                    (``proxmox-boot-tool refresh`` on a Proxmox host whose ESPs it syncs)
``grubby``          GRUB on the RHEL family: ``grubby --update-kernel=ALL --args=...`` edits
                    the BLS entries (and the defaults for kernels installed later)
``kernel_install``  systemd-boot: ``/etc/kernel/cmdline`` then ``kernel-install add`` per
                    installed kernel rewrites its Type #1 entry
``proxmox_boot_tool``  systemd-boot on Proxmox: ``/etc/kernel/cmdline`` then
                    ``proxmox-boot-tool refresh``
==================  ===============================================================

Only the standard library; every path is below the roots given by the caller, so tests point
them at a fake tree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import module_of_path

# systemd's Boot Loader Interface vendor GUID (LoaderInfo, LoaderEntrySelected...).
LOADER_GUID = '4a67b082-0a4c-41cf-b6c7-440b29bb8c4f'
LOADER_INFO = 'LoaderInfo-' + LOADER_GUID
LOADER_ENTRY_SELECTED = 'LoaderEntrySelected-' + LOADER_GUID

# Arguments a boot loader adds on its own; they never belong in a configuration file.
LOADER_ADDED_ARGS = ('BOOT_IMAGE', 'initrd')

# Where Type #1 (BLS) entries live: the ESP mounted at /efi or /boot/efi (systemd-boot), or
# /boot (the RHEL family's GRUB, an XBOOTLDR partition).
ENTRY_DIRS = ('efi/loader/entries', 'boot/efi/loader/entries', 'boot/loader/entries')
TOOL_DIRS = ('usr/sbin', 'sbin', 'usr/bin', 'bin')
# The tools that set kernel arguments, and the initramfs generators (whose images must carry the
# VFIO modules and the udev rule of early binding).
TOOLS = ('update-grub', 'grub2-mkconfig', 'grubby', 'kernel-install', 'bootctl', 'proxmox-boot-tool',
         'update-initramfs', 'dracut')
KERNEL_CMDLINE_FILE = 'etc/kernel/cmdline'
PROXMOX_UUIDS_FILE = 'etc/kernel/proxmox-boot-uuids'
GRUBENV_FILES = ('boot/grub2/grubenv', 'boot/efi/EFI/redhat/grubenv', 'boot/grub/grubenv')

# The kernel argument that switches the IOMMU on, per CPU vendor (vendor_id of /proc/cpuinfo).
# AMD-Vi has no "on" switch: the kernel enables it whenever the firmware describes it (IVRS).
IOMMU_ENABLE_ARGS = {'intel': ['intel_iommu=on'], 'amd': [], 'other': []}
CPU_VENDORS = {'GenuineIntel': 'intel', 'AuthenticAMD': 'amd', 'HygonGenuine': 'amd'}


def split_cmdline(text):
    """Kernel command line words; double quotes group words the way the kernel parses them."""
    return [w.replace('"', '') for w in re.findall(r'(?:[^\s"]+|"[^"]*")+', text or '')]


def without_loader_args(args):
    """The arguments a configuration file would carry: those a loader adds itself removed."""
    return [a for a in args if a.partition('=')[0] not in LOADER_ADDED_ARGS]


def cmdline_value(args, key):
    """Value of the last ``key=value`` (the kernel's last one wins), True for a bare flag, or None."""
    found = None
    for arg in args:
        k, sep, v = arg.partition('=')
        if k == key:
            found = v if sep else True
    return found


def read_efi_string(data):
    """A Boot Loader Interface string variable: 4 attribute bytes then NUL-ended UTF-16LE."""
    if not data or len(data) < 4:
        return None
    text = data[4:].decode('utf-16-le', 'replace')
    return text.split('\x00', 1)[0].strip() or None


def parse_bls_entry(text):
    """A Boot Loader Specification Type #1 entry: {key: value}; ``initrd`` may repeat."""
    entry = {'initrd': []}
    for line in (text or '').splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        key, dummy, value = line.partition(' ')
        value = value.strip()
        if key == 'initrd':
            entry['initrd'].append(value)
        elif key == 'options':
            entry['options'] = (entry.get('options', '') + ' ' + value).strip()
        else:
            entry[key] = value
    return entry


def parse_grubenv(text):
    """GRUB's environment block: ``name=value`` lines (the rest is '#' padding)."""
    env = {}
    for line in (text or '').splitlines():
        if line.startswith('#') or '=' not in line:
            continue
        k, dummy, v = line.partition('=')
        env[k] = v
    return env


def expand_grubenv(options, env):
    """EL8 BLS entries say ``options $kernelopts``: GRUB expands it from grubenv at boot."""
    return re.sub(r'\$(\w+)|\$\{(\w+)\}', lambda m: env.get(m.group(1) or m.group(2), ''), options or '')


def cpu_vendor(cpuinfo):
    """'intel', 'amd' or 'other' from the first ``vendor_id`` of /proc/cpuinfo."""
    for line in (cpuinfo or '').splitlines():
        key, dummy, value = line.partition(':')
        if key.strip() == 'vendor_id':
            return CPU_VENDORS.get(value.strip(), 'other')
    return 'other'


def iommu_vendor(units, cpu):
    """Whose IOMMU this is: Intel VT-d units are ``dmar<N>``, AMD-Vi units ``ivhd<N>`` in
    /sys/class/iommu; with none yet (the IOMMU is off) the CPU vendor decides."""
    for unit in units:
        if unit.startswith('dmar'):
            return 'intel'
        if unit.startswith('ivhd'):
            return 'amd'
    return cpu


def _read_text(path):
    data = _read_bytes(path)
    return None if data is None else data.decode('utf-8', 'replace')


def _read_bytes(path):
    try:
        with open(path, 'rb') as f:
            return f.read()
    except (IOError, OSError):
        return None


def _under(root, rel):
    return os.path.join(root, rel)


def _host_path(rel):
    return '/' + rel


def find_tools(rootfs):
    """{tool: host path or None} for TOOLS."""
    found = {}
    for tool in TOOLS:
        found[tool] = None
        for d in TOOL_DIRS:
            if os.path.isfile(_under(rootfs, d + '/' + tool)):
                found[tool] = _host_path(d + '/' + tool)
                break
    return found


def read_entries(rootfs, grubenv=None):
    """Every Type #1 entry under the usual folders, sorted by folder then file name."""
    entries = []
    seen = set()
    for d in ENTRY_DIRS:
        path = _under(rootfs, d)
        try:
            names = sorted(os.listdir(path))
        except OSError:
            continue
        real = os.path.realpath(path)
        if real in seen:        # /boot/efi/loader and /boot/loader may be one folder
            continue
        seen.add(real)
        for name in names:
            if not name.endswith('.conf'):
                continue
            entry = parse_bls_entry(_read_text(os.path.join(path, name)))
            options = entry.get('options', '')
            if grubenv and '$' in options:
                options = expand_grubenv(options, grubenv)
            entries.append({
                'id': name,     # systemd-boot's entry id (LoaderEntrySelected) is the file name
                'path': os.path.join(path, name),
                'title': entry.get('title'),
                'version': entry.get('version'),
                'linux': entry.get('linux'),
                'efi': entry.get('efi'),
                'options': split_cmdline(options),
            })
    return entries


def read_grubenv(rootfs):
    for rel in GRUBENV_FILES:
        text = _read_text(_under(rootfs, rel))
        if text is not None:
            return parse_grubenv(text)
    return {}


def identify_loader(loader_info, entry_selected, cmdline_args, entries):
    """(loader, evidence) from what this boot left: the EFI variables and /proc/cmdline.

    LoaderInfo is volatile (set by the loader at every boot), so it tells about this boot.
    When systemd-boot chain-loaded GRUB (its selected entry is an ``efi`` program and GRUB
    put BOOT_IMAGE= on the command line), GRUB made the command line.
    """
    boot_image = cmdline_value(cmdline_args, 'BOOT_IMAGE')
    evidence = []
    if loader_info:
        evidence.append('EFI variable LoaderInfo=%r' % loader_info)
        if entry_selected:
            evidence.append('EFI variable LoaderEntrySelected=%r' % entry_selected)
        selected = [e for e in entries if e['id'] == entry_selected]
        chained = bool(selected) and bool(selected[0].get('efi')) and not selected[0].get('linux')
        if boot_image and chained:
            evidence.append('the selected entry starts %s and GRUB set BOOT_IMAGE=%s'
                            % (selected[0]['efi'], boot_image))
            return 'grub', evidence
        if loader_info.lower().startswith('systemd-boot'):
            return 'systemd-boot', evidence
        return 'other', evidence
    if boot_image:
        evidence.append('BOOT_IMAGE=%s on the kernel command line (set by GRUB)' % boot_image)
        return 'grub', evidence
    evidence.append('no LoaderInfo EFI variable and no BOOT_IMAGE= on the kernel command line: '
                    'the kernel was started directly (QEMU -kernel, kexec, PXE or an EFI stub entry)')
    return 'none', evidence


def choose_method(loader, tools, proxmox):
    """(method, how, reason): how this collection sets kernel arguments for that loader."""
    if loader == 'grub':
        if tools.get('update-grub'):
            how = 'proxmox-boot-tool refresh' if proxmox and tools.get('proxmox-boot-tool') else 'update-grub'
            return 'grub_dropin', how, 'GRUB with update-grub (Debian/Ubuntu)'
        if tools.get('grubby'):
            return 'grubby', 'grubby --update-kernel=ALL', 'GRUB with grubby (RHEL family, BLS entries)'
        return None, None, ('GRUB without update-grub or grubby: the role does not edit this '
                            'distribution\'s GRUB configuration')
    if loader == 'systemd-boot':
        if proxmox and tools.get('proxmox-boot-tool'):
            return ('proxmox_boot_tool', 'proxmox-boot-tool refresh',
                    'systemd-boot on ESPs synced by proxmox-boot-tool (/etc/kernel/proxmox-boot-uuids)')
        if tools.get('kernel-install'):
            return 'kernel_install', 'kernel-install add', 'systemd-boot with kernel-install'
        return None, None, 'systemd-boot without kernel-install: its entries are written by hand'
    if loader == 'other':
        return None, None, 'a boot loader that sets LoaderInfo but is not systemd-boot'
    return None, None, 'no boot loader configuration sets this kernel\'s command line'


def installed_kernels(rootfs, modules_dir):
    """Every kernel release with a module folder, its image and initramfs when found.

    Images: Debian's ``/boot/vmlinuz-<release>`` and ``/boot/initrd.img-<release>``, the
    RHEL family's ``/boot/vmlinuz-<release>`` and ``/boot/initramfs-<release>.img``, or the
    kernel-install layout ``/lib/modules/<release>/vmlinuz``.
    """
    try:
        names = sorted(os.listdir(modules_dir))
    except OSError:
        return []
    kernels = []
    for rel in names:
        if not os.path.isdir(os.path.join(modules_dir, rel)) or rel.startswith('.'):
            continue
        image = None
        if os.path.exists(_under(rootfs, 'boot/vmlinuz-' + rel)):
            image = _host_path('boot/vmlinuz-' + rel)
        elif os.path.exists(os.path.join(modules_dir, rel, 'vmlinuz')):
            image = os.path.join(modules_dir, rel, 'vmlinuz')
        initramfs = None
        for cand in ('boot/initrd.img-' + rel, 'boot/initramfs-%s.img' % rel):
            if os.path.exists(_under(rootfs, cand)):
                initramfs = _host_path(cand)
                break
        kernels.append({'release': rel, 'image': image, 'initramfs': initramfs,
                        'modules_alias': os.path.exists(os.path.join(modules_dir, rel, 'modules.alias'))})
    return kernels


def apply_commands(method, how, kernels):
    """The commands that make the loader take a changed configuration, as argv lists."""
    if method == 'grub_dropin':
        return [how.split()]
    if method == 'proxmox_boot_tool':
        return [['proxmox-boot-tool', 'refresh']]
    if method == 'kernel_install':
        return [['kernel-install', 'add', k['release'], k['image']] + ([k['initramfs']] if k['initramfs'] else [])
                for k in kernels if k['image']]
    return []


def read_boot(fs, rootfs, kernels):
    """The boot facts: loader, how its arguments are set, the running and configured arguments.

    ``kernels`` is :func:`installed_kernels`' list (kernel-install runs once per kernel).
    """
    efivars = fs.sys('firmware/efi/efivars')
    loader_info = read_efi_string(_read_bytes(os.path.join(efivars, LOADER_INFO)))
    entry_selected = read_efi_string(_read_bytes(os.path.join(efivars, LOADER_ENTRY_SELECTED)))
    cmdline = (fs.read_proc('cmdline') or '').strip()
    args = split_cmdline(cmdline)
    grubenv = read_grubenv(rootfs)
    entries = read_entries(rootfs, grubenv)
    for e in entries:
        e['selected'] = e['id'] == entry_selected
    tools = find_tools(rootfs)
    proxmox = os.path.exists(_under(rootfs, PROXMOX_UUIDS_FILE))
    loader, evidence = identify_loader(loader_info, entry_selected, args, entries)
    method, how, reason = choose_method(loader, tools, proxmox)
    file_text = _read_text(_under(rootfs, KERNEL_CMDLINE_FILE))
    file_args = None if file_text is None else split_cmdline(' '.join(
        line for line in file_text.splitlines() if not line.lstrip().startswith('#')))
    return {
        'firmware': 'uefi' if fs.isdir('firmware/efi') else 'bios',
        'loader': loader,
        'loader_info': loader_info,
        'entry_selected': entry_selected,
        'evidence': evidence,
        'method': method,
        'method_reason': reason,
        'apply_commands': apply_commands(method, how, kernels),
        'cmdline_args': args,
        'kernel_cmdline_file': _under(rootfs, KERNEL_CMDLINE_FILE),
        'kernel_cmdline_file_args': file_args,
        # What /etc/kernel/cmdline must start from: its own arguments, or (kernel-install's
        # fallback when the file is absent) the running ones without those a loader adds.
        'kernel_cmdline_base': file_args if file_args is not None else without_loader_args(args),
        'entries': entries,
        'proxmox_boot': proxmox,
        'tools': tools,
    }


def initramfs_modules(listing):
    """Module names found in an initramfs listing (lsinitramfs / lsinitrd paths)."""
    names = set()
    for line in listing:
        base = line.strip().rsplit('/', 1)[-1].rsplit(' ', 1)[-1]
        if '.ko' in base:
            names.add(module_of_path(base))
    return names

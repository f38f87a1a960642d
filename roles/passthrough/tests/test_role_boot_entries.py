# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot entries of a systemd-boot host are installed once per run, by the handler, after the
initramfs regeneration when there is one (handlers/main.yml, tasks/iommu_cmdline.yml): real runs
of the role (not check mode) on a simulated Proxmox systemd-boot host (tools/fakehost.py, devices
already on VFIO, so vfio_bind has nothing to write), whose boot commands are logging fakes.

SAFETY: the boot loader method is proxmox_boot_tool and the generator dracut, so the role runs
``proxmox-boot-tool refresh`` and ``dracut --regenerate-all --force``, looked up on PATH, where the
test puts its fakes first. The test runs only when neither tool exists on this machine's own PATH
(a PATH mix-up then fails with "not found" instead of touching a boot loader), and checks that the
PATH it gives finds the fakes. kernel-install (the Debian method) is never asked for: it exists
on development machines. The role never reboots here (passthrough_reboot stays false)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys
import types

import pytest
import yaml

from ansible_collections.hypervisor.vfio.tests.playbook import run_playbook
from ansible_collections.hypervisor.vfio.tests.unit.plugins.module_utils.test_bootloader import cmdline, tool, uefi, write
from ansible_collections.hypervisor.vfio.tools.fakehost import generate

TOOLS = ('proxmox-boot-tool', 'dracut')
REGENERATE = 'dracut --regenerate-all --force'
INSTALL = 'proxmox-boot-tool refresh'


@pytest.fixture
def host(tmp_path):
    found = [t for t in TOOLS if shutil.which(t)]
    if found:
        pytest.skip('%s exists on this machine: the role would run the real one if PATH went wrong' % ', '.join(found))
    info = generate(str(tmp_path / 'host'), nic=2, state='vfio')
    opts = info['module_options']
    h = types.SimpleNamespace(root=info['root'], sys=opts['sysfs_path'], proc=opts['procfs_path'])
    uefi(h, 'systemd-boot 252.33-1~deb12u1')
    cmdline(h, 'initrd=\\EFI\\proxmox\\initrd.img root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet')
    tool(h, 'proxmox-boot-tool')
    tool(h, 'dracut', 'usr/bin')
    write(h.root, 'etc/kernel/proxmox-boot-uuids', '1A2B-3C4D\n')
    # the fakes the role runs, logging each call
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    log = tmp_path / 'boot-commands.log'
    for name in TOOLS:
        fake = bindir / name
        fake.write_text('#!/bin/sh\necho "%s $*" >> %s\n' % (name, log))
        fake.chmod(0o755)
    path = '%s:%s' % (bindir, os.environ.get('PATH', ''))
    assert [shutil.which(t, path=path) for t in TOOLS] == [str(bindir / t) for t in TOOLS]
    info.update(path=path, log=log)
    return info


def converge(tmp_path, info, **extra):
    """A real run of the role with the boot loader step and persistence; the boot commands it ran."""
    vars_ = dict(info['role_vars'], passthrough_persistent=True, passthrough_iommu_cmdline=True)
    vars_.update(extra)
    play = [{'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
             'vars': {'ansible_python_interpreter': sys.executable},
             'roles': [{'role': 'hypervisor.vfio.passthrough'}]}]
    pb = tmp_path / 'play.yml'
    pb.write_text(yaml.safe_dump(play))
    ev = tmp_path / 'vars.json'
    ev.write_text(json.dumps(vars_))
    before = info['log'].read_text().splitlines() if info['log'].exists() else []
    rc, out = run_playbook(tmp_path, ['-i', 'localhost,', '-e', '@%s' % ev, pb], timeout=600, PATH=info['path'])
    assert rc == 0, out[-6000:]
    assert 'Rewrite the boot entry of every installed kernel before the reboot' in out
    assert "changed: [localhost] => (item=['proxmox-boot-tool', 'refresh'])" not in out.split('RUNNING HANDLER')[0]
    after = info['log'].read_text().splitlines() if info['log'].exists() else []
    return after[len(before):], out


def test_the_boot_entries_are_installed_once_per_run_after_the_regeneration(tmp_path, host):
    # first converge: /etc/kernel/cmdline gets iommu=pt and the persistence asks for a regenerated
    # initramfs: one install of the entries, after the regeneration
    ran, out = converge(tmp_path, host)
    assert ran == [REGENERATE, INSTALL], out[-6000:]
    with open(os.path.join(host['root'], 'etc/kernel/cmdline')) as f:
        assert f.read() == 'root=ZFS=rpool/ROOT/pve-1 boot=zfs quiet intel_iommu=on iommu=pt\n'
    # nothing to change: nothing runs
    ran, out = converge(tmp_path, host)
    assert ran == [], out[-6000:]
    # a new argument and nothing for the initramfs: the entries are installed alone
    ran, out = converge(tmp_path, host, passthrough_kernel_args_extra=['pcie_aspm=off'])
    assert ran == [INSTALL], out[-6000:]
    # the initramfs alone (a device no longer persisted leaves the udev rule): the regeneration
    # notifies the install (as on restore)
    ran, out = converge(tmp_path, host, passthrough_kernel_args_extra=['pcie_aspm=off'],
                        passthrough_devices=host['devices'][:1])
    assert ran == [REGENERATE, INSTALL], out[-6000:]

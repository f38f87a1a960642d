# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel hook hypervisor.vfio.vfio_persist writes (module_utils/persist.py), run with sh in both
calling conventions (postinst.d, kernel-install) against fake /lib/modules trees of a new kernel.
The hook asks the engine (vfio-passthrough kernel), installed as the role installs it: the zip of
module_utils (lookup hypervisor.vfio.engine_archive) and the vfio-passthrough command."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.hypervisor.vfio.plugins.module_utils import persist
from ansible_collections.hypervisor.vfio.tests.playbook import run_playbook
from ansible_collections.hypervisor.vfio.tools.fakehost import GENERIC_VFIO_ALIAS, FakeHost

NEW = '6.12.57+deb12-amd64'
VARIANT_ALIAS = 'alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci'


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The hook and the engine command as the engine writes them, and the engine zip built by Ansible."""
    tmp = tmp_path_factory.mktemp('hook')
    h = FakeHost(tmp / 'host')
    h.add_module('vfio_pci', driver='vfio-pci')
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True)
    h.add_device('0000:00:04.0', '1af4', '1041', driver='virtio_vfio_pci', override='virtio_vfio_pci')
    h.add_device('0000:00:05.0', '8086', '10d3', driver='vfio-pci', override='vfio-pci')
    state = tmp / 'state.json'
    state.write_text(json.dumps({'format': 1, 'devices': [
        {'address': '0000:00:04.0', 'vendor': '1af4', 'device': '1041', 'driver': None},
        {'address': '0000:00:05.0', 'vendor': '8086', 'device': '10d3', 'driver': None}], 'sriov': []}))
    # the engine command of the test sees the fake host's sysfs and proc
    engine = tmp / 'engine'
    engine.write_text('#!/bin/sh\nexec sh %s "$@" --sysfs %s --procfs %s\n' % (tmp / 'vfio-passthrough', h.sys, h.proc))
    engine.chmod(0o755)
    (tmp / 'vfio-passthrough').write_text(persist.engine_command({'engine_python': sys.executable},
                                                                 archive=str(tmp / 'engine.zip')))
    (tmp / 'kernel-hook.sh').write_text(persist.kernel_hook(command=str(engine), state=str(state)))
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'tasks': [
                 {'name': 'build the engine', 'ansible.builtin.copy': {
                     'src': "{{ lookup('hypervisor.vfio.engine_archive') }}", 'dest': str(tmp / 'engine.zip'),
                     'mode': '0644'}}]}]
    (tmp / 'render.yml').write_text(yaml.safe_dump(play))
    rc, output = run_playbook(tmp, [tmp / 'render.yml'], timeout=300)
    assert rc == 0, output
    return tmp / 'kernel-hook.sh'


def run(hook, moddir, *args):
    # A PATH without logger, so nothing reaches this machine's journal.
    bindir = os.path.join(os.path.dirname(str(hook)), 'bin')
    if not os.path.isdir(bindir):
        os.makedirs(bindir)
        os.symlink(shutil.which('sh'), os.path.join(bindir, 'sh'))
    env = dict(os.environ, HYPERVISOR_VFIO_MODULES_DIR=str(moddir), PATH=bindir)
    p = subprocess.run([shutil.which('sh'), str(hook)] + list(args), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=120, check=False)
    return p.returncode, p.stderr


def kernel(tmp_path, aliases, dep, builtin=''):
    d = tmp_path / 'modules' / NEW
    d.mkdir(parents=True)
    (d / 'modules.alias').write_text('\n'.join(aliases) + '\n')
    (d / 'modules.dep').write_text(dep)
    (d / 'modules.builtin').write_text(builtin)
    return tmp_path / 'modules'


def test_new_kernel_with_every_driver(tmp_path, installed):
    moddir = kernel(tmp_path, [GENERIC_VFIO_ALIAS, VARIANT_ALIAS],
                    'kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz\n'
                    'kernel/drivers/vfio/pci/virtio/virtio-vfio-pci.ko.xz:\n')
    rc, err = run(installed, moddir, NEW, '/boot/vmlinuz-' + NEW)
    assert rc == 0, err
    assert 'hypervisor-vfio: 0000:00:04.0: kernel %s ships virtio_vfio_pci (resolved)' % NEW in err
    assert 'hypervisor-vfio: 0000:00:05.0: kernel %s ships vfio_pci (resolved)' % NEW in err
    assert 'WARNING' not in err


def test_new_kernel_without_the_variant_falls_back_and_never_fails(tmp_path, installed):
    # vfio-pci built in, the virtio variant gone: the engine resolves vfio_pci for the virtio
    # device at boot (a kernel-install plugin call this time).
    moddir = kernel(tmp_path, [GENERIC_VFIO_ALIAS], 'kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.zst:\n',
                    'kernel/drivers/vfio/pci/vfio-pci.ko\n')
    rc, err = run(installed, moddir, 'add', NEW, '/boot/efi/abc/' + NEW, '/boot/vmlinuz-' + NEW)
    assert rc == 0, err
    assert '0000:00:04.0: kernel %s ships vfio_pci (resolved)' % NEW in err
    assert run(installed, moddir, 'remove', NEW)[1] == ''


def test_new_kernel_with_no_vfio_driver_warns_and_never_fails(tmp_path, installed):
    moddir = kernel(tmp_path, [], 'kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.zst:\n')
    rc, err = run(installed, moddir, NEW)
    assert rc == 0
    assert 'WARNING: 0000:00:05.0: kernel %s has no VFIO driver for it' % NEW in err


def test_kernel_without_module_files_or_a_bad_version(tmp_path, installed):
    rc, err = run(installed, tmp_path, NEW)
    assert rc == 0 and 'could not be checked (exit 2)' in err and 'modules.dep is missing' in err
    assert run(installed, tmp_path, '../../etc') == (0, '')
    assert run(installed, tmp_path) == (0, '')

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel hook (templates/kernel-hook.sh.j2) rendered by Ansible, then run with sh against
fake /lib/modules trees of a new kernel, in both calling conventions (postinst.d, kernel-install)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import subprocess

import pytest
import yaml

from test_templates import ROLE, ansible_playbook  # noqa: I202 (this folder's sibling test)

NEW = '6.12.57+deb12-amd64'


@pytest.fixture(scope='module')
def hook(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('hook')
    with open(os.path.join(ROLE, 'vars', 'main.yml')) as f:
        role_vars = yaml.safe_load(f)
    dest = tmp / 'hook.sh'
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': dict(role_vars, passthrough_persist_modules=['vfio_pci', 'virtio_vfio_pci']),
             'tasks': [{'name': 'render', 'ansible.builtin.copy': {
                 'content': "{{ lookup('ansible.builtin.template', '%s/templates/kernel-hook.sh.j2') }}" % ROLE,
                 'dest': str(dest), 'mode': '0755'}}]}]
    (tmp / 'render.yml').write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_HOME=str(tmp / 'home'), ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
    p = subprocess.run([ansible_playbook(), str(tmp / 'render.yml')], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout
    return dest


def run(hook, moddir, *args):
    # A PATH with only the tools the hook needs: no logger, so nothing reaches this machine's journal.
    bindir = os.path.join(os.path.dirname(str(hook)), 'bin')
    if not os.path.isdir(bindir):
        os.makedirs(bindir)
        for tool in ('grep', 'sed'):
            os.symlink(shutil.which(tool), os.path.join(bindir, tool))
    env = dict(os.environ, HYPERVISOR_VFIO_MODULES_DIR=str(moddir), PATH=bindir)
    p = subprocess.run([shutil.which('sh'), str(hook)] + list(args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=60, check=False)
    return p.returncode, p.stderr


def kernel(tmp_path, dep, builtin=''):
    d = tmp_path / 'modules' / NEW
    d.mkdir(parents=True)
    (d / 'modules.dep').write_text(dep)
    (d / 'modules.builtin').write_text(builtin)
    return tmp_path / 'modules'


def test_new_kernel_with_every_module(tmp_path, hook):
    moddir = kernel(tmp_path, 'kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz\n'
                              'kernel/drivers/vfio/pci/virtio/virtio-vfio-pci.ko.xz:\n')
    rc, err = run(hook, moddir, NEW, '/boot/vmlinuz-' + NEW)
    assert rc == 0 and 'ships the VFIO modules of the persisted devices (vfio_pci virtio_vfio_pci)' in err
    assert 'WARNING' not in err


def test_new_kernel_without_the_variant_warns_and_never_fails(tmp_path, hook):
    # vfio-pci built in, the virtio variant gone: a kernel-install plugin call this time.
    moddir = kernel(tmp_path, 'kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.zst:\n',
                    'kernel/drivers/vfio/pci/vfio-pci.ko\n')
    rc, err = run(hook, moddir, 'add', NEW, '/boot/efi/abc/' + NEW, '/boot/vmlinuz-' + NEW)
    assert rc == 0
    assert 'WARNING: kernel %s has no module virtio_vfio_pci:' % NEW in err and 'vfio_pci virtio' not in err
    assert run(hook, moddir, 'remove', NEW)[1] == ''


def test_kernel_without_module_files_or_a_bad_version(tmp_path, hook):
    rc, err = run(hook, tmp_path, NEW)
    assert rc == 0 and 'modules.dep is missing' in err
    assert run(hook, tmp_path, '../../etc') == (0, '')
    assert run(hook, tmp_path) == (0, '')

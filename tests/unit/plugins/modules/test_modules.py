# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules end to end through AnsibleModule, on fake trees (reads and check mode only:
real sysfs semantics are the fake kernel's business, in module_utils tests)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.modules import vfio_bind, vfio_facts, vfio_sriov
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, add_mgmt
from ansible_collections.hypervisor.vfio.tests.unit.plugins.modules.module_runner import host_args, path_args, run_module


def snapshot(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in files + dirs:
            p = os.path.join(d, name)
            out[p] = os.readlink(p) if os.path.islink(p) else (open(p).read() if os.path.isfile(p) else None)
    return out


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path)
    h.add_modules('vfio_pci', 'virtio_vfio_pci', 'virtio_pci')
    add_mgmt(h)
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio-pci')
    return h


def test_facts_module(host, capsys):
    out = run_module(vfio_facts, path_args(host), capsys, check_mode=True)
    assert not out['changed']
    vfio = out['ansible_facts']['vfio']
    assert vfio['devices']['0000:00:03.0']['vfio_module'] == 'virtio_vfio_pci'
    assert vfio['kernel_release'] == host.release


def test_facts_module_bad_release(host, capsys):
    out = run_module(vfio_facts, dict(path_args(host), kernel_release='../../etc'), capsys)
    assert out['failed'] and 'is not a kernel release name' in out['msg']


def test_bind_check_mode_diff_writes_nothing(host, capsys):
    before = snapshot(host.root)
    args = host_args(host, devices=['00:03.0'])
    out = run_module(vfio_bind, args, capsys, check_mode=True, diff=True)
    assert out['changed']
    (d,) = out['devices']
    assert (d['action'], d['module'], d['driver_after']) == ('rebind', 'virtio_vfio_pci', 'virtio_vfio_pci')
    assert out['diff']['before']['0000:00:03.0'] == {'driver': 'virtio-pci', 'driver_override': None}
    assert snapshot(host.root) == before


def test_bind_refuses_management_nic(host, capsys):
    before = snapshot(host.root)
    args = host_args(host, devices=['0000:00:02.0'])
    out = run_module(vfio_bind, args, capsys)
    assert out['failed']
    assert 'refused before changing anything' in out['msg'] and 'eth0 carries the default route' in out['msg']
    after = snapshot(host.root)
    after.pop(os.path.join(host.root, 'lock'))
    assert after == before


@pytest.mark.parametrize('args, message', [
    (dict(devices='0000:00:03.0,junk'), 'is not a pci address'),
    (dict(devices=[{'address': '0000:00:03.0', 'driver': 'a/b'}]), 'must be a kernel module or driver name'),
    (dict(devices=['0000:00:03.0'], driver='vfio_pci\n'), 'must be a kernel module or driver name'),
    (dict(devices=['0000:00:03.0'], timeout=0), 'timeout must be'),
    (dict(devices=['0000:00:03.0'], state='host', driver='vfio_pci'), 'meaningless with state=host'),
])
def test_bind_bad_input(host, capsys, args, message):
    before = snapshot(host.root)
    out = run_module(vfio_bind, dict(path_args(host), **args), capsys)
    assert out['failed'] and message in out['msg'] and 'nothing was changed' in out['msg']
    assert snapshot(host.root) == before


def test_sriov_check_mode_diff_writes_nothing(host, capsys, tmp_path):
    host.add_device('0000:01:00.0', '8086', '10c9', sriov_totalvfs=7)
    before = snapshot(host.root)
    out = run_module(vfio_sriov, dict(path_args(host), pfs=[{'pf': '01:00.0', 'numvfs': '2'}],
                                      lock_file=str(tmp_path / 'lock'), return_facts=True),
                     capsys, check_mode=True, diff=True)
    assert out['changed'] and out['pfs'][0]['action'] == 'create' and out['pfs'][0]['result'] == 'planned'
    assert out['diff']['after']['0000:01:00.0'] == {'sriov_numvfs': 2, 'sriov_drivers_autoprobe': False}
    assert out['ansible_facts']['vfio']['devices']['0000:01:00.0']['sriov_totalvfs'] == 7
    assert snapshot(host.root) == before


def test_sriov_refuses_before_any_write(host, capsys, tmp_path):
    out = run_module(vfio_sriov, dict(path_args(host), pfs=[{'pf': '0000:00:02.0', 'numvfs': 1}],
                                      lock_file=str(tmp_path / 'lock')), capsys)
    assert out['failed'] and 'not an SR-IOV physical function' in out['msg'] and out['errors']

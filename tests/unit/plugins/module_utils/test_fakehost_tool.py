# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tools/fakehost.py, the fake-hypervisor generator users run: its trees are read by the facts
core and planned, bound (through the fake kernel) and re-run by vfio_bind's core."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed, run_bind
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeKernel
from ansible_collections.hypervisor.vfio.tools import fakehost


def no_modprobe(argv):
    raise AssertionError('modprobe must never run against a fake tree: %r' % (argv,))


def bind_params(info, **kw):
    role = info['role_vars']
    p = dict(info['module_options'], kernel_release=None, lock_file=role['passthrough_lock_file'],
             lock_timeout=5, timeout=2, journal_file=role['passthrough_journal_file'], state='vfio', driver=None,
             iommu_group='strict', force=False, devices=[{'address': a} for a in info['devices']])
    p.update(kw)
    return p


def test_facts_of_a_generated_host(tmp_path):
    info = fakehost.generate(str(tmp_path / 'h'), nic=1, gpu=1, nvme=1, sriov_pf=1, vfs=3, virtio=1)
    f = collect_facts(HostContext(dict(info['module_options'], kernel_release=None)))
    devs = f['devices']
    # GPU + audio, NIC, NVMe, PF + 3 VFs, virtio; the PF is not a passthrough candidate
    assert len(devs) == 9 and len(info['devices']) == 8
    gpu, audio = '0000:01:00.0', '0000:01:00.1'
    assert devs[gpu]['iommu_group'] == devs[audio]['iommu_group']
    assert f['iommu_groups'][str(devs[gpu]['iommu_group'])]['devices'] == [gpu, audio]
    assert (devs[audio]['driver'], devs[audio]['class']) == ('snd_hda_intel', '040300')
    pf = [a for a, d in devs.items() if d['sriov_totalvfs']][0]
    assert devs[pf]['sriov_numvfs'] == 3 and len(devs[pf]['virtfns']) == 3
    assert all(devs[vf]['physfn'] == pf for vf in devs[pf]['virtfns'])
    virtio = [a for a, d in devs.items() if d['vendor'] == '1af4'][0]
    assert devs[virtio]['vfio_module'] == 'virtio_vfio_pci' and devs[virtio]['net_interfaces']
    assert all(devs[a]['vfio_module'] == 'vfio_pci' for a in info['devices'] if a != virtio)
    nvme = [a for a, d in devs.items() if d['driver'] == 'nvme'][0]
    assert f['iommu']['enabled'] and not f['warnings']
    assert not any(d['vfio_bound'] for d in devs.values())
    assert info['vfio_drivers'][virtio] == 'virtio_vfio_pci' and info['vfio_drivers'][nvme] == 'vfio-pci'


def test_vfio_bind_plans_binds_and_reruns_on_a_generated_host(tmp_path):
    g = fakehost.Generator(str(tmp_path / 'h'))
    g.nic()
    g.nic()
    g.gpu()
    g.virtio()
    os.makedirs(str(tmp_path / 'h' / 'run'))
    info = g.describe()
    p = bind_params(info)
    # check mode through the real KernelFS: every candidate planned, nothing written
    before = sorted(os.listdir(os.path.join(info['root'], 'sys', 'bus', 'pci', 'drivers')))
    res = run_bind(p, HostContext(p), no_modprobe, check_mode=True)
    assert res['changed'] and [d['address'] for d in res['devices']] == info['devices']
    assert sorted(os.listdir(os.path.join(info['root'], 'sys', 'bus', 'pci', 'drivers'))) == before
    # a real run through the real KernelFS: no kernel behind the tree, the unbind write fails,
    # the run rolls back and says so (what the README says a fake tree cannot do)
    with pytest.raises(BindFailed) as e:
        run_bind(p, HostContext(p), no_modprobe)
    assert 'rolled back' in str(e.value)
    # through the unit tests' fake kernel (the kernel's write semantics, in-process) it binds
    kernel = FakeKernel(g.host)
    res = run_bind(p, HostContext(p, fs=kernel), no_modprobe, may_load_modules=False)
    assert res['changed']
    f = collect_facts(HostContext(dict(info['module_options'], kernel_release=None)))
    assert dict((a, f['devices'][a]['driver']) for a in info['devices']) == info['vfio_drivers']
    # and the re-run through the real KernelFS has nothing to write
    assert not run_bind(p, HostContext(p), no_modprobe)['changed']


def test_a_vfio_state_host_is_an_idempotent_rerun(tmp_path):
    info = fakehost.generate(str(tmp_path / 'h'), nic=1, gpu=1, nvme=1, sriov_pf=1, vfs=2, virtio=1, state='vfio')
    f = collect_facts(HostContext(dict(info['module_options'], kernel_release=None)))
    assert all(f['devices'][a]['vfio_bound'] for a in info['devices'])
    assert dict((a, f['devices'][a]['driver']) for a in info['devices']) == info['vfio_drivers']
    assert all(f['iommu_groups'][str(f['devices'][a]['iommu_group'])]['viable'] for a in info['devices'])
    assert not any(f['devices'][a]['net_interfaces'] for a in info['devices'])
    p = bind_params(info)
    res = run_bind(p, HostContext(p), no_modprobe)    # the real KernelFS: nothing to write
    assert not res['changed']
    assert all(d['action'] == 'none' for d in res['devices'])
    assert not os.path.exists(p['journal_file'])


def test_cli(tmp_path, capsys):
    root = str(tmp_path / 'h')
    assert fakehost.main([root, '--nic', '1', '--gpu', '0', '--nvme', '0', '--sriov-pf', '0', '--virtio', '0']) == 0
    role_vars = json.loads(capsys.readouterr().out)
    assert role_vars['passthrough_devices'] == ['0000:01:00.0']
    assert role_vars['passthrough_sysfs_path'] == os.path.join(root, 'sys')
    assert role_vars['passthrough_lock_file'].startswith(root + os.sep)
    assert not role_vars['passthrough_persistent'] and not role_vars['passthrough_iommu_cmdline']
    with open(os.path.join(root, 'fakehost.json')) as f:
        assert json.load(f)['role_vars'] == role_vars
    with pytest.raises(SystemExit):     # an existing tree is not replaced without --force
        fakehost.main([root])
    assert fakehost.main([root, '--force', '--nic', '0', '--gpu', '1', '--nvme', '0', '--sriov-pf', '0',
                          '--virtio', '0']) == 0
    assert json.loads(capsys.readouterr().out)['passthrough_devices'] == ['0000:01:00.0', '0000:01:00.1']
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'file').write_text('x')
    with pytest.raises(SystemExit):     # --force never removes a folder that is not a fake host
        fakehost.main([str(other), '--force'])
    assert (other / 'file').exists()

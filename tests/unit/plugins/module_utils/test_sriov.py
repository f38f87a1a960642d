# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_sriov's core (plan + executor) against the fake kernel's sriov_numvfs semantics."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError
from ansible_collections.hypervisor.vfio.plugins.module_utils.sriov import SriovFailed, parse_pfs, run_sriov
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost

PF = '0000:01:00.0'
PF2 = '0000:02:00.0'
NIC = '0000:00:04.0'


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path)
    h.add_modules('igb', 'igbvf')
    h.add_device(PF, '8086', '10c9', driver='igb', sriov_totalvfs=7)
    h.add_device(PF2, '8086', '10c9', driver='igb', sriov_totalvfs=7)
    h.add_device(NIC, '8086', '10d3')
    return h


class Clock:
    """A monotonic clock that the executor's sleep advances: bounded waits end at once."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def sriov(host, kernel, pfs, check_mode=False, clock=None, **kw):
    clock = clock or Clock()
    p = dict(pfs=pfs, force=False, timeout=5, wait_timeout=3, lock_file=os.path.join(host.root, 'vfio.lock'),
             lock_timeout=5)
    p.update(kw)
    return run_sriov(p, kernel, check_mode=check_mode, clock=clock, sleep=clock.sleep)


def numvfs(kernel, pf):
    return kernel._sriov_attr(pf, 'sriov_numvfs'), kernel._sriov_attr(pf, 'sriov_drivers_autoprobe')


def vfs_of(host, pf):
    d = host.dev_dir(pf)
    return sorted(os.path.basename(os.readlink(os.path.join(d, n))) for n in os.listdir(d) if n.startswith('virtfn'))


def test_creates_vfs_autoprobe_first_and_waits_for_them(host, kernel):
    r = sriov(host, kernel, [{'pf': '01:00.0', 'numvfs': 2}])
    assert r['changed']
    (e,) = r['pfs']
    assert e['action'] == 'create' and e['result'] == 'changed'
    assert e['vfs'] == ['0000:02:10.0', '0000:02:10.1'] == vfs_of(host, PF)
    # autoprobe off before the count: no host driver took the new VFs
    assert kernel.device_writes() == [('bus/pci/devices/%s/sriov_drivers_autoprobe' % PF, '0'),
                                      ('bus/pci/devices/%s/sriov_numvfs' % PF, '2')]
    assert numvfs(kernel, PF) == ('2', '0')
    assert all(kernel._driver_of(v) is None for v in e['vfs'])
    for v in e['vfs']:
        assert os.readlink(os.path.join(host.dev_dir(v), 'physfn')).endswith(PF)
    assert r['diff'] == {'before': {PF: {'sriov_numvfs': 0, 'sriov_drivers_autoprobe': True}},
                         'after': {PF: {'sriov_numvfs': 2, 'sriov_drivers_autoprobe': False}}}


def test_second_run_writes_nothing(host, kernel):
    sriov(host, kernel, [{'pf': PF, 'numvfs': 2}])
    n = len(kernel.log)
    r = sriov(host, kernel, [{'pf': PF, 'numvfs': 2}])
    assert not r['changed'] and r['pfs'][0]['result'] == 'unchanged' and r['pfs'][0]['action'] == 'none'
    assert len(kernel.log) == n


def test_autoprobe_on_lets_the_host_driver_take_the_vfs(host, kernel):
    r = sriov(host, kernel, [{'pf': PF, 'numvfs': 1, 'drivers_autoprobe': True}])
    assert kernel._driver_of(r['pfs'][0]['vfs'][0]) == 'igbvf'
    assert [w[0].rsplit('/', 1)[1] for w in kernel.device_writes()] == ['sriov_numvfs']


def test_check_mode_plans_and_writes_nothing(host, kernel):
    r = sriov(host, kernel, [{'pf': PF, 'numvfs': 3}], check_mode=True)
    assert r['changed'] and r['pfs'][0]['result'] == 'planned' and r['pfs'][0]['action'] == 'create'
    assert kernel.log == [] and vfs_of(host, PF) == []


def test_changing_a_nonzero_count_needs_force_and_goes_through_zero(host, kernel):
    sriov(host, kernel, [{'pf': PF, 'numvfs': 2}])
    with pytest.raises(SriovFailed) as exc:
        sriov(host, kernel, [{'pf': PF, 'numvfs': 4}])
    assert 'destroys them' in str(exc.value) and 'force' in str(exc.value)
    assert exc.value.result['errors'] and vfs_of(host, PF) == ['0000:02:10.0', '0000:02:10.1']
    kernel.log[:] = []
    r = sriov(host, kernel, [{'pf': PF, 'numvfs': 4}], force=True)
    assert r['pfs'][0]['action'] == 'resize' and len(r['pfs'][0]['vfs']) == 4
    assert [w[1] for w in kernel.device_writes()] == ['0', '4']


def test_the_fake_kernel_refuses_a_count_change_without_zero(host, kernel):
    # the rule the plan follows is the kernel's: EBUSY
    sriov(host, kernel, [{'pf': PF, 'numvfs': 2}])
    with pytest.raises(Exception) as exc:
        kernel.write('bus/pci/devices/%s/sriov_numvfs' % PF, '3')
    assert getattr(exc.value, 'errno', None) == 16


def test_refusals_before_any_write(host, kernel):
    with pytest.raises(SriovFailed) as exc:
        sriov(host, kernel, [{'pf': PF, 'numvfs': 8}, {'pf': NIC, 'numvfs': 1}, {'pf': '0000:09:00.0', 'numvfs': 1}])
    errors = exc.value.result['errors']
    assert len(errors) == 3
    assert 'at most 7' in errors[0] and 'not an SR-IOV physical function' in errors[1] and 'no such' in errors[2]
    assert kernel.log == []


@pytest.mark.parametrize('pfs,msg', [
    ([{'pf': 'zz', 'numvfs': 1}], 'quoted PCI address'),
    ([{'pf': PF, 'numvfs': -1}], 'numvfs must be'),
    ([{'pf': PF, 'numvfs': 1, 'colour': 1}], 'unknown keys'),
    ([{'pf': PF, 'numvfs': 1}, {'pf': '01:00.0', 'numvfs': 2}], 'listed twice'),
    ([{'pf': PF, 'numvfs': 1, 'drivers_autoprobe': 'maybe'}], 'boolean'),
])
def test_bad_input(pfs, msg):
    with pytest.raises(RequestError, match=msg):
        parse_pfs(pfs)


def test_failure_on_a_later_pf_removes_the_vfs_this_call_created(host, kernel):
    kernel.fail_write['bus/pci/devices/%s/sriov_numvfs' % PF2] = 12  # ENOMEM
    with pytest.raises(SriovFailed) as exc:
        sriov(host, kernel, [{'pf': PF, 'numvfs': 2}, {'pf': PF2, 'numvfs': 2}])
    f = exc.value.result['failure']
    assert f['device'] == PF2 and 'sriov_numvfs=2' in f['step'] and not f['pending']
    assert sorted(f['rolled_back']) == [PF, PF2] and not f['rollback_problems']
    assert vfs_of(host, PF) == [] and numvfs(kernel, PF) == ('0', '1') and numvfs(kernel, PF2) == ('0', '1')
    assert 'put back to their previous VF count' in str(exc.value) and 'injected failure' in str(exc.value)


def test_vfs_that_never_appear_end_within_the_wait_bound(host, kernel):
    kernel.sriov_setup(PF, no_vfs=True)
    clock = Clock()
    with pytest.raises(SriovFailed) as exc:
        sriov(host, kernel, [{'pf': PF, 'numvfs': 2}], clock=clock, wait_timeout=3)
    f = exc.value.result['failure']
    assert f['step'] == 'wait for 2 VFs' and 'after 3s' in f['error']
    assert 3 <= clock.now < 3.5
    assert numvfs(kernel, PF) == ('0', '1')  # rolled back: count 0, autoprobe as before


def test_a_blocked_write_is_pending_and_not_rolled_back(host, kernel):
    kernel.sriov_setup(PF2, hang=True)
    with pytest.raises(SriovFailed) as exc:
        sriov(host, kernel, [{'pf': PF, 'numvfs': 1}, {'pf': PF2, 'numvfs': 1}])
    f = exc.value.result['failure']
    assert f['pending'] and f['rolled_back'] == [PF]
    assert 'still pending' in f['rollback_problems'][0]
    assert [p['result'] for p in exc.value.result['pfs']] == ['rolled_back', 'pending']
    assert vfs_of(host, PF) == []


def test_remove_vfs_needs_force_and_unbinds_them(host, kernel):
    sriov(host, kernel, [{'pf': PF, 'numvfs': 2, 'drivers_autoprobe': True}])
    r = sriov(host, kernel, [{'pf': PF, 'numvfs': 0, 'drivers_autoprobe': True}], force=True)
    assert r['pfs'][0]['action'] == 'remove' and r['pfs'][0]['vfs'] == [] and vfs_of(host, PF) == []
    assert not os.path.exists(os.path.join(host.sys, 'bus/pci/devices/0000:02:10.0'))


def test_restore_of_vfs_without_autoprobe_then_a_rerun_writes_nothing(host, kernel):
    """With sriov_drivers_autoprobe 0 the kernel probes no host driver for a VF (only its
    driver_override): restore leaves the VFs unbound, and a second restore is a no-op instead of
    a drivers_probe per VF on every run (it reported changed each time)."""
    from ansible_collections.hypervisor.vfio.tests.unit.fakesys import bind_on
    host.add_module('vfio_pci', driver='vfio-pci')
    sriov(host, kernel, [{'pf': PF, 'numvfs': 2}])
    vfs = vfs_of(host, PF)
    r = bind_on(host, kernel, devices=[{'physfn': PF}])
    assert r['changed'] and [kernel._driver_of(v) for v in vfs] == ['vfio-pci', 'vfio-pci']

    r = bind_on(host, kernel, devices=[{'physfn': PF}], state='host')
    assert r['changed'] and [e['action'] for e in r['devices']] == ['restore', 'restore']
    assert [(kernel._driver_of(v), kernel._override(v)) for v in vfs] == [(None, None), (None, None)]
    assert [e['driver_after'] for e in r['devices']] == [None, None]  # igbvf is not what the kernel will do

    kernel.log[:] = []
    r = bind_on(host, kernel, devices=[{'physfn': PF}], state='host')
    assert not r['changed'] and kernel.device_writes() == [], kernel.log
    for e in r['devices']:
        assert e['action'] == 'none', e
        assert e['reason'] == ('unbound, and its PF %s has sriov_drivers_autoprobe 0, so the kernel probes no '
                               'host driver (igbvf) for a VF' % PF), e

    # A leftover driver_override is still cleared (one write), and autoprobe on gives igbvf back.
    kernel.write('bus/pci/devices/%s/driver_override' % vfs[0], 'vfio-pci')
    kernel.log[:] = []
    r = bind_on(host, kernel, devices=[{'physfn': PF}], state='host')
    assert [e['action'] for e in r['devices']] == ['clear_override', 'none'] and kernel._override(vfs[0]) is None
    kernel.write('bus/pci/devices/%s/sriov_drivers_autoprobe' % PF, '1')
    r = bind_on(host, kernel, devices=[{'physfn': PF}], state='host')
    assert [e['action'] for e in r['devices']] == ['restore', 'restore']
    assert [kernel._driver_of(v) for v in vfs] == ['igbvf', 'igbvf']

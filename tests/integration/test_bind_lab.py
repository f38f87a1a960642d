# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_facts and vfio_bind on the lab's real kernel (issue 4's proofs)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

pytestmark = pytest.mark.lab


def test_facts_on_real_kernel(lab):
    facts = lab.facts()
    assert facts['iommu']['enabled'] and facts['iommu']['group_count'] > 0
    dev = facts['devices']
    variant = dev[lab.devices['variant']]
    assert (variant['vendor'], variant['device']) == ('1af4', '1041')
    assert variant['vfio_module'] == 'virtio_vfio_pci'
    assert [c['module'] for c in variant['vfio_candidates']][:2] == ['virtio_vfio_pci', 'vfio_pci']
    assert dev[lab.devices['testdev']]['vfio_module'] == 'vfio_testdev'
    assert dev[lab.devices['generic']]['vfio_module'] == 'vfio_pci'
    assert dev[lab.devices['mgmt']]['driver'] is not None
    for addr in lab.devices['group']:
        group = str(dev[addr]['iommu_group'])
        assert sorted(facts['iommu_groups'][group]['devices']) >= sorted(lab.devices['group'])


def test_generic_device_to_vfio_pci_and_idempotent(lab, clean):
    addr = lab.devices['generic']
    ok, res = lab.module('vfio_bind', {'devices': [addr]})
    assert ok, res
    assert res['changed'] and res['devices'][0]['module'] == 'vfio_pci'
    assert lab.state(addr) == ('vfio-pci', 'vfio-pci')
    ok, res = lab.module('vfio_bind', {'devices': [addr]})
    assert ok and not res['changed'], res
    assert res['devices'][0]['action'] == 'none'


def test_virtio_net_gets_its_variant(lab, clean):
    addr = lab.devices['variant']
    ok, res = lab.module('vfio_bind', {'devices': [addr]})
    assert ok, res
    d = res['devices'][0]
    assert d['module'] == 'virtio_vfio_pci' and d['driver_before'] == 'virtio-pci'
    assert lab.driver(addr) == 'virtio_vfio_pci'
    assert lab.ssh('test -d /sys/bus/pci/devices/%s/vfio-dev && echo yes' % addr).strip() == 'yes'
    facts = lab.facts()
    assert facts['devices'][addr]['vfio_bound']


def test_check_mode_writes_nothing(lab, clean):
    addrs = [lab.devices['generic'], lab.devices['variant'], lab.devices['testdev']]
    before = lab.states(addrs)
    modules_before = lab.ssh('ls /sys/module | grep vfio || true')
    ok, res = lab.module('vfio_bind', {'devices': addrs}, check=True, diff=True)
    assert ok and res['changed'], res
    assert [d['result'] for d in res['devices']] == ['planned'] * 3
    assert lab.states(addrs) == before
    assert lab.ssh('ls /sys/module | grep vfio || true') == modules_before


def test_state_host_returns_original_drivers(lab, clean):
    addrs = [lab.devices['generic'], lab.devices['variant']]
    ok, res = lab.module('vfio_bind', {'devices': addrs})
    assert ok, res
    ok, res = lab.module('vfio_bind', {'devices': addrs, 'state': 'host'})
    assert ok, res
    for a in addrs:
        assert lab.state(a) == clean[a]
    ok, res = lab.module('vfio_bind', {'devices': addrs, 'state': 'host'})
    assert ok and not res['changed'], res


def test_management_nic_refused(lab, clean):
    mgmt = lab.devices['mgmt']
    before = lab.state(mgmt)
    ok, res = lab.module('vfio_bind', {'devices': [mgmt, lab.devices['generic']]})
    assert not ok
    assert 'refused before changing anything' in res['msg']
    # reached through become (SSH_CONNECTION gone): the session is found in the kernel
    assert 'carries the default route' in res['msg'] and 'carries the live SSH session' in res['msg']
    assert lab.state(mgmt) == before
    assert lab.state(lab.devices['generic']) == clean[lab.devices['generic']]


def test_mounted_disk_refused(lab, clean):
    disk = lab.devices['disk']
    before = lab.state(disk)
    ok, res = lab.module('vfio_bind', {'devices': [disk]})
    assert not ok and 'is mounted on' in res['msg'], res
    assert lab.state(disk) == before


def test_test_variant_by_override_only_alias(lab, clean):
    addr = lab.devices['testdev']
    ok, res = lab.module('vfio_bind', {'devices': [addr]})
    assert ok, res
    assert res['devices'][0]['action'] == 'bind'
    assert lab.state(addr) == ('vfio_testdev', 'vfio_testdev')

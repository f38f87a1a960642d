# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fault matrix of docs/reliability.md, on the lab's real kernel.

Faults come from the test variant driver's parameters (tests/lab/vfio_testdev:
fail_probe, remove_delay_ms), from modprobe configuration, from a process holding
/dev/vfio/<group> open, and from concurrent runs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

import pytest

pytestmark = pytest.mark.lab

PARAMS = '/sys/module/vfio_testdev/parameters'


def set_fault(lab, name, value):
    lab.ssh('modprobe vfio_testdev && echo %s > %s/%s' % (value, PARAMS, name))


def test_variant_probe_fails_everything_rolled_back(lab, clean):
    generic, variant, testdev = lab.devices['generic'], lab.devices['variant'], lab.devices['testdev']
    set_fault(lab, 'fail_probe', 1)
    addrs = sorted([generic, variant, testdev])
    ok, res = lab.module('vfio_bind', {'devices': addrs})
    assert not ok
    f = res['failure']
    assert f['device'] == testdev and f['step'] == 'bind to vfio_testdev'
    assert f['kernel_log'], 'the kernel message of the failed probe is reported'
    assert testdev in res['msg'] and 'bind to vfio_testdev failed' in res['msg']
    assert f['rollback_problems'] == []
    for a in addrs:
        assert lab.state(a) == clean[a], a
    # the devices the call had already moved are among the rolled back
    assert set(f['rolled_back']) == set(a for a in addrs if a <= testdev)


def test_blacklisted_or_absent_module_refused_before_any_unbind(lab, clean):
    testdev, generic = lab.devices['testdev'], lab.devices['generic']
    conf = '/run/vfio-itest-modprobe.d'
    lab.ssh('mkdir -p %s && echo "blacklist vfio_testdev" > %s/bl.conf' % (conf, conf))
    try:
        ok, res = lab.module('vfio_bind', {'devices': [generic, {'address': testdev, 'driver': 'vfio_testdev'}],
                                           'modprobe_config_dirs': [conf]})
        assert not ok and 'blacklisted' in res['msg'] and 'refused before changing anything' in res['msg']
        ok, res = lab.module('vfio_bind', {'devices': [generic, {'address': testdev, 'driver': 'mlx5_vfio_pci'}]})
        assert not ok and "'mlx5_vfio_pci' is not a module of kernel" in res['msg']
    finally:
        lab.ssh('rm -rf %s' % conf)
    assert lab.state(generic) == clean[generic]
    assert lab.state(testdev) == clean[testdev]


def test_unbind_blocks_beyond_timeout_then_recovers(lab, clean):
    testdev = lab.devices['testdev']
    ok, res = lab.module('vfio_bind', {'devices': [testdev]})
    assert ok, res
    set_fault(lab, 'remove_delay_ms', 20000)
    t0 = time.monotonic()
    ok, res = lab.module('vfio_bind', {'devices': [{'address': testdev, 'driver': 'vfio_pci'}], 'timeout': 3})
    elapsed = time.monotonic() - t0
    assert not ok
    assert res['failure']['pending'] and 'still blocked after 3s' in res['msg']
    assert elapsed < 60, elapsed  # bounded: the SSH round trips under TCG, not the 20 s removal
    set_fault(lab, 'remove_delay_ms', 0)
    time.sleep(20)  # let the kernel finish the pending removal
    ok, res = lab.module('vfio_bind', {'devices': [{'address': testdev, 'driver': 'vfio_pci'}]})
    assert ok, res
    assert lab.state(testdev) == ('vfio-pci', 'vfio-pci')


def test_device_held_open_refused_without_force(lab, clean):
    generic = lab.devices['generic']
    ok, res = lab.module('vfio_bind', {'devices': [generic]})
    assert ok, res
    group = lab.facts()['devices'][generic]['iommu_group']
    holder = ("nohup /usr/bin/python3 -c 'import os,time; fd=os.open(\"/dev/vfio/%s\", os.O_RDWR); "
              "time.sleep(300)' >/dev/null 2>&1 & echo $!" % group)
    pid = lab.ssh(holder).strip()
    try:
        time.sleep(1)
        ok, res = lab.module('vfio_bind', {'devices': [generic], 'state': 'host'})
        assert not ok and ('/dev/vfio/%s is open by pid %s' % (group, pid)) in res['msg'], res
        ok, res = lab.module('vfio_bind', {'devices': [{'address': generic, 'driver': 'vfio_testdev'}],
                                           'iommu_group': 'ignore'})
        assert not ok and 'is open by pid' in res['msg'], res
        assert lab.state(generic) == ('vfio-pci', 'vfio-pci')
    finally:
        lab.ssh('kill %s || true' % pid)


def test_concurrent_runs_are_serialized(lab, clean):
    generic, variant = lab.devices['generic'], lab.devices['variant']
    results = {}

    def run(key, devices):
        results[key] = lab.module('vfio_bind', {'devices': devices})

    threads = [threading.Thread(target=run, args=('a', [generic, variant])),
               threading.Thread(target=run, args=('b', [variant, generic]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results['a'][0] and results['b'][0], results
    # one of them did the work, the other found it done
    assert sorted([results['a'][1]['changed'], results['b'][1]['changed']]) == [False, True]
    assert lab.state(generic) == ('vfio-pci', 'vfio-pci')
    assert lab.state(variant) == ('virtio_vfio_pci', 'virtio_vfio_pci')


def test_nic_with_address_refused(lab, clean):
    variant = lab.devices['variant']
    iface = lab.ssh('ls /sys/bus/pci/devices/%s/virtio*/net/ 2>/dev/null | head -1' % variant).strip()
    assert iface, 'the virtio-net of the lab has a network interface'
    lab.ssh('ip link set %s up && ip addr add 192.0.2.10/24 dev %s' % (iface, iface))
    try:
        ok, res = lab.module('vfio_bind', {'devices': [variant]})
        assert not ok and ('network interface %s has an IPv4 address' % iface) in res['msg'], res
        assert lab.state(variant) == clean[variant]
    finally:
        lab.ssh('ip addr flush dev %s' % iface)


def test_group_sharing_functions(lab, clean):
    group = lab.devices['group']
    ok, res = lab.module('vfio_bind', {'devices': [group[0]]})
    if len(group) > 1 and any(lab.driver(a) for a in group[1:]):
        assert not ok and 'is not viable' in res['msg'], res
    ok, res = lab.module('vfio_bind', {'devices': [group[0]], 'iommu_group': 'all'})
    assert ok, res
    assert sorted(d['address'] for d in res['devices']) == sorted(group)
    for a in group:
        assert lab.facts()['devices'][a]['vfio_bound']


def test_reset_method_and_d3cold_allowed_on_the_real_kernel(lab, clean):
    """The per-device settings are written after the binding and read back by the kernel, a re-run
    writes nothing, and the original values come back when asked."""
    generic = lab.devices['generic']
    methods = lab.sysfs(generic, 'reset_method').split()
    d3cold = lab.sysfs(generic, 'd3cold_allowed')
    assert methods and d3cold in ('0', '1'), (methods, d3cold)
    want = list(reversed(methods)) if len(methods) > 1 else methods
    flip = d3cold != '1'
    entry = {'address': generic, 'reset_method': want, 'd3cold_allowed': flip}
    ok, res = lab.module('vfio_bind', {'devices': [entry]})
    assert ok and res['changed'], res
    assert lab.state(generic) == ('vfio-pci', 'vfio-pci')
    assert lab.sysfs(generic, 'reset_method').split() == want
    assert lab.sysfs(generic, 'd3cold_allowed') == ('1' if flip else '0')
    ok, res = lab.module('vfio_bind', {'devices': [entry]})
    assert ok and not res['changed'] and res['devices'][0]['settings'] == [], res
    ok, res = lab.module('vfio_bind', {'devices': [{'address': generic, 'reset_method': methods,
                                                    'd3cold_allowed': d3cold == '1'}], 'state': 'host'})
    assert ok, res
    assert lab.sysfs(generic, 'reset_method').split() == methods and lab.sysfs(generic, 'd3cold_allowed') == d3cold

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_bind's core (plan + executor) against the fake kernel."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed, run_bind
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import MGMT, NIC, TESTDEV, VIRTIO, FakeHost, FakeKernel, nic_host, refused
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import bind_on as bind

DISK = '0000:00:06.0'


@pytest.fixture
def host(tmp_path):
    h = nic_host(tmp_path, 'vfio_pci', 'virtio_vfio_pci', 'vfio_testdev', 'virtio_pci', 'e1000e')
    h.add_device(TESTDEV, '1b36', '0005', cls='00ff00')
    h.add_device(DISK, '1af4', '1042', cls='010000', driver='virtio-pci', block=['vda'])
    return h


def state(host, kernel, addr):
    return kernel._driver_of(addr), kernel._override(addr)


def test_variant_chosen_by_fewest_wildcards(host, kernel):
    r = bind(host, kernel, devices=[VIRTIO])
    (d,) = r['devices']
    assert d['module'] == 'virtio_vfio_pci'
    assert [c['module'] for c in d['candidates']] == ['virtio_vfio_pci', 'vfio_pci']
    assert state(host, kernel, VIRTIO) == ('virtio_vfio_pci', 'virtio_vfio_pci')
    assert r['changed'] and d['action'] == 'rebind' and d['result'] == 'changed'
    assert r['modules_loaded'] == ['virtio_vfio_pci']


def test_driver_name_read_from_sys_module(host, kernel):
    """Module vfio_pci registers driver vfio-pci: the override must name the driver."""
    bind(host, kernel, devices=[NIC])
    assert state(host, kernel, NIC) == ('vfio-pci', 'vfio-pci')
    assert ('bus/pci/devices/%s/driver_override' % NIC, 'vfio-pci') in kernel.log


def test_steps_in_order_and_never_the_alias(host, kernel):
    bind(host, kernel, devices=[NIC])
    assert kernel.log == [
        ('modprobe', 'modprobe -d %s -- vfio_pci' % host.root),
        ('bus/pci/devices/%s/driver_override' % NIC, 'vfio-pci'),
        ('bus/pci/drivers/e1000e/unbind', NIC),
        ('bus/pci/drivers/vfio-pci/bind', NIC),
    ]


def test_idempotent_second_run_writes_nothing(host, kernel):
    bind(host, kernel, devices=[VIRTIO, NIC, TESTDEV])
    kernel.log[:] = []
    r = bind(host, kernel, devices=[VIRTIO, NIC, TESTDEV])
    assert not r['changed']
    assert kernel.log == []
    assert [d['action'] for d in r['devices']] == ['none', 'none', 'none']


def test_unbound_device_is_bound(host, kernel):
    r = bind(host, kernel, devices=[TESTDEV])
    assert r['devices'][0]['action'] == 'bind'
    assert state(host, kernel, TESTDEV) == ('vfio_testdev', 'vfio_testdev')
    assert not any(w[0].endswith('/unbind') for w in kernel.log)


def nic_on_vfio_pci(host):
    """NIC already bound to vfio-pci (loaded), without driver_override."""
    host.load('vfio_pci')
    host.detach(NIC)
    host.attach(NIC, 'vfio-pci')


def test_bound_without_override_only_sets_override(host, kernel):
    nic_on_vfio_pci(host)
    r = bind(host, kernel, devices=[NIC])
    assert r['devices'][0]['action'] == 'override'
    assert kernel.device_writes() == [('bus/pci/devices/%s/driver_override' % NIC, 'vfio-pci')]


def test_override_set_but_bound_elsewhere_rebinds(host, kernel):
    kernel.write('bus/pci/devices/%s/driver_override' % NIC, 'vfio-pci')
    kernel.log[:] = []
    r = bind(host, kernel, devices=[NIC])
    assert r['devices'][0]['action'] == 'rebind'
    assert state(host, kernel, NIC) == ('vfio-pci', 'vfio-pci')


def test_check_mode_plans_and_writes_nothing(host, kernel):
    r = bind(host, kernel, check_mode=True, devices=[VIRTIO, NIC, TESTDEV])
    assert kernel.log == []
    assert r['changed']
    assert [(d['action'], d['driver_after'], d['result']) for d in r['devices']] == [
        ('rebind', 'virtio_vfio_pci', 'planned'), ('rebind', 'vfio-pci', 'planned'),
        ('bind', 'vfio_testdev', 'planned')]
    assert r['diff']['before'][NIC] == {'driver': 'e1000e', 'driver_override': None}
    assert r['diff']['after'][NIC] == {'driver': 'vfio-pci', 'driver_override': 'vfio-pci'}


def test_pinned_driver_overrides_alias_search(host, kernel):
    r = bind(host, kernel, devices=[{'address': VIRTIO, 'driver': 'vfio-pci'}])
    assert r['devices'][0]['module'] == 'vfio_pci'
    assert state(host, kernel, VIRTIO) == ('vfio-pci', 'vfio-pci')


def test_state_host_restores_host_driver(host, kernel):
    bind(host, kernel, devices=[VIRTIO, NIC])
    r = bind(host, kernel, devices=[VIRTIO, NIC], state='host')
    assert [d['action'] for d in r['devices']] == ['restore', 'restore']
    assert state(host, kernel, VIRTIO) == ('virtio-pci', None)
    assert state(host, kernel, NIC) == ('e1000e', None)
    kernel.log[:] = []
    assert not bind(host, kernel, devices=[VIRTIO, NIC], state='host')['changed']
    assert kernel.log == []


def test_state_host_without_host_driver_reports_it(host, kernel):
    bind(host, kernel, devices=[TESTDEV])
    r = bind(host, kernel, devices=[TESTDEV], state='host')
    assert state(host, kernel, TESTDEV) == (None, None)
    assert any('no host driver' in w for w in r['warnings_list'])
    kernel.log[:] = []
    r = bind(host, kernel, devices=[TESTDEV], state='host')
    assert not r['changed'] and kernel.log == []
    assert 'has no host driver' in r['devices'][0]['reason']


def test_probe_failure_rolls_back_every_device(host, kernel):
    kernel.fail_probe.add('vfio_testdev')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[VIRTIO, NIC, TESTDEV])
    msg = str(e.value)
    assert '0000:00:05.0: bind to vfio_testdev failed' in msg
    assert 'probe with driver vfio_testdev failed with error -5' in msg
    assert state(host, kernel, VIRTIO) == ('virtio-pci', None)
    assert state(host, kernel, NIC) == ('e1000e', None)
    assert state(host, kernel, TESTDEV) == (None, None)
    failure = e.value.result['failure']
    assert failure['rolled_back'] == [TESTDEV, NIC, VIRTIO]
    assert failure['rollback_problems'] == []


def test_unbind_timeout_reports_pending_and_rolls_back_others(host, kernel):
    nic_on_vfio_pci(host)
    kernel.hang_unbind.add('vfio-pci')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[VIRTIO, {'address': NIC, 'driver': 'vfio_testdev'}], force=True)
    f = e.value.result['failure']
    assert f['pending'] and f['device'] == NIC
    assert 'still blocked' in f['error'] and 'held by a VM' in str(e.value)
    assert f['rolled_back'] == [VIRTIO]
    assert state(host, kernel, VIRTIO) == ('virtio-pci', None)


def test_blacklisted_variant_is_skipped_for_the_next(host, kernel):
    host.blacklist('virtio_vfio_pci')
    r = bind(host, kernel, devices=[VIRTIO])
    d = r['devices'][0]
    assert d['module'] == 'vfio_pci'
    assert d['candidates'][0]['blacklisted']
    assert any('skipped VFIO driver virtio_vfio_pci' in w for w in d['warnings'])


@pytest.mark.parametrize('how', ['blacklist', 'install'])
def test_pinned_blacklisted_module_refused_before_writes(host, kernel, how):
    host.blacklist('vfio_testdev', how=how)
    msg, dummy = refused(host, kernel, devices=[{'address': TESTDEV, 'driver': 'vfio_testdev'}])
    assert 'vfio_testdev' in msg and 'pin another driver' in msg


def test_module_that_modprobe_does_not_load_fails_before_any_device_write(host, kernel):
    kernel.blacklisted.add('virtio_vfio_pci')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC, VIRTIO])
    assert 'modprobe exited 0 but virtio_vfio_pci is not loaded' in str(e.value)
    assert 'No device was touched' in str(e.value)
    assert kernel.device_writes() == []


def test_absent_module_fails_before_any_write(host, kernel):
    msg, dummy = refused(host, kernel, devices=[{'address': NIC, 'driver': 'mlx5_vfio_pci'}])
    assert "driver 'mlx5_vfio_pci' is not a module of kernel" in msg


def test_management_nic_refused(host, kernel):
    msg, dummy = refused(host, kernel, devices=[MGMT, NIC])
    assert 'eth0 carries the default route' in msg


def test_force_bypasses_nic_guard_with_warning(host, kernel):
    r = bind(host, kernel, devices=[MGMT], force=True)
    assert r['devices'][0]['forced']
    assert state(host, kernel, MGMT) == ('virtio_vfio_pci', 'virtio_vfio_pci')


def test_mounted_disk_refused(host, kernel):
    host.add_mount('253:0', '/srv')
    msg, dummy = refused(host, kernel, devices=[DISK])
    assert 'block device vda is mounted on /srv' in msg


def test_vfio_user_blocks_state_host(host, kernel):
    bind(host, kernel, devices=[NIC])
    host.hold_vfio(4711, 2)
    kernel.log[:] = []
    msg, dummy = refused(host, kernel, devices=[NIC], state='host')
    assert '/dev/vfio/2 is open by pid 4711 (qemu-system-x86)' in msg


def test_bridge_refused_even_with_force(host, kernel):
    host.add_device('0000:00:1c.0', '8086', '2448', cls='060400', driver='pcieport')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=['00:1c.0'], force=True)
    assert 'is a PCI bridge' in str(e.value)


def test_group_policies(host, kernel):
    host.add_device('0000:01:00.0', '10de', '2204', cls='030000', driver='nouveau', group=20)
    host.add_device('0000:01:00.1', '10de', '1aef', cls='040300', driver='snd_hda_intel', group=20)
    host.add_device('0000:00:1c.0', '8086', '2448', cls='060400', driver='pcieport', group=20)
    for name in ('nouveau', 'snd_hda_intel'):
        host.add_module(name, loaded=True)
    msg, dummy = refused(host, kernel, devices=['01:00.0'])
    assert 'IOMMU group 20 of 0000:01:00.0 is not viable: 0000:01:00.1 (snd_hda_intel)' in msg
    r = bind(host, kernel, check_mode=True, devices=['01:00.0'], iommu_group='ignore')
    assert any('IOMMU group 20 stays non-viable' in w for w in r['warnings_list'])
    r = bind(host, kernel, devices=['01:00.0'], iommu_group='all')
    assert sorted(d['address'] for d in r['devices']) == ['0000:01:00.0', '0000:01:00.1']
    assert state(host, kernel, '0000:01:00.1') == ('vfio-pci', 'vfio-pci')
    assert state(host, kernel, '0000:00:1c.0') == ('pcieport', None)


def test_selectors(host, kernel):
    host.add_device('0000:3b:00.0', '8086', '1592', cls='020000', driver='ice', sriov_totalvfs=4)
    host.add_module('ice', ids=[('8086', '1592')], loaded=True)
    host.add_module('iavf', ids=[('8086', '1889')], loaded=True)
    for n in range(2):
        host.add_device('0000:3b:01.%d' % n, '8086', '1889', physfn='0000:3b:00.0', driver='iavf')
    r = bind(host, kernel, check_mode=True, devices=[{'physfn': '3b:00.0'}])
    assert [d['address'] for d in r['devices']] == ['0000:3b:01.0', '0000:3b:01.1']
    r = bind(host, kernel, check_mode=True, devices=[{'vendor': '8086', 'device': '1889'}, {'class': '0x00ff'}])
    assert [d['address'] for d in r['devices']] == ['0000:00:05.0', '0000:3b:01.0', '0000:3b:01.1']
    r = bind(host, kernel, check_mode=True, devices=[{'vendor': 'dead', 'optional': True}])
    assert r['devices'] == [] and not r['changed']
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, check_mode=True, devices=[{'vendor': 'dead'}])
    assert 'matches no device; add optional: true' in str(e.value)


def test_conflicting_intents_refused(host, kernel):
    msg, dummy = refused(host, kernel, devices=[NIC, {'address': NIC, 'state': 'host'}])
    assert 'selected twice with different intents' in msg


@pytest.mark.parametrize('devices, message', [
    (['0000:00:04'], 'is not a pci address'),
    ([{'address': NIC, 'driver': 'vfio_pci\n'}], 'must be a kernel module or driver name'),
    (['zz:00.0'], 'is not a pci address'),
    ([{'address': NIC, 'driver': '../../evil'}], 'must be a kernel module or driver name'),
    ([{'address': NIC, 'driver': 'vfio\npci'}], 'must be a kernel module or driver name'),
    ([{'address': NIC, 'driver': 'vfio\x00pci'}], 'must be a kernel module or driver name'),
    ([{'address': NIC, 'colour': 'red'}], 'unknown keys colour'),
    ([{'optional': True}], 'selects nothing'),
    ([42], 'is the integer 42, not a string; quote it in YAML'),
    ([None], 'is empty (null in YAML)'),
    ([[1]], 'must be a PCI address string or a selector dict'),
    ([{'vendor': 'xyz'}], 'hexadecimal id'),
    ([{'vendor': '123456'}], 'at most 4 digits'),
    ([{'iommu_group': -1}], 'non-negative integer'),
    ([{'address': NIC, 'state': 'gone'}], 'state must be one of'),
    ([{'address': NIC, 'state': 'host', 'driver': 'vfio_pci'}], 'meaningless with state=host'),
    (['0000:00:04.0'] * 4097, 'at most 4096'),
])
def test_bad_input_fails_before_any_read_or_write(host, kernel, devices, message):
    with pytest.raises(RequestError) as e:
        bind(host, kernel, devices=devices)
    assert message in str(e.value)
    assert kernel.log == []


def test_unknown_device_named(host, kernel):
    msg, dummy = refused(host, kernel, devices=['0000:09:00.0', NIC])
    assert 'no device 0000:09:00.0 on this host' in msg


def test_missing_modules_alias(host, kernel, tmp_path):
    import os
    os.unlink(os.path.join(host.moddir, host.release, 'modules.alias'))
    msg, dummy = refused(host, kernel, devices=[NIC])
    assert 'no VFIO driver of kernel' in msg


def test_unreadable_attribute_is_clean_failure(host, kernel):
    kernel.fail_write['bus/pci/devices/%s/driver_override' % NIC] = 13
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC])
    assert 'set driver_override to vfio-pci failed' in str(e.value)
    assert state(host, kernel, NIC) == ('e1000e', None)


def test_lock_serializes(host, kernel):
    from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import HostLock
    with HostLock(host.params()['lock_file'], 1):
        with pytest.raises(BindFailed) as e:
            bind(host, kernel, devices=[NIC], lock_timeout=0.3)
    assert 'another vfio_bind run holds' in str(e.value)
    assert kernel.log == []
    bind(host, kernel, devices=[NIC])


def test_hot_unplug_during_run_is_a_clean_failure(host, kernel):
    kernel.unplug_on_unbind.add(NIC)
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[VIRTIO, NIC])
    f = e.value.result['failure']
    assert f['device'] == NIC
    assert f['rolled_back'] == [VIRTIO]
    assert any(NIC in p and 'vanished' in p for p in f['rollback_problems'])
    assert state(host, kernel, VIRTIO) == ('virtio-pci', None)


def test_mounted_9p_share_refused(host, kernel):
    import os
    host.add_device('0000:00:01.0', '1af4', '1049', cls='000200', driver='virtio-pci')
    os.makedirs(os.path.join(host.dev_dir('0000:00:01.0'), 'virtio0'))
    with open(os.path.join(host.dev_dir('0000:00:01.0'), 'virtio0', 'mount_tag'), 'w') as f:
        f.write('/dev/root\0')
    with open(os.path.join(host.proc, 'self/mountinfo'), 'a') as f:
        f.write('25 1 0:23 / / ro,relatime - 9p /dev/root ro,access=any,trans=virtio\n')
    msg, dummy = refused(host, kernel, devices=['00:01.0'])
    assert 'its 9p filesystem /dev/root is mounted on /' in msg


def test_never_runs_modprobe_for_a_fake_tree(host, kernel):
    """Outside the real /sys a missing module is an error, never a module load on this machine."""
    p = host.params(devices=[NIC])

    def must_not_run(argv):
        raise AssertionError('modprobe ran: %r' % (argv,))

    with pytest.raises(BindFailed) as e:
        run_bind(p, HostContext(p, fs=kernel), must_not_run)
    assert "runs modprobe only when sysfs_path is the running kernel's /sys" in str(e.value)
    assert kernel.log == []


@pytest.mark.parametrize('target', ['conf', 'confdir', 'modules.alias'])
def test_world_writable_driver_choice_refused_before_any_write(host, kernel, target):
    # A world-writable modprobe.d file or directory, or modules.alias, would let any local user
    # pick the driver root binds: refused with the path and the fix, nothing written.
    conf = os.path.join(host.confdir, 'local.conf')
    with open(conf, 'w') as f:
        f.write('# nothing\n')
    path = {'conf': conf, 'confdir': host.confdir,
            'modules.alias': os.path.join(host.moddir, host.release, 'modules.alias')}[target]
    os.chmod(path, 0o777 if target == 'confdir' else 0o666)
    with pytest.raises(ValueError) as e:
        bind(host, kernel, devices=[NIC])
    assert 'refusing to trust %s' % path in str(e.value)
    assert 'chmod o-w %s' % path in str(e.value)
    assert kernel.log == []


def test_sticky_world_writable_confdir_is_accepted(host, kernel):
    os.chmod(host.confdir, 0o1777)
    bind(host, kernel, devices=[NIC])
    assert state(host, kernel, NIC) == ('vfio-pci', 'vfio-pci')


def test_return_facts_are_read_after_the_call(host, kernel):
    r = bind(host, kernel, devices=[NIC, TESTDEV], return_facts=True)
    facts = r['ansible_facts']['vfio']
    assert facts['devices'][NIC]['driver'] == 'vfio-pci' and facts['devices'][NIC]['vfio_bound']
    assert facts['devices'][TESTDEV]['driver'] == 'vfio_testdev'
    assert facts['devices'][MGMT]['driver'] == 'virtio-pci'
    assert set(facts) >= {'kernel_release', 'iommu', 'devices', 'iommu_groups'}
    # without the option, no facts; in check mode, the facts are the host as it is (nothing moved)
    assert 'ansible_facts' not in bind(host, kernel, devices=[NIC])
    r = bind(host, kernel, check_mode=True, devices=[{'address': NIC, 'state': 'host'}], return_facts=True)
    assert r['changed'] and r['ansible_facts']['vfio']['devices'][NIC]['driver'] == 'vfio-pci'


def test_device_without_iommu_group_refused_before_any_write(tmp_path):
    # The IOMMU is off: no device has a group, and a VFIO driver's probe would fail with -22.
    h = FakeHost(tmp_path)
    h.add_module('vfio_pci', driver='vfio-pci')
    h.add_module('e1000e', ids=[('8086', '10d3')], loaded=True)
    h.add_device(NIC, '8086', '10d3', driver='e1000e', group=None)
    h.add_device(TESTDEV, '1b36', '0005', cls='00ff00', group=None)
    k = FakeKernel(h)
    with pytest.raises(BindFailed) as e:
        bind(h, k, devices=[NIC, TESTDEV], return_facts=True)
    msg = str(e.value)
    for addr in (NIC, TESTDEV):
        assert '%s has no IOMMU group: the IOMMU is not enabled' % addr in msg
    assert k.log == []
    # a refused call still returns the facts (the role words the IOMMU-off message from them)
    assert e.value.result['ansible_facts']['vfio']['iommu']['enabled'] is False
    # giving a device back to the host needs no IOMMU
    assert bind(h, k, devices=[{'address': NIC, 'state': 'host'}])['changed'] is False


def test_device_without_iommu_group_bound_in_noiommu_mode(tmp_path):
    h = FakeHost(tmp_path)
    h.add_module('vfio_pci', driver='vfio-pci')
    h.add_module('vfio', loaded=True)
    h.add_module('e1000e', ids=[('8086', '10d3')], loaded=True)
    h.add_device(NIC, '8086', '10d3', driver='e1000e', group=None)
    os.makedirs(os.path.join(h.sys, 'module/vfio/parameters'), exist_ok=True)
    with open(os.path.join(h.sys, 'module/vfio/parameters/enable_unsafe_noiommu_mode'), 'w') as f:
        f.write('Y\n')
    k = FakeKernel(h)
    (d,) = bind(h, k, devices=[NIC])['devices']
    assert d['action'] == 'rebind' and k._driver_of(NIC) == 'vfio-pci'

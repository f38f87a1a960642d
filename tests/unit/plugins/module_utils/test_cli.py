# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio-passthrough (the engine at boot and at the console) against the fake kernel: the
desired state file in, the vfio_sriov and vfio_bind cores doing the work."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils import cli
from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import StateError, parse_state
from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import HostLock
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import MGMT, NIC, VIRTIO, nic_host, write_state
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import run_cli as run
from ansible_collections.hypervisor.vfio.tools.fakehost import GENERIC_VFIO_ALIAS

PF = '0000:01:00.0'
VF0 = '0000:02:10.0'
VF1 = '0000:02:10.1'


@pytest.fixture
def host(tmp_path):
    h = nic_host(tmp_path, 'vfio_pci', 'virtio_vfio_pci', 'virtio_pci', 'e1000e', 'igb', 'igbvf')
    h.add_device(PF, '8086', '10c9', driver='igb', sriov_totalvfs=7)
    return h


def dev(addr, vendor, device, driver=None):
    return {'address': addr, 'vendor': vendor, 'device': device, 'driver': driver}


def test_apply_binds_with_the_variant_of_the_running_kernel(host, kernel):
    write_state(host, [dev(NIC, '8086', '10d3'), dev(VIRTIO, '1af4', '1041')])
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_OK, out
    # no driver recorded: the best variant for the kernel that runs (virtio_vfio_pci for virtio-net)
    assert (kernel._driver_of(NIC), kernel._override(NIC)) == ('vfio-pci', 'vfio-pci')
    assert (kernel._driver_of(VIRTIO), kernel._override(VIRTIO)) == ('virtio_vfio_pci', 'virtio_vfio_pci')
    assert '%s: e1000e -> vfio-pci (rebind, changed' % NIC in out
    # through the executor: explicit bind, never drivers_probe
    assert ('bus/pci/drivers/vfio-pci/bind', NIC) in kernel.log
    assert not [w for w in kernel.log if w[0] == 'bus/pci/drivers_probe']
    assert kernel._driver_of(MGMT) == 'virtio-pci'
    n = len(kernel.log)
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_OK and len(kernel.log) == n and 'as desired' in out


def test_a_pinned_driver_is_kept(host, kernel):
    write_state(host, [dev(VIRTIO, '1af4', '1041', driver='vfio_pci')])
    assert run(host, kernel, 'apply')[0] == cli.EXIT_OK
    assert kernel._driver_of(VIRTIO) == 'vfio-pci'


def test_status_and_plan_show_the_difference_and_write_nothing(host, kernel):
    write_state(host, [dev(NIC, '8086', '10d3')], [{'pf': PF, 'numvfs': 2}])
    code, out = run(host, kernel, 'status')
    assert code == cli.EXIT_DIFFERS and 'DIFFERS (rebind)' in out and '0 VFs (want 2)' in out
    code, out = run(host, kernel, 'plan')
    assert code == cli.EXIT_DIFFERS and 'rebind, planned' in out and '0 VFs -> 2 (create, planned' in out
    assert kernel.log == []
    assert run(host, kernel, 'apply')[0] == cli.EXIT_OK
    code, out = run(host, kernel, 'status')
    assert code == cli.EXIT_OK and 'DIFFERS' not in out


def test_vfs_are_created_before_they_are_bound(host, kernel):
    write_state(host, [dev(VF0, '8086', '10ca'), dev(VF1, '8086', '10ca')], [{'pf': PF, 'numvfs': 2}])
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_OK, out
    writes = [w[0] for w in kernel.device_writes()]
    assert writes.index('bus/pci/devices/%s/sriov_numvfs' % PF) < writes.index('bus/pci/devices/%s/driver_override' % VF0)
    # autoprobe off first: igbvf never took them, they went straight to vfio-pci
    assert writes[0] == 'bus/pci/devices/%s/sriov_drivers_autoprobe' % PF
    assert not [w for w in kernel.log if w[0].endswith('/unbind')]
    assert kernel._driver_of(VF0) == kernel._driver_of(VF1) == 'vfio-pci'


def test_absent_or_changed_devices_are_left_alone_and_the_rest_is_bound(host, kernel):
    write_state(host, [dev(NIC, '8086', '10d3'), dev('0000:00:09.0', '8086', '10d3'), dev(VIRTIO, '8086', '10d3')])
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_SKIPPED, out
    assert kernel._driver_of(NIC) == 'vfio-pci'
    assert kernel._driver_of(VIRTIO) == 'virtio-pci' and kernel._override(VIRTIO) is None
    assert '0000:00:09.0: absent' in out and 'hardware changed?' in out


def test_a_blocked_write_ends_the_run_within_its_bound_and_says_so(host, kernel):
    kernel.hang_unbind.add('e1000e')
    write_state(host, [dev(VIRTIO, '1af4', '1041'), dev(NIC, '8086', '10d3')])
    code, out = run(host, kernel, 'apply', '--json')
    doc = json.loads(out)
    assert code == cli.EXIT_FAILED and doc['exit_code'] == cli.EXIT_FAILED
    failure = doc['bind']['failure']
    assert failure['device'] == NIC and failure['pending'] and 'unbind from e1000e' in failure['step']
    # the device done before it was put back; the pending one is left to the kernel
    assert failure['rolled_back'] == [VIRTIO] and kernel._driver_of(VIRTIO) == 'virtio-pci'


def test_a_blocked_write_keeps_the_journal_and_the_next_apply_repairs_it_and_says_so(host, kernel):
    # At boot the unit's run gives up on a blocked unbind: the intent journal records it, and the
    # next run (the console's apply, or the next boot) reports it and repairs it before it plans.
    journal = os.path.join(host.root, 'journal.json')
    kernel.hang_unbind.add('e1000e')
    write_state(host, [dev(VIRTIO, '1af4', '1041'), dev(NIC, '8086', '10d3')])
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_FAILED and 'The journal %s is kept' % journal in out, out
    with open(journal) as f:
        record = json.load(f)
    assert [(d['address'], d['step']) for d in record['devices']] == [(VIRTIO, 'rollback'), (NIC, 'unbind from e1000e')]
    # the kernel finishes the unbind once the holder lets go of the device
    host.detach(NIC)
    kernel.hang_unbind.clear()
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_OK, out
    lines = out.splitlines()
    assert lines[0].startswith('warning: vfio_bind: a run interrupted before it finished (pid '), out
    assert 'left the journal %s: ' % journal in lines[0] and '%s rebind' % NIC in lines[0], out
    assert lines[0].endswith(': rolled back'), out
    assert '%s: e1000e -> vfio-pci (rebind, changed' % NIC in out, out
    assert not os.path.exists(journal)
    assert kernel._driver_of(NIC) == 'vfio-pci' and kernel._driver_of(VIRTIO) == 'virtio_vfio_pci'
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_OK and 'warning' not in out and 'journal' not in out, out


def test_a_repaired_journal_is_reported_when_the_run_then_fails(host, kernel):
    kernel.hang_unbind.add('e1000e')
    write_state(host, [dev(NIC, '8086', '10d3')])
    assert run(host, kernel, 'apply')[0] == cli.EXIT_FAILED
    host.detach(NIC)
    kernel.hang_unbind.clear()
    kernel.fail_probe.add('vfio-pci')
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_FAILED, out
    assert out.startswith('warning: vfio_bind: a run interrupted before it finished'), out
    # the journal names the write the kernel was still in, not a rollback that never began
    assert 'left the journal %s: %s rebind (last step begun: unbind from e1000e): ' % (
        os.path.join(host.root, 'journal.json'), NIC) in out, out
    assert out.splitlines()[0].endswith(': rolled back'), out
    assert 'bind to vfio-pci' in out and kernel._driver_of(NIC) == 'e1000e'


def test_device_warnings_are_shown_once(host, kernel):
    host.blacklist('virtio_vfio_pci')
    write_state(host, [dev(VIRTIO, '1af4', '1041')])
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_OK, out
    assert out.count('skipped VFIO driver virtio_vfio_pci') == 1, out
    assert kernel._driver_of(VIRTIO) == 'vfio-pci'


def test_refusal_before_any_write(host, kernel):
    host.add_route('eth2')
    write_state(host, [dev(NIC, '8086', '10d3')])
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_REFUSED and 'refusing to unbind' in out and kernel.device_writes() == []


def test_restore_gives_the_devices_back_and_keeps_the_state(host, kernel):
    path = write_state(host, [dev(NIC, '8086', '10d3')])
    run(host, kernel, 'apply')
    code, out = run(host, kernel, 'restore')
    assert code == cli.EXIT_OK, out
    assert (kernel._driver_of(NIC), kernel._override(NIC)) == ('e1000e', None)
    assert os.path.exists(path) and 'next boot binds them again' in out


def test_only_the_named_devices(host, kernel):
    write_state(host, [dev(NIC, '8086', '10d3'), dev(VIRTIO, '1af4', '1041')])
    code, out = run(host, kernel, 'apply', '00:04.0')
    assert code == cli.EXIT_OK and kernel._driver_of(NIC) == 'vfio-pci' and kernel._driver_of(VIRTIO) == 'virtio-pci'
    code, out = run(host, kernel, 'apply', '0000:00:07.0')
    assert code == cli.EXIT_USAGE and 'not in the desired state' in out


def test_lock_held_by_another_run(host, kernel):
    write_state(host, [dev(NIC, '8086', '10d3')])
    with HostLock(os.path.join(host.root, 'vfio.lock'), 1):
        code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_LOCKED and 'holds' in out and kernel.device_writes() == []


@pytest.mark.parametrize('doc,msg', [
    ({'format': 2}, 'unknown state format'),
    ({'format': 1, 'devices': [{'address': 'x'}]}, 'not a PCI address'),
    ({'format': 1, 'devices': [{'address': NIC, 'driver': '../x'}]}, 'driver'),
    ({'format': 1, 'timeout': 0}, 'timeout must be'),
    ({'format': 1, 'iommu_group': 'some'}, 'iommu_group'),
    ({'format': 1, 'sriov': [{'pf': PF}]}, 'numvfs'),
])
def test_bad_state(doc, msg):
    with pytest.raises(StateError, match=msg):
        parse_state(doc)


def test_missing_state_file_is_a_usage_error(host, kernel):
    code, out = run(host, kernel, 'status')
    assert code == cli.EXIT_USAGE and 'cannot read' in out


def test_help_documents_commands_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(['--help'])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for word in ('status', 'plan', 'apply', 'restore', 'exit codes', 'another run holds the lock'):
        assert word in text


def test_a_driver_override_write_blocked_on_the_device_lock_is_bounded(host, kernel):
    # At boot, an unbind blocked in another process (a VFIO user holds the device) holds the
    # device lock: driver_override then blocks too. The write must carry its bound; an
    # unbounded one would hang the boot unit until systemd's timeout.
    blocked = []

    def write(rel, value, timeout=None, _orig=kernel.write):
        if rel.endswith('%s/driver_override' % NIC):
            assert timeout is not None, 'driver_override written without a bound'
            blocked.append(timeout)
            from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import WriteTimeout
            raise WriteTimeout(kernel.sys(rel), timeout, 4444)
        return _orig(rel, value, timeout=timeout)

    kernel.write = write
    host.detach(NIC)  # the blocked unbind already removed the driver link
    write_state(host, [dev(NIC, '8086', '10d3')], timeout=2)
    code, out = run(host, kernel, 'apply')
    assert code == cli.EXIT_FAILED and blocked == [2]
    assert 'still blocked after 2s' in out and 'set driver_override to vfio-pci' in out


NEW = '6.12.57+deb12-amd64'


def new_kernel(host, variant=True, builtin_vfio_pci=False):
    """Kernel NEW installed next to the running one: vfio_pci (a module or built in), and the virtio
    variant only when ``variant``."""
    d = os.path.join(host.moddir, NEW)
    os.makedirs(d)
    aliases = [GENERIC_VFIO_ALIAS] + (['alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci'] if variant else [])
    dep = ['kernel/drivers/net/e1000e.ko.xz:']
    if variant:
        dep.append('kernel/drivers/vfio/pci/virtio-vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz')
    if not builtin_vfio_pci:
        dep.append('kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz')
    for name, lines in (('modules.alias', aliases), ('modules.dep', dep),
                        ('modules.builtin', ['kernel/drivers/vfio/pci/vfio-pci.ko'] if builtin_vfio_pci else [])):
        with open(os.path.join(d, name), 'w') as f:
            f.write('\n'.join(lines) + '\n')


def test_kernel_checks_the_driver_each_device_would_get_from_a_new_kernel(host, kernel):
    write_state(host, [dev(NIC, '8086', '10d3'), dev(VIRTIO, '1af4', '1041'), dev('0000:00:09.0', '8086', '10d3')])
    new_kernel(host)
    code, out = run(host, kernel, 'kernel', NEW)
    assert code == cli.EXIT_OK, out
    assert '%s: kernel %s ships vfio_pci (resolved)' % (NIC, NEW) in out
    assert '%s: kernel %s ships virtio_vfio_pci (resolved)' % (VIRTIO, NEW) in out
    assert '0000:00:09.0: absent from this host: not checked' in out
    assert not kernel.log   # read only


def test_kernel_without_a_pinned_variant_warns(host, kernel):
    write_state(host, [dev(VIRTIO, '1af4', '1041', driver='virtio_vfio_pci'), dev(NIC, '8086', '10d3')])
    new_kernel(host, variant=False, builtin_vfio_pci=True)
    code, out = run(host, kernel, 'kernel', NEW, '--json')
    assert code == cli.EXIT_DIFFERS, out
    rows = dict((r['address'], r) for r in json.loads(out)['devices'])
    assert (rows[VIRTIO]['module'], rows[VIRTIO]['how'], rows[VIRTIO]['shipped']) == ('virtio_vfio_pci', 'pinned', False)
    assert (rows[NIC]['module'], rows[NIC]['shipped']) == ('vfio_pci', True)     # built in counts


def test_kernel_without_module_files_or_with_a_bad_release(host, kernel):
    write_state(host, [dev(NIC, '8086', '10d3')])
    code, out = run(host, kernel, 'kernel', NEW)
    assert code == cli.EXIT_USAGE and 'modules.dep is missing' in out
    assert run(host, kernel, 'kernel', '../../etc')[0] == cli.EXIT_USAGE
    assert run(host, kernel, 'kernel')[0] == cli.EXIT_USAGE

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The intent journal: a run killed at every cut point, then the next run puts the host right."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils import journal as jmod
from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed
from ansible_collections.hypervisor.vfio.plugins.module_utils.journal import Journal
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import (
    NIC, TESTDEV, VIRTIO, FakeKernel)
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import bind_on as bind


class Killed(BaseException):
    """SIGKILL: nothing in the module catches it, no finally of ours cleans up after it."""


def state(kernel, addr):
    return kernel._driver_of(addr), kernel._override(addr)


def journal_file(host):
    return host.params()['journal_file']


def kill_at_commit(monkeypatch, n):
    """Die when the journal is about to be written for the n-th time (before it is)."""
    count = [0]
    real = Journal._commit

    def commit(self):
        count[0] += 1
        if count[0] == n:
            raise Killed('SIGKILL before journal write %d' % n)
        real(self)
    monkeypatch.setattr(Journal, '_commit', commit)


def killed_bind(monkeypatch, n, host, kernel, **params):
    """A vfio_bind run killed before its n-th journal write: what it leaves, for the next run."""
    kill_at_commit(monkeypatch, n)
    with pytest.raises(Killed):
        bind(host, kernel, **params)
    monkeypatch.undo()


# Journal writes of a one-device VFIO bind: 1 the transaction, 2 "set driver_override", 3 "unbind",
# 4 "bind", 5 "done".  Killed before write n, the kernel has done the steps before it.
REBIND_CUTS = [
    # (n, state left by the killed run, journal left, decision of the next run)
    (1, ('e1000e', None), False, None),
    (2, ('e1000e', None), True, 'untouched'),
    (3, ('e1000e', 'vfio-pci'), True, 'rolled_back'),   # override written, not unbound
    (4, (None, 'vfio-pci'), True, 'rolled_back'),       # unbound, no driver
    (5, ('vfio-pci', 'vfio-pci'), True, 'keep'),        # bound to the target, not verified
]


@pytest.mark.parametrize('n, left, has_journal, decision', REBIND_CUTS)
def test_killed_rebind_is_repaired_by_the_next_run(host, kernel, monkeypatch, n, left, has_journal, decision):
    killed_bind(monkeypatch, n, host, kernel, devices=[NIC])
    assert state(kernel, NIC) == left
    assert os.path.exists(journal_file(host)) == has_journal
    # the next run asks for something else: the NIC must end where it was, or completed
    kernel.log[:] = []
    r = bind(host, kernel, devices=[TESTDEV])
    assert state(kernel, TESTDEV) == ('vfio_testdev', 'vfio_testdev')
    assert not os.path.exists(journal_file(host))
    if not has_journal:
        assert 'journal' not in r
        assert state(kernel, NIC) == ('e1000e', None)
        return
    (row,) = r['journal']['devices']
    assert (row['address'], row['action'], row['decision']) == (NIC, 'rebind', decision)
    assert r['journal']['problems'] == []
    assert 'left the journal %s' % journal_file(host) in r['warnings_list'][0]
    assert '%s rebind' % NIC in r['warnings_list'][0]
    assert state(kernel, NIC) == (('vfio-pci', 'vfio-pci') if decision == 'keep' else ('e1000e', None))
    assert r['changed']


@pytest.mark.parametrize('n', [2, 3, 4, 5])
def test_killed_rebind_then_same_request_converges(host, kernel, monkeypatch, n):
    killed_bind(monkeypatch, n, host, kernel, devices=[NIC])
    r = bind(host, kernel, devices=[NIC])
    assert state(kernel, NIC) == ('vfio-pci', 'vfio-pci')
    assert r['journal']['path'] == journal_file(host)
    assert not os.path.exists(journal_file(host))
    assert bind(host, kernel, devices=[NIC])['changed'] is False


# Journal writes of a one-device state=host: 1 transaction, 2 "clear driver_override", 3 "unbind",
# 4 "probe host drivers", 5 "done".
RESTORE_CUTS = [
    (2, ('vfio-pci', 'vfio-pci'), 'untouched'),
    (3, ('vfio-pci', None), 'rolled_back'),       # override cleared, still on vfio-pci
    (4, (None, None), 'rolled_back'),             # unbound, not probed
    (5, ('e1000e', None), 'keep'),                # the host driver took it, not verified
]


@pytest.mark.parametrize('n, left, decision', RESTORE_CUTS)
def test_killed_restore_is_repaired(host, kernel, monkeypatch, n, left, decision):
    bind(host, kernel, devices=[NIC])
    killed_bind(monkeypatch, n, host, kernel, devices=[NIC], state='host')
    assert state(kernel, NIC) == left
    stale = journal_file(host) + '.99999.tmp'  # the temporary file of a run killed while writing it
    with open(stale, 'w') as f:
        f.write('{')
    r = bind(host, kernel, devices=[VIRTIO])
    assert not os.path.exists(stale)
    assert [(d['action'], d['decision']) for d in r['journal']['devices']] == [('restore', decision)]
    assert state(kernel, NIC) == (('e1000e', None) if decision == 'keep' else ('vfio-pci', 'vfio-pci'))
    assert not os.path.exists(journal_file(host))


def test_killed_in_the_second_device_keeps_the_first_and_rolls_back_the_second(host, kernel, monkeypatch):
    # writes: 1 transaction; VIRTIO 2 override, 3 unbind, 4 bind; NIC 5 override (with VIRTIO's
    # done, deferred to it), 6 unbind
    killed_bind(monkeypatch, 6, host, kernel, devices=[VIRTIO, NIC])
    with open(journal_file(host)) as f:
        left = json.load(f)
    assert [(d['address'], d['step']) for d in left['devices']] == [
        (VIRTIO, 'done'), (NIC, 'set driver_override to vfio-pci')]
    r = bind(host, kernel, devices=[TESTDEV])
    assert [(d['address'], d['decision']) for d in r['journal']['devices']] == [
        (VIRTIO, 'keep'), (NIC, 'rolled_back')]
    assert state(kernel, VIRTIO) == ('virtio_vfio_pci', 'virtio_vfio_pci')
    assert state(kernel, NIC) == ('e1000e', None)


def test_check_mode_reports_a_leftover_journal_without_repairing(host, kernel, monkeypatch):
    killed_bind(monkeypatch, 4, host, kernel, devices=[NIC])
    kernel.log[:] = []
    r = bind(host, kernel, check_mode=True, devices=[NIC])
    assert [d['decision'] for d in r['journal']['devices']] == ['rollback']
    assert kernel.device_writes() == []
    assert os.path.exists(journal_file(host))


def test_journal_written_before_the_first_write_and_removed_at_the_end(host, kernel, monkeypatch):
    seen = []
    real_write = FakeKernel.write

    def write(self, rel, value, timeout=None):
        with open(journal_file(host)) as f:
            seen.append((rel, [d['step'] for d in json.load(f)['devices']]))
        real_write(self, rel, value, timeout)
    monkeypatch.setattr(FakeKernel, 'write', write)
    bind(host, kernel, devices=[NIC])
    assert seen == [
        ('bus/pci/devices/%s/driver_override' % NIC, ['set driver_override to vfio-pci']),
        ('bus/pci/drivers/e1000e/unbind', ['unbind from e1000e']),
        ('bus/pci/drivers/vfio-pci/bind', ['bind to vfio-pci'])]
    assert not os.path.exists(journal_file(host))
    d = os.path.dirname(journal_file(host))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert os.listdir(d) == []  # no temporary file left


def test_journal_file_is_root_only_and_records_the_transaction(host, kernel, monkeypatch):
    kill_at_commit(monkeypatch, 3)
    with pytest.raises(Killed):
        bind(host, kernel, devices=[NIC])
    st = os.stat(journal_file(host))
    assert stat.S_IMODE(st.st_mode) == 0o600
    with open(journal_file(host)) as f:
        rec = json.load(f)
    assert rec['version'] == 1 and rec['pid'] == os.getpid()
    (d,) = rec['devices']
    assert (d['address'], d['action'], d['driver_before'], d['override_before'], d['driver']) == (
        NIC, 'rebind', 'e1000e', None, 'vfio-pci')


def test_pending_write_keeps_the_journal_and_the_next_run_rolls_back(host, kernel):
    kernel.hang_unbind.add('e1000e')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC])
    assert e.value.result['failure']['journal_kept'] == journal_file(host)
    assert 'journal %s is kept' % journal_file(host) in str(e.value)
    # the kernel finishes the blocked unbind after the run gave up
    host.detach(NIC)
    kernel.hang_unbind.clear()
    r = bind(host, kernel, devices=[VIRTIO])
    assert [d['decision'] for d in r['journal']['devices']] == ['rolled_back']
    assert state(kernel, NIC) == ('e1000e', None)


def test_clean_failure_removes_the_journal(host, kernel):
    kernel.fail_probe.add('vfio-pci')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC])
    assert e.value.result['failure']['rolled_back'] == [NIC]
    assert not os.path.exists(journal_file(host))


def test_rollback_that_fails_keeps_the_journal_and_refuses_to_plan(host, kernel, monkeypatch):
    killed_bind(monkeypatch, 4, host, kernel, devices=[NIC])
    kernel.fail_probe.add('e1000e')
    kernel.log[:] = []
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[TESTDEV])
    msg = str(e.value)
    assert 'NOT repaired' in msg and NIC in msg and 'None' not in msg
    assert e.value.result['journal']['devices'][0]['decision'] == 'rollback_failed'
    assert os.path.exists(journal_file(host))
    assert state(kernel, TESTDEV) == (None, None)  # nothing new was planned or applied
    kernel.fail_probe.clear()
    bind(host, kernel, devices=[TESTDEV])
    assert state(kernel, NIC) == ('e1000e', None)
    assert not os.path.exists(journal_file(host))


def test_rollback_off_vfio_refused_while_a_vm_holds_the_group(host, kernel):
    bind(host, kernel, devices=[NIC])
    group = int(os.path.basename(os.readlink(os.path.join(host.dev_dir(NIC), 'iommu_group'))))
    # a journal says NIC was moving from e1000e, the override was cleared since: neither before nor target
    j = Journal(journal_file(host))
    j.begin({'devices': [{'address': NIC, 'action': 'rebind', 'driver': 'vfio-pci', 'driver_before': 'e1000e',
                          'override_before': None, 'driver_after': 'vfio-pci', 'override_after': 'vfio-pci'}]})
    kernel.write('bus/pci/devices/%s/driver_override' % NIC, '\n')
    host.hold_vfio(4242, group)
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[TESTDEV])
    assert '/dev/vfio/%d is open by pid 4242' % group in str(e.value)
    assert e.value.result['journal']['devices'][0]['decision'] == 'rollback_refused'
    assert state(kernel, NIC) == ('vfio-pci', None)
    r = bind(host, kernel, devices=[TESTDEV], force=True)
    assert r['journal']['devices'][0]['decision'] == 'rolled_back'
    assert state(kernel, NIC) == ('e1000e', None)


def test_vanished_device_in_the_journal_is_reported(host, kernel, monkeypatch):
    killed_bind(monkeypatch, 4, host, kernel, devices=[NIC])
    host.unplug(NIC)
    r = bind(host, kernel, devices=[TESTDEV])
    assert [d['decision'] for d in r['journal']['devices']] == ['gone']


@pytest.mark.parametrize('how, message', [
    ('symlink', 'is a symbolic link'),
    ('world', 'writable by group or others'),
    ('garbage', 'is unreadable'),
    ('other', 'is not a vfio_bind journal'),
])
def test_untrusted_or_broken_journal_refused_before_any_write(host, kernel, tmp_path, how, message):
    path = journal_file(host)
    os.makedirs(os.path.dirname(path), 0o700)
    if how == 'symlink':
        target = str(tmp_path / 'elsewhere.json')
        with open(target, 'w') as f:
            f.write('{}')
        os.symlink(target, path)
    else:
        with open(path, 'w') as f:
            f.write('{"version": 7, "devices": []}' if how == 'other' else '{"version": 1, "dev' if how == 'garbage'
                    else '{"version": 1, "devices": []}')
        os.chmod(path, 0o666 if how == 'world' else 0o600)
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC])
    assert message in str(e.value) and 'nothing was changed' in str(e.value)
    assert kernel.device_writes() == []


def test_untrusted_journal_directory_fails_before_any_device_write(host, kernel, tmp_path):
    shared = tmp_path / 'shared'
    shared.mkdir()
    os.chmod(str(shared), 0o775)
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC], journal_file=str(shared / 'journal.json'))
    msg = str(e.value)
    assert 'journal directory %s is writable by group or others (mode 775)' % shared in msg
    assert 'No device was touched' in msg
    assert kernel.device_writes() == []
    assert state(kernel, NIC) == ('e1000e', None)


def test_journal_path_under_a_file_refused_before_any_write(host, kernel, tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('x')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC], journal_file=str(blocker / 'journal.json'))
    assert 'cannot read journal %s/journal.json: Not a directory' % blocker in str(e.value)
    assert kernel.device_writes() == []


def test_recovery_plan_decisions():
    d = {'address': 'a', 'action': 'bind', 'driver': 'vfio-pci', 'driver_before': None, 'override_before': None,
         'driver_after': 'vfio-pci', 'override_after': 'vfio-pci', 'step': 'bind to vfio-pci'}
    rec = {'devices': [d]}
    assert jmod.recovery_plan(rec, lambda a: (None, None)) == [(d, 'untouched')]
    assert jmod.recovery_plan(rec, lambda a: (None, 'vfio-pci')) == [(d, 'rollback')]
    assert jmod.recovery_plan(rec, lambda a: ('vfio-pci', 'vfio-pci')) == [(d, 'keep')]
    assert jmod.recovery_plan(rec, lambda a: None) == [(d, 'gone')]


def commits_of(host, kernel, monkeypatch, **params):
    """How many times a run writes the journal (it is not killed)."""
    count = [0]
    real = Journal._commit

    def commit(self):
        count[0] += 1
        real(self)
    monkeypatch.setattr(Journal, '_commit', commit)
    bind(host, kernel, **params)
    monkeypatch.undo()
    return count[0]


def test_three_records_per_device_plus_two(host, kernel, monkeypatch):
    # the transaction, then per device one record before each kernel step, a device's done riding
    # on the next device's first record, and the last done
    assert commits_of(host, kernel, monkeypatch, devices=[VIRTIO, NIC, TESTDEV]) == 1 + 3 + 3 + 2 + 1
    assert not os.path.exists(journal_file(host))


@pytest.mark.parametrize('n', range(1, 12))
def test_every_cut_of_a_three_device_run_is_repaired(host, kernel, monkeypatch, n):
    """Killed before any journal record of a three-device bind: the next run leaves every device
    either where it was or on its target, verified, and removes the journal."""
    before = dict((a, state(kernel, a)) for a in (VIRTIO, NIC, TESTDEV))
    target = {VIRTIO: ('virtio_vfio_pci', 'virtio_vfio_pci'), NIC: ('vfio-pci', 'vfio-pci'),
              TESTDEV: ('vfio_testdev', 'vfio_testdev')}
    kill_at_commit(monkeypatch, n)
    try:
        bind(host, kernel, devices=[VIRTIO, NIC, TESTDEV])
        killed = False
    except Killed:
        killed = True
    monkeypatch.undo()
    assert killed == (n <= 10)  # 10 records: 1 + 3 + 3 + 2 + the last done
    journal = None
    if os.path.exists(journal_file(host)):
        with open(journal_file(host)) as f:
            journal = json.load(f)
    r = bind(host, kernel, devices=[])
    assert not os.path.exists(journal_file(host))
    for a in (VIRTIO, NIC, TESTDEV):
        assert state(kernel, a) in (before[a], target[a]), (a, state(kernel, a))
        if journal is not None:
            rec = [d for d in journal['devices'] if d['address'] == a]
            row = [d for d in r['journal']['devices'] if d['address'] == a]
            if rec and rec[0]['step'] == 'done':
                assert row[0]['decision'] == 'keep'
    # and the same request then converges
    bind(host, kernel, devices=[VIRTIO, NIC, TESTDEV])
    assert dict((a, state(kernel, a)) for a in target) == target

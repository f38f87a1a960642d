# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A vfio_bind run SIGKILLed between two kernel steps, then the next run puts the host right.

The kill has to land between two given sysfs writes, every time, under TCG.  The module runs
under ``strace -f -e inject=fsync:signal=KILL:when=N`` (the lab guest's Python interpreter is
replaced by a wrapper through a copy of the inventory): the process is killed on entry of its
N-th fsync(2).  Only the journal calls fsync, twice per record (the temporary file, then the
directory after the rename), so killing at fsync 2k-1 kills the run just before journal record
k reaches the disk, i.e. right after the kernel step announced by record k-1.  The records of a
one-device bind are: 1 the transaction, 2 "set driver_override", 3 "unbind", 4 "bind", 5 "done".
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest
import yaml

pytestmark = pytest.mark.lab

JOURNAL = '/run/hypervisor-vfio/journal.json'


def killing_lab(lab, collections_path, tmp_path, record):
    """A Lab whose module runs die with SIGKILL just before journal record ``record`` is written."""
    wrapper = '/run/vfio-itest-kill-%d' % record
    lab.ssh("printf '#!/bin/sh\\nexec strace -f -qq -o /dev/null -e trace=fsync "
            "-e inject=fsync:signal=KILL:when=%d /usr/bin/python3 \"$@\"\\n' > %s && chmod 755 %s"
            % (2 * record - 1, wrapper, wrapper))
    with open(lab.inventory) as f:
        inv = yaml.safe_load(f)
    hosts = inv['hypervisors']['hosts'] if 'hypervisors' in inv else inv['all']['children']['hypervisors']['hosts']
    hosts[lab.name]['ansible_python_interpreter'] = wrapper
    path = tmp_path / ('inventory-kill-%d.yml' % record)
    path.write_text(yaml.safe_dump(inv))
    return type(lab)(str(path), collections_path)  # the conftest's Lab, on the copied inventory


def killed_run(lab, collections_path, tmp_path, record, args):
    ok, res = killing_lab(lab, collections_path, tmp_path, record).module('vfio_bind', args)
    assert not ok and res.get('rc') == 137 and 'Killed' in res.get('module_stderr', ''), res
    return res


def journal(lab):
    out = lab.ssh('cat %s 2>/dev/null || true' % JOURNAL).strip()
    return json.loads(out) if out else None


# (journal record the run dies before, what the kernel shows then, what the next run does)
REBIND_CUTS = [
    (3, ('e1000e', 'vfio-pci'), 'rolled_back'),   # driver_override written, not unbound
    (4, (None, 'vfio-pci'), 'rolled_back'),       # unbound, no driver
    (5, ('vfio-pci', 'vfio-pci'), 'keep'),        # bound to the target, not verified
]


@pytest.mark.parametrize('record, left, decision', REBIND_CUTS, ids=['override-written', 'unbound', 'bound'])
def test_sigkill_between_steps_then_next_run_repairs(lab, clean, collections_path, tmp_path, record, left,
                                                     decision):
    generic, testdev = lab.devices['generic'], lab.devices['testdev']
    assert clean[generic] == ('e1000e', None)
    killed_run(lab, collections_path, tmp_path, record, {'devices': [generic]})
    assert lab.state(generic) == left
    j = journal(lab)
    assert j and [(d['address'], d['driver_before'], d['override_before']) for d in j['devices']] == [
        (generic, 'e1000e', None)]
    assert lab.ssh('stat -c %%a %s' % JOURNAL).strip() == '600'
    # the next run asks for another device: the killed run's device must be repaired first
    ok, res = lab.module('vfio_bind', {'devices': [testdev]})
    assert ok, res
    assert [(d['address'], d['decision']) for d in res['journal']['devices']] == [(generic, decision)]
    assert lab.state(generic) == (('vfio-pci', 'vfio-pci') if decision == 'keep' else ('e1000e', None))
    assert lab.state(testdev) == ('vfio_testdev', 'vfio_testdev')
    assert journal(lab) is None
    assert lab.ssh('ls -A /run/hypervisor-vfio').strip() == ''  # no temporary file of the killed run left


def test_sigkill_during_restore_then_same_request_converges(lab, clean, collections_path, tmp_path):
    """state=host killed after the unbind, before the probe: the device has no driver and no override."""
    generic = lab.devices['generic']
    ok, res = lab.module('vfio_bind', {'devices': [generic]})
    assert ok, res
    killed_run(lab, collections_path, tmp_path, 4, {'devices': [generic], 'state': 'host'})
    assert lab.state(generic) == (None, None)
    ok, res = lab.module('vfio_bind', {'devices': [generic], 'state': 'host'})
    assert ok, res
    assert [d['decision'] for d in res['journal']['devices']] == ['rolled_back']
    assert lab.state(generic) == ('e1000e', None)
    assert journal(lab) is None
    ok, res = lab.module('vfio_bind', {'devices': [generic], 'state': 'host'})
    assert ok and not res['changed'] and 'journal' not in res, res


def test_check_mode_reports_the_journal_and_repairs_nothing(lab, clean, collections_path, tmp_path):
    generic = lab.devices['generic']
    killed_run(lab, collections_path, tmp_path, 4, {'devices': [generic]})
    ok, res = lab.module('vfio_bind', {'devices': [generic]}, check=True)
    assert ok, res
    assert [d['decision'] for d in res['journal']['devices']] == ['rollback']
    assert lab.state(generic) == (None, 'vfio-pci') and journal(lab) is not None
    ok, res = lab.module('vfio_bind', {'devices': [generic]})
    assert ok, res
    assert lab.state(generic) == ('vfio-pci', 'vfio-pci') and journal(lab) is None

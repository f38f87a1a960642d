# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab tests' answer to an emulator fault (tests/integration/conftest.py): a guest test that
met EmulatorFault is rerun once on a fresh lab VM; any other failure, or a test without a guest,
is not rerun. Run in a separate pytest on a written console log: no VM."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import os
import re
import subprocess
import sys

import pytest

import ansible_collections.hypervisor.vfio as collection

REPO = list(collection.__path__)[0]
INTEGRATION_CONFTEST = os.path.join(REPO, 'tests', 'integration', 'conftest.py')

FAULT = ("[  556.209228] rcu: rcu_preempt kthread timer wakeup didn't happen for 5251 jiffies! g106121 f0x0 "
         "RCU_GP_WAIT_FQS(5) ->state=0x402\n")

TESTS = '''
import os

import pytest

from conftest import EmulatorFault, Lab

HERE = os.path.dirname(os.path.abspath(__file__))
CONSOLE = os.path.join(HERE, 'lab', 'console.log')
RESTARTS = os.path.join(HERE, 'restarts')


@pytest.fixture(scope='session')
def lab():
    """The lab fixture's Lab on a written inventory; its restart is recorded, not a boot."""
    lab = Lab(os.path.join(HERE, 'lab', 'inventory.yml'), HERE)

    def restart():
        with open(RESTARTS, 'a') as f:
            f.write('restart\\n')
        lab._read_inventory()
    lab.restart = restart
    return lab


def hang(lab, what):
    """What a guest command meets on a VM the emulator hung: the fault on the console, then the
    command fails (Lab.ssh and Lab.module call raise_on_emulator_fault on a failure)."""
    with open(CONSOLE, 'a') as f:
        f.write(%(fault)r)
    lab.raise_on_emulator_fault(what)
    raise AssertionError('%%s failed, and no emulator fault was seen' %% what)


def test_fault_then_rerun_on_a_fresh_vm(lab):
    if not os.path.exists(RESTARTS):
        hang(lab, 'lab command "true"')
    assert not lab.emulator_faults()


def test_a_plain_failure_is_not_rerun(lab):
    assert False, 'the code under test failed'


def test_without_a_guest_is_not_rerun():
    raise EmulatorFault('not from a guest test')


def test_a_fault_seen_before_this_test_boots_a_fresh_vm(lab):
    assert not lab.emulator_faults()
''' % {'fault': FAULT}

INVENTORY = '''all:
  children:
    hypervisors:
      hosts:
        lab-x:
          ansible_host: 127.0.0.1
          ansible_port: 1
          ansible_user: labop
          ansible_become: true
          ansible_ssh_private_key_file: /nonexistent
          lab_devices: {}
'''


def _integration_conftest():
    spec = importlib.util.spec_from_file_location('integration_conftest', INTEGRATION_CONFTEST)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_failed_guest_command_is_an_emulator_fault_only_when_the_console_shows_one(tmp_path):
    itest = _integration_conftest()
    console = tmp_path / 'console.log'
    console.write_text('[    1.0] Linux version 6.12\n')
    watch = itest.FaultWatch()
    watch.console, watch.console_offset = str(console), 0
    watch.raise_on_emulator_fault('lab command "true"')  # no fault: the caller reports its own failure
    with console.open('a') as f:
        f.write(FAULT)
    assert itest.emulator_fault_lines(str(console)) == [FAULT.strip()]
    with pytest.raises(itest.EmulatorFault, match=r'lab command "true" failed: the guest hung on an emulator '
                       r'fault, not on the code under test \(QEMU TCG .*timer wakeup didn\'t happen'):
        watch.raise_on_emulator_fault('lab command "true"')
    # A fault before the guest's last (re)start is not this guest's.
    watch.console_offset = itest.console_size(str(console))
    assert watch.emulator_faults() == [] and itest.emulator_fault_lines(str(tmp_path / 'absent')) == []


def test_a_guest_test_that_met_an_emulator_fault_is_rerun_once_on_a_fresh_vm(tmp_path):
    # The integration conftest itself (its hooks and fixtures), loaded from where it lives.
    (tmp_path / 'conftest.py').write_text(
        'import importlib.util\n'
        'spec = importlib.util.spec_from_file_location("integration_conftest", %r)\n'
        'mod = importlib.util.module_from_spec(spec)\n'
        'spec.loader.exec_module(mod)\n'
        'globals().update((k, v) for k, v in vars(mod).items() if not k.startswith("__"))\n' % INTEGRATION_CONFTEST)
    (tmp_path / 'lab').mkdir()
    (tmp_path / 'lab' / 'inventory.yml').write_text(INVENTORY)
    (tmp_path / 'lab' / 'console.log').write_text('[    1.0] Linux version 6.12\n')
    (tmp_path / 'test_guest.py').write_text(TESTS)
    p = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-p', 'no:pytest-ansible', '-rAR',
                        '-o', 'addopts=', '--rootdir', str(tmp_path), str(tmp_path / 'test_guest.py')],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=300, check=False)
    out = p.stdout + p.stderr
    outcomes = dict((m.group(2), m.group(1)) for m in re.finditer(r'^(PASSED|FAILED|RERUN)\s+\S+::(\w+)', out, re.M))
    assert outcomes == {
        'test_fault_then_rerun_on_a_fresh_vm': 'PASSED',
        'test_a_plain_failure_is_not_rerun': 'FAILED',
        'test_without_a_guest_is_not_rerun': 'FAILED',
        'test_a_fault_seen_before_this_test_boots_a_fresh_vm': 'PASSED',
    }, out
    assert re.search(r'2 failed, 2 passed, 1 rerun', out), out
    assert re.search(r'^test_guest\.py R\.FF\.', out, re.M), out
    # One fresh VM: the rerun's, before it ran; the fault did not leak into the later tests.
    assert (tmp_path / 'restarts').read_text() == 'restart\n', out

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration tests run the modules through Ansible against the real kernel of the lab VM.

The session boots its own lab instance (``LAB_NAME=itest``) unless ``LAB_INVENTORY`` names
the inventory of one that is already up.  Without the means to run QEMU this fails loudly:
there is no silent skip.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABCTL = os.path.join(REPO, 'lab', 'labctl')


def _bin(name):
    """Tools of the interpreter running the tests (the project venv), else PATH."""
    import sys
    cand = os.path.join(os.path.dirname(sys.executable), name)
    return cand if os.path.exists(cand) else name


# A fault of the emulator, not of the code under test (lab/emulator-fault knows its signature):
# QEMU TCG lost a guest vCPU's timer interrupt and the guest hangs. A test that meets it is rerun
# once on a fresh guest (pytest-rerunfailures, only for EmulatorFault: see
# pytest_collection_modifyitems); the rerun shows in pytest's summary. lab/hostimage/hostimagectl
# resets a real-boot guest that meets it while booting.
EMULATOR_FAULT_CMD = os.path.join(REPO, 'lab', 'emulator-fault')


class EmulatorFault(Exception):
    """The guest hung because the emulator lost a vCPU's timer interrupt (lab/emulator-fault)."""


def emulator_fault_lines(path, offset=0):
    """[the first line of the guest console log ``path`` after byte ``offset`` that shows the
    emulator fault], or []."""
    p = subprocess.run([EMULATOR_FAULT_CMD, path, str(offset)], capture_output=True, text=True, timeout=60,
                       check=False, stdin=subprocess.DEVNULL)
    return [p.stdout.strip()] if p.returncode == 0 and p.stdout.strip() else []


def console_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class FaultWatch:
    """Turns a guest command's failure into EmulatorFault when the guest's console shows the
    emulator fault since the guest (re)started."""

    console = None
    console_offset = 0

    def emulator_faults(self):
        return emulator_fault_lines(self.console, self.console_offset) if self.console else []

    def raise_on_emulator_fault(self, what):
        faults = self.emulator_faults()
        if faults:
            raise EmulatorFault('%s failed: the guest hung on an emulator fault, not on the code under test '
                                '(QEMU TCG lost a vCPU\'s timer interrupt; console %s): %s'
                                % (what, self.console, faults[0]))

    def run(self, argv, what, timeout, env=None):
        """subprocess.run of a command that reaches the guest (ssh, ansible, ansible-playbook);
        EmulatorFault when it timed out or failed and the console shows the fault."""
        try:
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False,
                               stdin=subprocess.DEVNULL)  # Ansible refuses a non-blocking stdin
        except subprocess.TimeoutExpired:
            self.raise_on_emulator_fault(what)
            raise
        if p.returncode != 0:
            self.raise_on_emulator_fault(what)
        return p


class GuestReads:
    """A device's sysfs attributes, driver and driver_override, read through ``self.ssh`` (the
    lab VM's and the real-boot guest's)."""

    def sysfs(self, address, attr):
        out = self.ssh('cat /sys/bus/pci/devices/%s/%s 2>/dev/null || true' % (address, attr)).strip()
        return out

    def driver(self, address):
        out = self.ssh('readlink /sys/bus/pci/devices/%s/driver || true' % address).strip()
        return os.path.basename(out) or None

    def override(self, address):
        v = self.sysfs(address, 'driver_override')
        return None if v in ('', '(null)') else v


class Lab(GuestReads, FaultWatch):
    """One lab VM: its inventory, an SSH shell, and Ansible module calls."""

    restart = None  # the lab fixture's: boot a fresh VM (only when the session booted it)

    def __init__(self, inventory, collections_path):
        self.inventory = inventory
        self._read_inventory()
        # One SSH connection for all of ssh(): a fresh login costs the TCG guest sshd's key
        # exchange, its re-exec and PAM (measured 1.5-2.7 s, against 0.35-0.65 s for a command
        # on an open connection; lab/README.md "Speed"). Every command still runs through sudo.
        self._control = None
        self.env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_HOST_KEY_CHECKING='False',
                        ANSIBLE_STDOUT_CALLBACK='ansible.builtin.minimal', ANSIBLE_NOCOLOR='1',
                        ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_DEPRECATION_WARNINGS='False',
                        ANSIBLE_HOME=os.path.join(collections_path, '.ansible-home'))

    def _read_inventory(self):
        with open(self.inventory) as f:
            inv = yaml.safe_load(f)
        hosts = inv['hypervisors']['hosts'] if 'hypervisors' in inv else inv['all']['children']['hypervisors']['hosts']
        self.name, self.vars = next(iter(hosts.items()))
        self.devices = self.vars['lab_devices']
        # labctl writes the guest's console next to the inventory; faults before now are not ours.
        self.console = os.path.join(os.path.dirname(self.inventory), 'console.log')
        self.console_offset = console_size(self.console)

    def ssh(self, command, check=True, timeout=120):
        """Run a shell command in the guest as root, the way the inventory reaches it: logged in
        as ansible_user and, with ansible_become, through sudo -n (as Ansible's become does)."""
        v = self.vars
        if self._control is None:
            self._control = os.path.join(tempfile.mkdtemp(prefix='hv-lab-ssh-'), 'cm')
        argv = ['ssh', '-p', str(v['ansible_port']), '-i', v['ansible_ssh_private_key_file'],
                '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
                '-o', 'BatchMode=yes', '-o', 'ControlMaster=auto', '-o', 'ControlPersist=60',
                '-o', 'ControlPath=' + self._control,
                '%s@%s' % (v['ansible_user'], v['ansible_host']), as_root(v, command)]
        p = self.run(argv, 'lab command %r' % command, timeout)
        if check and p.returncode != 0:
            raise AssertionError('lab command %r failed (%d): %s %s' % (command, p.returncode, p.stdout, p.stderr))
        return p.stdout

    def close(self):
        """End the shared SSH connection of ssh() (it would end 60 s after its last use)."""
        if self._control is None:
            return
        if os.path.exists(self._control):
            subprocess.run(['ssh', '-o', 'ControlPath=' + self._control, '-O', 'exit', 'lab'], capture_output=True,
                           timeout=30, check=False, stdin=subprocess.DEVNULL)
        shutil.rmtree(os.path.dirname(self._control), ignore_errors=True)
        self._control = None

    def state(self, address):
        return self.states([address])[address]

    def states(self, addresses):
        """{address: (driver, driver_override)} read in one SSH round trip."""
        script = '; '.join(
            'd=$(readlink /sys/bus/pci/devices/%s/driver); o=$(cat /sys/bus/pci/devices/%s/driver_override); '
            'echo "%s ${d##*/} ${o:-(null)}"' % (a, a, a) for a in addresses)
        out = {}
        for line in self.ssh(script).splitlines():
            parts = line.split()
            if len(parts) == 3:
                out[parts[0]] = (parts[1], None if parts[2] == '(null)' else parts[2])
            elif len(parts) == 2:  # no driver: the ${d##*/} word is empty
                out[parts[0]] = (None, None if parts[1] == '(null)' else parts[1])
        return out

    def module(self, name, args=None, check=False, diff=False, timeout=600):
        """Run hypervisor.vfio.<name> on the lab host; return (ok, result dict)."""
        argv = [_bin('ansible'), self.name, '-i', self.inventory, '-m', 'hypervisor.vfio.' + name]
        if args:
            argv += ['-a', json.dumps(args)]
        if check:
            argv.append('--check')
        if diff:
            argv.append('--diff')
        p = self.run(argv, 'hypervisor.vfio.' + name, timeout, env=self.env)
        out = p.stdout
        marker = re.search(r'^%s \| [A-Z!]+ => \{' % re.escape(self.name), out, re.M)
        if not marker:
            raise AssertionError('no result from %s: rc=%d\n%s\n%s' % (' '.join(argv), p.returncode, out, p.stderr))
        result = json.JSONDecoder().raw_decode(out, marker.end() - 1)[0]
        return p.returncode == 0 and not result.get('failed'), result

    def facts(self):
        ok, res = self.module('vfio_facts')
        assert ok, res
        return res['ansible_facts']['vfio']


def pytest_configure(config):
    config.addinivalue_line('markers', 'lab: needs the lab VM (lab/labctl), boots one when none is given')
    config.addinivalue_line('markers', 'reboot: reboots a lab guest that boots like a real host')


# The fixtures that boot a guest: a test using one is rerun once when it met EmulatorFault.
GUEST_FIXTURES = ('lab', 'hostimage', 'hostimage_sdboot')


def pytest_collection_modifyitems(config, items):
    for item in items:
        if set(GUEST_FIXTURES) & set(getattr(item, 'fixturenames', ())):
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=['EmulatorFault']))


@pytest.fixture(scope='session')
def collections_path():
    """The checkout as the collection (hack/pytest_hv_collection.py, loaded by pytest.ini)."""
    return os.environ['HV_VFIO_COLLECTIONS_PATH']


@pytest.fixture(scope='session')
def lab(collections_path):
    inventory = os.environ.get('LAB_INVENTORY')
    started = False
    env = dict(os.environ, LAB_NAME=os.environ.get('LAB_NAME', 'itest'))
    if not inventory:
        if not os.path.exists(LABCTL):
            pytest.fail('the lab is missing: %s does not exist' % LABCTL)
        t0 = time.monotonic()
        p = subprocess.run([LABCTL, 'up'], env=env, capture_output=True, text=True, timeout=1800, check=False, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            pytest.fail('lab/labctl up failed (%d); integration tests need QEMU and the lab kernel:\n%s\n%s'
                        % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
        print('lab up in %.0fs' % (time.monotonic() - t0))
        started = True
        inventory = os.path.join(REPO, '.lab', env['LAB_NAME'], 'inventory.yml')
    lab = Lab(inventory, collections_path)
    if lab.vars.get('ansible_user', 'root') == 'root' or not lab.vars.get('ansible_become'):
        pytest.fail('%s logs in as %s without become; the lab is reached as fleets are (an operator '
                    'account and become: true): restart it with this lab/labctl'
                    % (inventory, lab.vars.get('ansible_user', 'root')))
    lab.restart = (lambda: _restart_lab(lab, env)) if started else None
    yield lab
    lab.close()
    if started:
        subprocess.run([LABCTL, 'down'], env=env, timeout=300, check=False, stdin=subprocess.DEVNULL)


def _restart_lab(lab, env):
    """A fresh lab VM in place of one hung on EmulatorFault (same instance, new boot)."""
    lab.close()
    subprocess.run([LABCTL, 'down'], env=env, timeout=300, check=False, stdin=subprocess.DEVNULL)
    p = subprocess.run([LABCTL, 'up'], env=env, capture_output=True, text=True, timeout=1800, check=False,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        pytest.fail('lab/labctl up failed (%d) after an emulator fault:\n%s\n%s'
                    % (p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    lab._read_inventory()


@pytest.fixture(autouse=True)
def _fresh_lab_after_emulator_fault(request):
    """Before a test that uses the lab VM: when the VM hung on EmulatorFault (a test met it and
    is rerun, or the fault came between tests), boot a fresh one, or fail saying why."""
    if 'lab' not in request.fixturenames:
        return
    lab = request.getfixturevalue('lab')
    faults = lab.emulator_faults()
    if not faults:
        return
    if lab.restart is None:
        pytest.fail('the lab VM of LAB_INVENTORY hung on an emulator fault (%s): restart it (lab/labctl down; up)'
                    % faults[0])
    print('emulator fault in the lab VM (%s): booting a fresh one' % faults[0])
    lab.restart()


@pytest.fixture
def clean(lab):
    """Every test starts and ends with the lab devices on their boot-time drivers."""
    wanted = [a for k, a in lab.devices.items() if k not in ('mgmt', 'disk', 'group')]
    wanted += list(lab.devices.get('group') or [])
    before = lab.states(wanted)
    yield before
    if lab.emulator_faults():
        return  # a hung VM: the next test boots a fresh one (_fresh_lab_after_emulator_fault)
    lab.ssh('for p in /sys/module/vfio_testdev/parameters/*; do echo 0 > $p; done 2>/dev/null; true')
    ok, res = lab.module('vfio_bind', {'devices': wanted, 'state': 'host', 'timeout': 30, 'force': True})
    assert ok, res


def quote(s):
    return shlex.quote(s)


def as_root(host_vars, command):
    """The remote command line that runs ``command`` (bash) as root on a host of the inventory:
    through ``sudo -n`` when it is reached with become, as hypervisors are."""
    if host_vars.get('ansible_become'):
        return 'sudo -n /bin/bash -c %s' % shlex.quote(command)
    return command

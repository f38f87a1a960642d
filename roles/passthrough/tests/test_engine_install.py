# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine as the role installs it on a host: plugins/module_utils as one zip file (the lookup
hypervisor.vfio.engine_archive, copied in one transfer) and the vfio-passthrough command hypervisor.vfio.vfio_persist
writes (module_utils/persist.py), run by a Python that has no
Ansible (isolated mode), against a fake sysfs tree (read-only commands: status, plan)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from ansible_collections.hypervisor.vfio.plugins.lookup import engine_archive
from ansible_collections.hypervisor.vfio.plugins.module_utils import persist
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost

ROLE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(ROLE))
PACKAGE = 'ansible_collections/hypervisor/vfio/plugins/module_utils'


def python_without_ansible():
    for cand in ('/usr/bin/python3', shutil.which('python3'), sys.executable):
        if cand and os.path.exists(cand):
            p = subprocess.run([cand, '-I', '-c', 'import ansible'], capture_output=True, check=False)
            if p.returncode != 0:
                return cand
    return None


@pytest.fixture
def installed(tmp_path):
    """What the role's install tasks lay down: the engine zip and the command."""
    archive = engine_archive.build(os.path.join(REPO, 'plugins', 'module_utils'), str(tmp_path / 'engine.zip'))
    text = persist.engine_command({'engine_python': python_without_ansible() or sys.executable}, archive=archive)
    cmd = tmp_path / 'vfio-passthrough'
    cmd.write_text(text)
    cmd.chmod(0o755)
    return cmd


def test_the_archive_is_the_same_for_the_same_sources(tmp_path):
    """Byte for byte (so the role's copy changes nothing on a re-run), and complete."""
    src = os.path.join(REPO, 'plugins', 'module_utils')
    a = engine_archive.build(src, str(tmp_path / 'a.zip'))
    b = engine_archive.build(src, str(tmp_path / 'b.zip'))
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        assert fa.read() == fb.read()
    with zipfile.ZipFile(a) as z:
        names = set(z.namelist())
    assert set(PACKAGE + '/' + os.path.basename(p) for p in glob.glob(os.path.join(src, '*.py'))) <= names
    assert 'ansible_collections/__init__.py' in names and PACKAGE + '/__init__.py' in names


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path / 'host')
    h.add_modules('vfio_pci', 'e1000e')
    h.add_device('0000:00:05.0', '8086', '10d3', driver='e1000e')
    h.add_device('0000:01:00.0', '8086', '10c9', driver='igb', sriov_totalvfs=7)
    return h


def run(cmd, host, state, *argv):
    path = os.path.join(host.root, 'state.json')
    with open(path, 'w') as f:
        json.dump(state, f)
    args = ['sh', str(cmd)] + list(argv) + [
        '--state', path, '--sysfs', host.sys, '--procfs', host.proc, '--modules-dir', host.moddir,
        '--modprobe-config-dir', host.confdir, '--lock-file', os.path.join(host.root, 'lock'),
        '--journal-file', os.path.join(host.root, 'journal.json')]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, cwd='/')


STATE = {'format': 1, 'devices': [{'address': '0000:00:05.0', 'vendor': '8086', 'device': '10d3', 'driver': None}],
         'sriov': [{'pf': '0000:01:00.0', 'numvfs': 2, 'drivers_autoprobe': False}]}


def test_installed_engine_runs_without_ansible(installed, host):
    python = python_without_ansible()
    if python is None:
        pytest.skip('no Python without Ansible on this machine to prove the engine needs none')
    p = run(installed, host, STATE, 'status')
    assert p.returncode == 5, p.stdout + p.stderr   # the kernel differs from the desired state
    assert '0000:00:05.0' in p.stdout and 'DIFFERS (rebind)' in p.stdout and '0 VFs (want 2)' in p.stdout
    p = run(installed, host, STATE, 'plan', '--json')
    assert p.returncode == 5, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    (row,) = doc['bind']['devices']
    assert (row['action'], row['module'], row['result']) == ('rebind', 'vfio_pci', 'planned')
    assert doc['sriov']['pfs'][0]['action'] == 'create'
    # read only: the fake tree is as it was
    assert os.readlink(os.path.join(host.dev_dir('0000:00:05.0'), 'driver')).endswith('/e1000e')


def test_installed_engine_help(installed):
    p = subprocess.run(['sh', str(installed), '--help'], capture_output=True, text=True, timeout=60,
                       check=False)
    assert p.returncode == 0 and 'exit codes' in p.stdout and 'restore' in p.stdout

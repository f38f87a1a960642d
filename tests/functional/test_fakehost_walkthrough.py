# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""README "Try it without hardware", step by step: tools/fakehost.py writes a fake hypervisor
and its inventory; the collection's playbooks converge it (check mode, then the idempotent run
on a tree already on VFIO) and report it into the current directory."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess
import sys

import ansible_collections.hypervisor.vfio as collection
from ansible_collections.hypervisor.vfio.tests.playbook import playbook_env, run_playbook

TOOL = os.path.join(list(collection.__path__)[0], 'tools', 'fakehost.py')


def recap(out):
    m = re.search(r'ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', out)
    assert m, out
    return dict(zip(('ok', 'changed', 'unreachable', 'failed'), (int(x) for x in m.groups())))


def test_readme_walkthrough(tmp_path):
    root = str(tmp_path / 'fakehost')

    def tool(*args):
        p = subprocess.run([sys.executable, TOOL, root] + list(args), cwd=str(tmp_path), env=playbook_env(tmp_path),
                           capture_output=True, text=True, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        return json.loads(p.stdout)

    def play(*args):
        return run_playbook(tmp_path, ['-i', os.path.join(root, 'inventory.json')] + list(args), cwd=tmp_path)

    role_vars = tool()
    assert len(role_vars['passthrough_devices']) == 10
    rc, out = play('hypervisor.vfio.converge', '--check', '--diff')
    assert rc == 0 and recap(out)['changed'] >= 1 and recap(out)['failed'] == 0, out
    assert '-        "driver": "nouveau",' in out and '+        "driver": "virtio_vfio_pci",' in out, out

    # no kernel behind the tree: a real converge of devices on their host drivers fails and rolls back
    rc, out = play('hypervisor.vfio.converge')
    assert rc != 0 and 'rolled back' in out, out

    # the tree as a converge leaves it: the real run is the idempotent re-run
    tool('--force', '--state', 'vfio')
    rc, out = play('hypervisor.vfio.converge')
    assert rc == 0 and recap(out)['changed'] == 0 and recap(out)['failed'] == 0, out

    rc, out = play('hypervisor.vfio.report')
    assert rc == 0, out
    report = (tmp_path / 'fleet-report.md').read_text()
    assert 'fakehost' in report and '0000:01:00.0' in report and 'virtio_vfio_pci' in report
    data = json.loads((tmp_path / 'fleet-report.json').read_text())
    assert data

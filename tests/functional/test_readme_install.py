# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""README "Install and use", followed as a new user would: the collection built into a tarball
(from the files 'make build' stages), installed with the README's own `ansible-galaxy collection
install <tarball>` line into a fresh HOME, then the shell block of "Try it without hardware" run
as written, with bash, in an empty directory. Nothing of the checkout is on Ansible's path: the
playbooks, the role, the modules and tools/fakehost.py come from the installed collection. It
ends with a converged fake host and the fleet report in that directory."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil
import subprocess
import sys

import ansible_collections.hypervisor.vfio as collection

REPO = os.path.realpath(list(collection.__path__)[0])
BIN = os.path.dirname(sys.executable)


def readme_section(heading):
    """The text of README.md under ``heading`` (a ### line), up to the next heading."""
    with open(os.path.join(REPO, 'README.md')) as f:
        text = f.read()
    m = re.search(r'^### %s\n(.*?)(?=^##)' % re.escape(heading), text, re.M | re.S)
    assert m, 'README.md has no section "### %s"' % heading
    return m.group(1)


def sh_blocks(section):
    return re.findall(r'```sh\n(.*?)```', section, re.S)


def recaps(out):
    return [dict(zip(('ok', 'changed', 'failed'), (int(x) for x in m)))
            for m in re.findall(r'ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)', out)]


def user_env(home):
    """A new user's environment: the venv's Ansible on PATH, nothing pointing at the checkout."""
    env = dict((k, v) for k, v in os.environ.items()
               if not k.startswith('ANSIBLE_') and k not in ('HV_VFIO_COLLECTIONS_PATH', 'PYTHONPATH'))
    env.update(HOME=str(home), PATH=BIN + os.pathsep + os.environ.get('PATH', ''), ANSIBLE_NOCOLOR='1',
               ANSIBLE_FORCE_COLOR='0', ANSIBLE_GATHER_TIMEOUT=os.environ.get('ANSIBLE_GATHER_TIMEOUT', '60'))
    return env


def bash(script, cwd, env):
    p = subprocess.run(['bash', '-euxo', 'pipefail', '-c', script], cwd=str(cwd), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=900, check=False)
    return p.returncode, p.stdout


def test_install_from_the_tarball_then_try_it_without_hardware(tmp_path):
    home, work, dist = tmp_path / 'home', tmp_path / 'work', tmp_path / 'dist'
    for d in (home, work, dist):
        d.mkdir()
    env = user_env(home)
    # the tarball, as 'make build' makes it (hack/build-collection: a staged copy, then galaxy build)
    stage = tmp_path / 'stage' / 'ansible_collections' / 'hypervisor' / 'vfio'
    subprocess.run([os.path.join(REPO, 'hack', 'stage-collection'), str(stage)], check=True)
    rc, out = bash('ansible-galaxy collection build --output-path %s %s' % (dist, stage), tmp_path, env)
    assert rc == 0, out
    (tarball,) = os.listdir(str(dist))
    shutil.copy(str(dist / tarball), str(work / tarball))

    # "Install": the README's line for a release tarball names this version's file
    install = [line.split('#')[0].strip() for block in sh_blocks(readme_section('Install')) for line in block.splitlines()
               if line.startswith('ansible-galaxy collection install') and '.tar.gz' in line]
    assert install == ['ansible-galaxy collection install %s' % tarball], install
    rc, out = bash(install[0], work, env)
    assert rc == 0 and 'hypervisor.vfio:' in out and 'was installed successfully' in out, out
    installed = home / '.ansible' / 'collections' / 'ansible_collections' / 'hypervisor' / 'vfio'
    with open(str(installed / 'MANIFEST.json')) as f:
        assert json.load(f)['collection_info']['name'] == 'vfio'

    # "Try it without hardware", as written
    (block,) = sh_blocks(readme_section('Try it without hardware'))
    rc, out = bash(block, work, env)
    assert rc == 0, out
    assert str(installed / 'tools' / 'fakehost.py') in out, out    # the tool of the installed collection
    check, converge, report = recaps(out)
    assert check['changed'] >= 1 and check['failed'] == 0, out     # the plan, in check mode
    assert '-        "driver": "nouveau",' in out and '+        "driver": "virtio_vfio_pci",' in out, out
    assert converge['changed'] == 0 and converge['failed'] == 0, out  # the converged host: nothing to do
    assert report['failed'] == 0, out
    # the report lands where the user runs the playbook
    md = (work / 'fleet-report.md').read_text()
    assert 'fakehost' in md and '0000:01:00.0' in md and 'virtio_vfio_pci' in md, md
    assert json.loads((work / 'fleet-report.json').read_text())
    assert (work / 'fleet-report.html').read_text().lstrip().lower().startswith('<!doctype html')
    assert not [p for p in os.listdir(str(installed)) if p.startswith('fleet-report')]

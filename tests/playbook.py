# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""ansible-playbook in the tests (functional, report, role): the venv's own, with the checkout as
the collection hypervisor.vfio (hack/pytest_hv_collection.py, loaded by pytest.ini, exports the
path) and Ansible's home in the test's temp folder, so nothing in $HOME shadows or is written."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import sys


def ansible_playbook():
    here = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    return here if os.path.exists(here) else (shutil.which('ansible-playbook') or 'ansible-playbook')


def playbook_env(tmp_path, **extra):
    """The environment of an ansible-playbook run of a test; ``extra`` adds or overrides variables."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.environ['HV_VFIO_COLLECTIONS_PATH'],
               ANSIBLE_HOME=str(tmp_path / 'ansible-home'), ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0')
    env.update(extra)
    return env


def run_playbook(tmp_path, args, cwd=None, timeout=600, **extra_env):
    """ansible-playbook ``args``: (return code, its output, stderr included)."""
    p = subprocess.run([ansible_playbook()] + [str(a) for a in args], env=playbook_env(tmp_path, **extra_env),
                       cwd=None if cwd is None else str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=timeout, check=False)
    return p.returncode, p.stdout


def run_local_play(tmp_path, play, host, out, **extra_env):
    """Run ``play`` (YAML text with two %s: the module arguments of the FakeHost ``host``'s paths, then
    the file ``out`` the play writes) on localhost with this Python; return what it wrote to ``out``."""
    args = dict(sysfs_path=host.sys, procfs_path=host.proc, modules_dir=host.moddir,
                modprobe_config_dirs=[host.confdir])
    path = tmp_path / 'play.yml'
    path.write_text(play % (json.dumps(args), out))
    rc, output = run_playbook(tmp_path, ['-i', 'localhost,', path], ANSIBLE_PYTHON_INTERPRETER=sys.executable,
                              **extra_env)
    assert rc == 0, output
    return out.read_text()

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the fleet report tests: the checkout as a collection, a fake fleet, ansible-playbook."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(REPO, 'artifacts')

# The checkout seen as the collection hypervisor.vfio (hack/pytest_hv_collection.py, loaded by
# pytest.ini), so nothing is installed and nothing in $HOME shadows the checkout.
COLLECTIONS = os.environ['HV_VFIO_COLLECTIONS_PATH']


def ansible_playbook_bin():
    here = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    return here if os.path.exists(here) else (shutil.which('ansible-playbook') or 'ansible-playbook')


@pytest.fixture
def run_playbook(tmp_path):
    """Run a playbook of the checkout (a path, or an FQCN) with an inventory, in tmp_path as the
    working directory; return the CompletedProcess."""
    def run(playbook, inventory, extra_vars=None, check=True):
        env = dict(os.environ)
        env.update({
            'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS,
            'ANSIBLE_HOME': str(tmp_path / 'ansible-home'),
            'ANSIBLE_LOCAL_TEMP': str(tmp_path / 'ansible-tmp'),
            'ANSIBLE_LOCALHOST_WARNING': 'false',
            'ANSIBLE_HOST_KEY_CHECKING': 'false',
            'ANSIBLE_NOCOLOR': '1',
            'ANSIBLE_FORCE_COLOR': '0',
        })
        # 'hypervisor.vfio.report' is run by its FQCN, as users of the installed collection do
        target = playbook if playbook.startswith('hypervisor.vfio.') else os.path.join(REPO, playbook)
        argv = [ansible_playbook_bin(), '-i', str(inventory), target]
        if extra_vars:
            argv += ['-e', json.dumps(extra_vars)]
        proc = subprocess.run(argv, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=600, check=False)
        if check and proc.returncode != 0:
            raise AssertionError('%s failed (%s):\n%s' % (playbook, proc.returncode, proc.stdout))
        return proc
    return run

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the fleet report tests: the checkout as a collection, a fake fleet, ansible-playbook."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
from collections import namedtuple

import pytest

from ansible_collections.hypervisor.vfio.tests.playbook import run_playbook as run_ansible_playbook

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(REPO, 'artifacts')
Completed = namedtuple('Completed', 'returncode stdout')


@pytest.fixture
def run_playbook(tmp_path):
    """Run a playbook of the checkout (a path, or an FQCN) with an inventory, in tmp_path as the
    working directory; return the CompletedProcess."""
    def run(playbook, inventory, extra_vars=None, check=True):
        # 'hypervisor.vfio.report' is run by its FQCN, as users of the installed collection do
        target = playbook if playbook.startswith('hypervisor.vfio.') else os.path.join(REPO, playbook)
        argv = ['-i', str(inventory), target]
        if extra_vars:
            argv += ['-e', json.dumps(extra_vars)]
        rc, out = run_ansible_playbook(tmp_path, argv, cwd=tmp_path, ANSIBLE_LOCAL_TEMP=str(tmp_path / 'ansible-tmp'),
                                       ANSIBLE_HOST_KEY_CHECKING='false')
        if check and rc != 0:
            raise AssertionError('%s failed (%s):\n%s' % (playbook, rc, out))
        return Completed(rc, out)
    return run

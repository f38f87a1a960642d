# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pytest plugin: make ``import ansible_collections.hypervisor.vfio...`` resolve to this checkout.

Loaded by pytest.ini (``-p pytest_hv_collection``).  It creates a temp folder holding
``ansible_collections/hypervisor/vfio`` as a symlink to the repo root and puts that folder
first on ``sys.path``, so plain ``pytest`` from the repo root imports the collection's code
as Ansible would, without installing anything and without an installed copy shadowing it.
The folder is also exported as ``HV_VFIO_COLLECTIONS_PATH`` (use it as
``ANSIBLE_COLLECTIONS_PATH`` for ansible-playbook runs in tests).

The one bootstrap of the collection path for Python: scripts outside pytest (benchmarks/)
call :func:`collections_path` after putting hack/ on ``sys.path``; the folder is removed at exit.
The shell's is hack/collection-link.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TMP = None


def _setup():
    global _TMP  # pylint: disable=global-statement
    if _TMP is not None:
        return
    _TMP = tempfile.mkdtemp(prefix='hv-vfio-pytest-collections-')
    parent = os.path.join(_TMP, 'ansible_collections', 'hypervisor')
    os.makedirs(parent)
    os.symlink(REPO, os.path.join(parent, 'vfio'))
    sys.path.insert(0, _TMP)
    os.environ.setdefault('HV_VFIO_COLLECTIONS_PATH', _TMP)
    atexit.register(shutil.rmtree, _TMP, True)


def collections_path():
    """The folder holding ansible_collections/hypervisor/vfio -> this checkout (first on sys.path)."""
    _setup()
    return _TMP


def pytest_load_initial_conftests(early_config, parser, args):  # pylint: disable=unused-argument
    """Run before any conftest is imported, so conftests can import the collection too."""
    _setup()


def pytest_unconfigure(config):  # pylint: disable=unused-argument
    """Remove the temp folder (only the symlink lives in it)."""
    if _TMP is not None:
        shutil.rmtree(_TMP, ignore_errors=True)


_setup()

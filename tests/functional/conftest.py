# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures the functional tests share: ``benchmark_script``, the scripts of benchmarks/ imported
as modules (their helpers are tested without running a benchmark)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import os
import sys

import pytest

import ansible_collections.hypervisor.vfio as collection

BENCH = os.path.join(list(collection.__path__)[0], 'benchmarks')


@pytest.fixture(scope='module')
def benchmark_script():
    """``load(name)`` imports benchmarks/<name>.py; benchmarks/ stays on sys.path (the scripts import
    ``_bench``) while the test module runs."""
    def load(name):
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, name + '.py'))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    sys.path.insert(0, BENCH)
    try:
        yield load
    finally:
        sys.path.remove(BENCH)

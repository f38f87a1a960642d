# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures the unit tests share: each test file builds its own ``host`` (a FakeHost); the fake
kernel over it is the same everywhere."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeKernel


@pytest.fixture
def kernel(host):
    """The FakeKernel over the test's ``host``: sysfs writes with the kernel's semantics, recorded."""
    return FakeKernel(host)

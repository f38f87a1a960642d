# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures the unit tests share: ``host``, the standard FakeHost (a test file that needs
another builds its own ``host``), and the fake kernel over whichever ``host`` the test has."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeKernel, vfio_host


@pytest.fixture
def host(tmp_path):
    """fakesys.vfio_host: vfio_pci, two VFIO variants, two host drivers, VIRTIO, NIC and TESTDEV."""
    return vfio_host(tmp_path)


@pytest.fixture
def kernel(host):
    """The FakeKernel over the test's ``host``: sysfs writes with the kernel's semantics, recorded."""
    return FakeKernel(host)

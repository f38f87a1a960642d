# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plan(request, snapshot) is a pure function of values; the executor returns outcomes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shutil

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import Executor
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import Request, parse_request, plan
from ansible_collections.hypervisor.vfio.plugins.module_utils.snapshot import plan_on_host, read_snapshot
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import MGMT, NIC, VIRTIO, FakeKernel, add_mgmt, vfio_host


@pytest.fixture
def host(tmp_path):
    h = vfio_host(tmp_path)
    add_mgmt(h)
    return h


def request(host, **params):
    p = host.params(**params)
    return p, Request(parse_request(p, PCI), p['iommu_group'], p['force'])


def test_plan_reads_nothing_but_the_snapshot(host, tmp_path):
    p, req = request(host, devices=[VIRTIO, NIC, MGMT])
    ctx = HostContext(p, fs=FakeKernel(host))
    snapshot, first = plan_on_host(ctx, PCI, req)
    assert not first.needs
    assert first.errors and 'live SSH' not in ' '.join(first.errors)  # eth0 carries the default route
    # the host is gone: the plan is made again from the snapshot alone, identical
    shutil.rmtree(str(tmp_path / 'sys'))
    again = plan(req, snapshot)
    assert again == first
    assert isinstance(again.devices, tuple) and isinstance(again.devices[0].warnings, tuple)
    with pytest.raises(AttributeError):
        again.devices[0].action = 'none'  # an Entry is immutable


def test_a_snapshot_without_the_in_use_facts_names_them(host):
    p, req = request(host, devices=[NIC])
    ctx = HostContext(p, fs=FakeKernel(host))
    bare = read_snapshot(ctx, PCI)
    partial = plan(req, bare)
    assert ('in_use', NIC, 'nic') in partial.needs and ('in_use', NIC, 'ssh') in partial.needs
    snapshot, full = plan_on_host(ctx, PCI, req)
    assert not full.needs and ('in_use', NIC, 'nic') in snapshot.facts
    assert full.devices[0].action == 'rebind' and not full.errors
    assert bare.facts.get(('in_use', NIC, 'nic')) is None  # reading facts makes a new snapshot


def test_executor_returns_outcomes_and_leaves_the_plan(host):
    p, req = request(host, devices=[VIRTIO, NIC])
    kernel = FakeKernel(host)
    ctx = HostContext(p, fs=kernel)
    dummy, planned = plan_on_host(ctx, PCI, req)
    before = tuple(planned.devices)
    applied = Executor(kernel, PCI, kernel.modprobe).apply(planned)
    assert planned.devices == before  # nothing edited
    assert applied.failure is None and applied.changed
    assert applied.drivers == {'virtio_vfio_pci': 'virtio_vfio_pci', 'vfio_pci': 'vfio-pci'}
    assert applied.outcomes[VIRTIO].result == 'changed'
    assert (applied.outcomes[NIC].driver_after, applied.outcomes[NIC].override_after) == ('vfio-pci', 'vfio-pci')
    assert kernel._driver_of(NIC) == 'vfio-pci'

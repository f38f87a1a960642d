# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_bind's option consumer end to end (AnsibleModule) on the fake kernel; the pure rules are
tested in tests/unit/plugins/module_utils/test_consumers.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hypervisor.vfio.plugins.modules import vfio_bind
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import VIRTIO, FakeKernel
from ansible_collections.hypervisor.vfio.tests.unit.plugins.modules.module_runner import host_args, run_module


def test_module_reports_the_consumer_in_check_mode(host, capsys):
    """vfio_bind end to end (AnsibleModule, check mode): the plan takes vfio_pci, the result says why."""
    args = host_args(host, devices=[VIRTIO], consumer='kubevirt')
    out = run_module(vfio_bind, args, capsys, check_mode=True)
    (dev,) = out['devices']
    assert (dev['action'], dev['module']) == ('rebind', 'vfio_pci')
    assert out['consumer']['name'] == 'kubevirt' and out['consumer']['pinned'] == ['devices[0] (0000:00:03.0)']


def test_module_refuses_a_contradicting_pin(host, capsys):
    args = host_args(host, devices=[{'address': VIRTIO, 'driver': 'virtio_vfio_pci'}], consumer='proxmox')
    out = run_module(vfio_bind, args, capsys)
    assert out['failed'] and 'invalid request, nothing was changed' in out['msg']
    assert 'pins driver virtio_vfio_pci, which contradicts consumer=proxmox' in out['msg']
    assert FakeKernel(host)._driver_of(VIRTIO) == 'virtio-pci'

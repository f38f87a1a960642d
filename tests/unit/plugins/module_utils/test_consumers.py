# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The consumers' rules (module_utils/consumers.py): the pure request rewrite, then a real bind
on the fake kernel with consumer=kubevirt, where the variant search would pick virtio_vfio_pci."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


import pytest


from ansible_collections.hypervisor.vfio.plugins.module_utils.consumers import (
    CONSUMERS, constrain, constrain_params)
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, FakeKernel, bind_on

VIRTIO = '0000:00:03.0'


def test_no_consumer_changes_nothing():
    devices = ['0000:00:03.0', {'vendor': '10de'}]
    assert constrain(None, devices) == (devices, None)


def test_consumers_listed():
    assert CONSUMERS == ('kubevirt', 'libvirt', 'nova', 'proxmox')


@pytest.mark.parametrize('consumer', ['kubevirt', 'proxmox'])
def test_pinning_consumers_pin_every_vfio_entry(consumer):
    devices = ['0000:00:03.0', {'vendor': '10de', 'class': '0302'}, {'address': '0000:00:04.0', 'state': 'host'},
               {'address': '0000:00:05.0', 'driver': 'vfio-pci'}]
    out, info = constrain(consumer, devices)
    assert out == [{'address': '0000:00:03.0', 'driver': 'vfio_pci'},
                   {'vendor': '10de', 'class': '0302', 'driver': 'vfio_pci'},
                   {'address': '0000:00:04.0', 'state': 'host'},
                   {'address': '0000:00:05.0', 'driver': 'vfio-pci'}]
    assert info['name'] == consumer and info['driver'] == 'vfio_pci'
    assert info['pinned'] == ['devices[0] (0000:00:03.0)', 'devices[1]']
    assert 'vfio-pci' in info['reason']
    assert devices[0] == '0000:00:03.0' and 'driver' not in devices[1]  # the input is not modified


def test_kubevirt_state_host_request_is_left_alone():
    out, info = constrain('kubevirt', ['0000:00:03.0', {'address': '0000:00:04.0', 'state': 'vfio'}], state='host')
    assert out == ['0000:00:03.0', {'address': '0000:00:04.0', 'state': 'vfio', 'driver': 'vfio_pci'}]
    assert info['pinned'] == ['devices[1] (0000:00:04.0)']


@pytest.mark.parametrize('devices, driver, message', [
    ([{'address': '0000:3b:00.0', 'driver': 'mlx5_vfio_pci'}], None,
     'devices[0] (0000:3b:00.0) pins driver mlx5_vfio_pci, which contradicts consumer=kubevirt'),
    (['0000:3b:00.0'], 'virtio_vfio_pci', 'driver=virtio_vfio_pci contradicts consumer=kubevirt'),
])
def test_kubevirt_refuses_a_variant_pin(devices, driver, message):
    with pytest.raises(RequestError) as e:
        constrain('kubevirt', devices, driver=driver)
    assert message in str(e.value) and 'device plugin' in str(e.value)


@pytest.mark.parametrize('consumer', ['libvirt', 'nova'])
def test_libvirt_and_nova_keep_the_variant_and_ask_for_managed_no(consumer):
    devices = ['0000:00:03.0', {'address': '0000:3b:00.0', 'driver': 'mlx5_vfio_pci'}]
    out, info = constrain(consumer, devices)
    assert out == devices and info['driver'] is None and info['pinned'] == []
    assert info['managed'] == 'no' and "managed" in info['reason']


def test_unknown_consumer():
    with pytest.raises(RequestError, match="consumer must be one of kubevirt, libvirt, nova, proxmox, got 'ovirt'"):
        constrain('ovirt', ['0000:00:03.0'])


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path)
    h.add_modules('vfio_pci', 'virtio_vfio_pci', 'virtio_pci')
    h.add_device(VIRTIO, '1af4', '1041', driver='virtio-pci')
    return h


def bind(host, **params):
    kernel = FakeKernel(host)
    p, info = constrain_params(host.params(devices=[VIRTIO], **params))
    return kernel, bind_on(host, kernel, **p), info


def test_kubevirt_binds_vfio_pci_where_the_variant_search_picks_a_variant(host):
    kernel, result, info = bind(host, consumer='kubevirt')
    (dev,) = result['devices']
    assert (dev['module'], dev['driver_after']) == ('vfio_pci', 'vfio-pci')
    assert (kernel._driver_of(VIRTIO), kernel._override(VIRTIO)) == ('vfio-pci', 'vfio-pci')
    assert info['pinned'] == ['devices[0] (0000:00:03.0)']


def test_without_consumer_the_variant_wins(host):
    kernel, result, info = bind(host)
    assert info is None
    assert kernel._driver_of(VIRTIO) == 'virtio_vfio_pci'

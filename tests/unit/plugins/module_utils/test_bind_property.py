# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property: any argument set ends in success or in a clean failure that wrote nothing.

The generated requests include what YAML makes of unquoted addresses and ids (floats, ints,
booleans), pins to host drivers (e1000e, virtio_pci), a GPU whose DRM node a process holds
open, an NVIDIA GPU whose /dev/nvidiaN a process holds open, and the boot VGA device under a live
firmware framebuffer: each must be refused before any write (the GPUs: unless force), and no run
leaves its journal behind."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile

import pytest

hypothesis = pytest.importorskip('hypothesis')
st = pytest.importorskip('hypothesis.strategies')

from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed  # noqa: E402
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError  # noqa: E402
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, FakeKernel, add_mgmt, bind_on  # noqa: E402

ADDRESSES = ['0000:00:02.0', '0000:00:03.0', '0000:00:04.0', '0000:00:05.0', '00:04.0', '0000:00:09.0']
GPU = '0000:00:06.0'
BOOT_VGA = '0000:00:07.0'
NVIDIA = '0000:00:08.0'
GPUS = {GPU: 'amdgpu', BOOT_VGA: None, NVIDIA: 'nvidia'}
junk_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2ff), max_size=12)
# what YAML 1.1 makes of unquoted 00:03.0 / 0x1af4 / 0200 / on: numbers and booleans
yaml_scalar = st.one_of(st.floats(allow_nan=True), st.integers(-5, 99999), st.booleans())
address = st.one_of(st.sampled_from(ADDRESSES + sorted(GPUS)), junk_text, yaml_scalar)
driver = st.one_of(st.none(), st.sampled_from(['vfio_pci', 'vfio-pci', 'virtio_vfio_pci', 'mlx5_vfio_pci',
                                               'e1000e', 'virtio_pci', 'virtio-pci',
                                               '../x', 'a/b', 'vfio_pci\n', 'x\x00']), junk_text)
hexid = st.one_of(st.sampled_from(['1af4', '8086', '1041', '10d3', '1b36', 'dead', '1002', '1234', '10de']), yaml_scalar,
                  junk_text)
selector = st.fixed_dictionaries({}, optional={
    'address': address, 'vendor': hexid, 'device': hexid, 'class': st.sampled_from(['02', '0200', '00ff', 'zz']),
    'physfn': address, 'iommu_group': st.one_of(st.integers(-2, 6), junk_text),
    'current_driver': driver, 'state': st.sampled_from(['vfio', 'host', 'bogus', None]), 'driver': driver,
    'optional': st.one_of(st.booleans(), junk_text), 'extra': st.integers()})
item = st.one_of(address, selector, st.integers(), st.none(), st.lists(st.integers(), max_size=2))
params = st.fixed_dictionaries({
    'devices': st.one_of(st.lists(item, max_size=6), st.none(), junk_text),
    'state': st.sampled_from(['vfio', 'host', 'nope']),
    'driver': driver,
    'iommu_group': st.sampled_from(['strict', 'all', 'ignore', 'maybe']),
    'force': st.booleans(),
    'timeout': st.one_of(st.integers(-1, 20), st.just(True), st.floats(allow_nan=True)),
})


def build(root):
    h = FakeHost(root)
    h.add_modules('vfio_pci', 'virtio_vfio_pci', 'virtio_pci', 'e1000e')
    add_mgmt(h)
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio-pci', group=7)
    h.add_device('0000:00:04.0', '8086', '10d3', driver='e1000e', group=7)
    h.add_device('0000:00:05.0', '1b36', '0005', cls='00ff00')
    # a GPU on its host driver whose render node a compositor holds open
    h.add_module('amdgpu', ids=[('1002', '744c')], loaded=True)
    h.add_device(GPU, '1002', '744c', cls='030000', driver='amdgpu')
    os.makedirs(os.path.join(h.dev_dir(GPU), 'drm', 'renderD128'))
    os.makedirs(os.path.join(h.proc, '777', 'fd'))
    os.symlink('/dev/dri/renderD128', os.path.join(h.proc, '777', 'fd', '9'))
    with open(os.path.join(h.proc, '777', 'comm'), 'w') as f:
        f.write('kwin_wayland\n')
    # the boot VGA device, driven by efifb (no pci driver), its framebuffer live in its BAR 0
    h.add_device(BOOT_VGA, '1234', '1111', cls='030000')
    write(os.path.join(h.dev_dir(BOOT_VGA), 'boot_vga'), '1\n')
    write(os.path.join(h.dev_dir(BOOT_VGA), 'resource'),
          '0x0000000080000000 0x0000000080ffffff 0x0000000000040200\n'
          + '0x0000000000000000 0x0000000000000000 0x0000000000000000\n' * 12)
    write(os.path.join(h.proc, 'iomem'), '80000000-80ffffff : %s\n  80000000-802fffff : BOOTFB\n' % BOOT_VGA)
    # an NVIDIA GPU whose /dev/nvidia0 a CUDA job holds open
    h.add_module('nvidia', ids=[('10de', '2684')], loaded=True)
    h.add_device(NVIDIA, '10de', '2684', cls='030000', driver='nvidia')
    write(os.path.join(h.proc, 'driver/nvidia/gpus', NVIDIA, 'information'), 'Device Minor: \t 0\n')
    os.makedirs(os.path.join(h.proc, '888', 'fd'))
    os.symlink('/dev/nvidia0', os.path.join(h.proc, '888', 'fd', '5'))
    write(os.path.join(h.proc, '888', 'comm'), 'python3\n')
    return h


def write(path, text):
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
        f.write(text)


@hypothesis.settings(max_examples=150, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(params)
def test_success_or_clean_failure_without_writes(args):
    root = tempfile.mkdtemp()
    try:
        host = build(root)
        kernel = FakeKernel(host)
        p = host.params(**args)
        try:
            result = bind_on(host, kernel, **p)
        except (RequestError, BindFailed) as e:
            assert str(e) and ('None' not in str(e) or 'None' in repr(args))  # never Python's None of its own
            assert kernel.device_writes() == []
            assert not os.path.exists(p['journal_file'])
            return
        assert not os.path.exists(p['journal_file'])
        for gpu, driver in GPUS.items():  # a GPU the host uses moves only with force
            assert kernel._driver_of(gpu) == driver or args['force'], gpu
        for d in result['devices']:
            drv, override = kernel._driver_of(d['address']), kernel._override(d['address'])
            assert (drv, override) == (d['driver_after'], d['override_after'])
            if d['state'] == 'vfio':
                assert drv == override and drv is not None
                assert drv in ('vfio-pci', 'virtio_vfio_pci')  # a pin to a host driver never binds
        assert result['changed'] == bool(kernel.device_writes())
    finally:
        shutil.rmtree(root)

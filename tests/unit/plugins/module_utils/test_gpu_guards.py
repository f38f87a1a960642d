# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPUs the host uses are refused unless force: DRM and NVIDIA nodes held open, the boot VGA
device under a firmware framebuffer (fake trees laid out as sysfs and procfs show them)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, refused
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import bind_on as bind

GPU = '0000:01:00.0'
BOOT = '0000:00:02.0'


def _write(path, text):
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
        f.write(text)


def hold(host, pid, node, comm):
    """Process pid holds the device file node open (as /proc/<pid>/fd shows it)."""
    fd = os.path.join(host.proc, str(pid), 'fd')
    if not os.path.isdir(fd):
        os.makedirs(fd)
    os.symlink(node, os.path.join(fd, str(len(os.listdir(fd)) + 3)))
    _write(os.path.join(host.proc, str(pid), 'comm'), comm + '\n')


def drm_nodes(host, addr, card, render):
    for name in ('card%d' % card, 'renderD%d' % render):
        os.makedirs(os.path.join(host.dev_dir(addr), 'drm', name))


def resource(host, addr, bars):
    """The device's resource file: 13 lines of start, end, flags (unused BARs are zeros)."""
    lines = ['0x%016x 0x%016x 0x0000000000040200' % b for b in bars]
    lines += ['0x0000000000000000 0x0000000000000000 0x0000000000000000'] * (13 - len(bars))
    _write(os.path.join(host.dev_dir(addr), 'resource'), '\n'.join(lines) + '\n')


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path)
    h.add_modules('vfio_pci')
    h.add_module('amdgpu', ids=[('1002', '744c')], loaded=True)
    h.add_module('nvidia', ids=[('10de', '2684')], loaded=True)
    h.add_device(GPU, '1002', '744c', cls='030000', driver='amdgpu')
    h.add_device(BOOT, '1234', '1111', cls='030000')   # QEMU stdvga, no pci driver: efifb drives it
    h.add_device('0000:02:00.0', '10de', '2684', cls='030000', driver='nvidia')
    return h


def test_gpu_with_open_drm_node_refused(host, kernel):
    drm_nodes(host, GPU, 1, 129)
    hold(host, 2101, '/dev/dri/renderD129', 'gnome-shell')
    hold(host, 2202, '/dev/dri/card1', 'Xorg')
    hold(host, 2303, '/dev/dri/card0', 'other-gpu-user')  # another GPU's node is no reason
    msg, dummy = refused(host, kernel, devices=[GPU])  # and nothing written
    assert 'refusing to unbind %s from amdgpu' % GPU in msg
    assert 'GPU device node /dev/dri/card1 is open by pid 2202 (Xorg)' in msg
    assert 'GPU device node /dev/dri/renderD129 is open by pid 2101 (gnome-shell)' in msg
    assert 'other-gpu-user' not in msg


def test_gpu_with_closed_drm_nodes_is_bound(host, kernel):
    drm_nodes(host, GPU, 1, 129)
    hold(host, 2303, '/dev/dri/card0', 'other-gpu-user')
    bind(host, kernel, devices=[GPU])
    assert kernel._driver_of(GPU) == 'vfio-pci'


def test_force_binds_a_gpu_in_use_with_a_warning(host, kernel):
    drm_nodes(host, GPU, 1, 129)
    hold(host, 2202, '/dev/dri/card1', 'Xorg')
    r = bind(host, kernel, devices=[GPU], force=True)
    (d,) = r['devices']
    assert d['forced'] and 'GPU device node /dev/dri/card1 is open by pid 2202 (Xorg)' in d['guards'][0]
    assert kernel._driver_of(GPU) == 'vfio-pci'


def test_nvidia_nodes_held_open_refused(host, kernel):
    nv = '0000:02:00.0'
    _write(os.path.join(host.proc, 'driver/nvidia/gpus', nv, 'information'),
           'Model: \t\t NVIDIA GeForce RTX 4090\nDevice Minor: \t 1\nBus Location: \t 0000:02:00.0\n')
    hold(host, 3100, '/dev/nvidia1', 'python3')
    hold(host, 3200, '/dev/nvidia0', 'other-job')  # minor 0 is another GPU
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[nv])
    msg = str(e.value)
    assert '/dev/nvidia1 is open by pid 3100 (python3)' in msg and 'other-job' not in msg
    # nvidia-persistenced holding the control node blocks every NVIDIA GPU's unbind
    os.unlink(os.path.join(host.proc, '3100', 'fd', '3'))
    hold(host, 3300, '/dev/nvidiactl', 'nvidia-persiste')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[nv])
    assert '/dev/nvidiactl is open by pid 3300 (nvidia-persiste)' in str(e.value)


def test_boot_vga_under_a_firmware_framebuffer_refused(host, kernel):
    _write(os.path.join(host.dev_dir(BOOT), 'boot_vga'), '1\n')
    resource(host, BOOT, [(0x80000000, 0x80ffffff), (0x81000000, 0x81000fff)])
    _write(os.path.join(host.proc, 'iomem'),
           '00000000-00000fff : Reserved\n'
           '80000000-8fffffff : PCI Bus 0000:00\n'
           '  80000000-80ffffff : 0000:00:02.0\n'
           '    80000000-802fffff : BOOTFB\n'
           '      80000000-802fffff : simpledrm\n')
    fb = os.path.join(host.sys, 'devices/platform/simple-framebuffer.0/graphics/fb0')
    _write(os.path.join(fb, 'name'), 'simpledrmdrmfb\n')
    os.makedirs(os.path.join(host.sys, 'class/graphics'))
    os.symlink(fb, os.path.join(host.sys, 'class/graphics/fb0'))
    # fbcon, the console's own class device, has no name: not a framebuffer (seen on 6.12)
    fbcon = os.path.join(host.sys, 'devices/virtual/graphics/fbcon')
    os.makedirs(fbcon)
    os.symlink(fbcon, os.path.join(host.sys, 'class/graphics/fbcon'))
    msg, dummy = refused(host, kernel, devices=[BOOT])  # and nothing written
    assert 'refusing to bind %s (no driver bound now)' % BOOT in msg
    assert ('it is the boot VGA device and the firmware framebuffer BOOTFB (80000000-802fffff in /proc/iomem) '
            'lives in its BAR 0') in msg
    assert 'framebuffers: fb0 (simpledrmdrmfb):' in msg
    r = bind(host, kernel, devices=[BOOT], force=True)
    assert r['devices'][0]['forced'] and kernel._driver_of(BOOT) == 'vfio-pci'


@pytest.mark.parametrize('boot_vga, iomem', [
    ('0\n', '80000000-802fffff : BOOTFB\n'),           # not the boot device
    ('1\n', '90000000-902fffff : efifb\n'),            # the framebuffer lives elsewhere
    ('1\n', '00000000-00000000 : BOOTFB\n'),           # /proc/iomem read without the right to see addresses
])
def test_boot_framebuffer_guard_needs_both_boot_vga_and_the_range(host, kernel, boot_vga, iomem):
    _write(os.path.join(host.dev_dir(BOOT), 'boot_vga'), boot_vga)
    resource(host, BOOT, [(0x80000000, 0x80ffffff)])
    _write(os.path.join(host.proc, 'iomem'), iomem)
    bind(host, kernel, devices=[BOOT])
    assert kernel._driver_of(BOOT) == 'vfio-pci'

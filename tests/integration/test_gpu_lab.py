# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GPU-in-use guard on a real kernel: the lab's ``lab_devices.gpu``, a QEMU bochs-display
(1234:1111, display class 0380) driven by the Debian kernel's bochs DRM driver (``bochs-drm``),
which gives it ``/dev/dri/card0``.

While a process holds that node open (as a compositor or a CUDA/ROCm job holds a host GPU's),
``vfio_bind`` refuses the device before any write, naming the node, the pid and the command;
once the holder is gone the device moves to vfio-pci, and ``state: host`` gives it back to
bochs-drm with its DRM node.  (The boot-VGA/firmware-framebuffer guard needs a firmware that
leaves a framebuffer: the lab boots without one, so that guard stays on fake trees.)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

import pytest

pytestmark = pytest.mark.lab

HOST_DRIVER = 'bochs-drm'
HOLDER_PID = '/run/hv-test-gpu-holder.pid'
JOURNAL = '/run/hypervisor-vfio/journal.json'


def drm_nodes(lab, addr):
    return sorted(lab.ssh('ls /sys/bus/pci/devices/%s/drm 2>/dev/null || true' % addr).split())


def test_gpu_with_its_drm_node_held_open_is_refused_then_bound_and_given_back(lab, clean):
    gpu = lab.devices.get('gpu')
    if not gpu:
        pytest.fail('the lab has no GPU (lab_devices.gpu): restart it with this lab/labctl (bochs-display)')
    assert lab.state(gpu) == (HOST_DRIVER, None), 'the GPU %s does not start on %s: %s' % (
        gpu, HOST_DRIVER, lab.state(gpu))
    cards = [n for n in drm_nodes(lab, gpu) if n.startswith('card')]
    assert cards, 'bochs-drm gave %s no DRM card node: %s' % (gpu, drm_nodes(lab, gpu))
    node = '/dev/dri/' + cards[0]
    timings = {}

    # A holder: a process with the card node open (fd 0), detached from the SSH session.
    pid = lab.ssh(
        'rm -f {pidf}; setsid -f sh -c \'echo $$ > {pidf}; exec sleep 900\' <{node} >/dev/null 2>&1; '
        'for i in $(seq 100); do [ -s {pidf} ] && ls -l /proc/$(cat {pidf})/fd 2>/dev/null | grep -qF {node} '
        '&& break; sleep 0.1; done; cat {pidf}'.format(pidf=HOLDER_PID, node=node)).strip()
    assert pid.isdigit(), pid
    try:
        assert node in lab.ssh('ls -l /proc/%s/fd' % pid), 'the holder %s does not hold %s' % (pid, node)
        t0 = time.monotonic()
        ok, res = lab.module('vfio_bind', {'devices': [gpu]})
        timings['refused_s'] = round(time.monotonic() - t0, 1)
        assert not ok, res
        msg = res.get('msg', '')
        assert 'GPU device node %s is open by pid %s (sleep)' % (node, pid) in msg, msg
        assert 'refusing to unbind %s from %s' % (gpu, HOST_DRIVER) in msg, msg
        # Nothing written: the device, its override and its DRM node as they were, no journal left.
        assert lab.state(gpu) == (HOST_DRIVER, None)
        assert cards[0] in drm_nodes(lab, gpu)
        assert lab.ssh('test -e %s && echo present || echo absent' % JOURNAL).strip() == 'absent'
    finally:
        lab.ssh('kill $(cat %s) 2>/dev/null; rm -f %s' % (HOLDER_PID, HOLDER_PID), check=False)
    lab.ssh('for i in $(seq 50); do kill -0 %s 2>/dev/null || exit 0; sleep 0.1; done; exit 1' % pid)

    # Holder gone: the GPU moves to vfio-pci, its DRM node disappears with bochs-drm.
    t0 = time.monotonic()
    ok, res = lab.module('vfio_bind', {'devices': [gpu]})
    timings['bound_s'] = round(time.monotonic() - t0, 1)
    assert ok and res['changed'], res
    assert lab.state(gpu) == ('vfio-pci', 'vfio-pci')
    assert not drm_nodes(lab, gpu)

    # And back to the host: bochs-drm again, with its card node.
    t0 = time.monotonic()
    ok, res = lab.module('vfio_bind', {'devices': [gpu], 'state': 'host'})
    timings['restored_s'] = round(time.monotonic() - t0, 1)
    assert ok and res['changed'], res
    assert lab.state(gpu) == (HOST_DRIVER, None)
    assert [n for n in drm_nodes(lab, gpu) if n.startswith('card')], drm_nodes(lab, gpu)
    print('gpu guard timings (s): %s' % timings)

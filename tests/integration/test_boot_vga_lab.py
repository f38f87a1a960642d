# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot-VGA guard on a real kernel: a host whose console runs on a firmware framebuffer in
a GPU's BAR (a GPU whose own driver is not loaded, the way a host meant for passthrough boots
before vfio-pci takes the card). lab/hostimage's systemd-boot guest with HOSTIMAGE_VGA=1: OVMF's
GOP drives QEMU's standard VGA, the kernel's EFI stub hands its framebuffer to efifb; bochs (the
card's DRM driver) is blacklisted on the loader entry for one boot, so efifb keeps it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


import pytest

from test_reboot_persistence import _flavour_wanted, _guest

pytestmark = [pytest.mark.lab, pytest.mark.reboot]

ENTRY = '/boot/efi/loader/entries/hostimage-$(uname -r).conf'


@pytest.fixture
def vga_guest():
    _flavour_wanted('sdboot')
    yield from _guest('sdboot', instance='itest-vga', HOSTIMAGE_VGA='1')


def _bind(g, **args):
    """vfio_bind on the guest; (ok, result), a refusal included."""
    res = g.module('hypervisor.vfio.vfio_bind', args, check=False)
    return not res.get('failed'), res


def _card(g, addr):
    """(boot_vga, PCI driver or None, driver_override, fb0's name or None, /proc/iomem lines in BAR 0)"""
    out = g.ssh('d=/sys/bus/pci/devices/%s; cat $d/boot_vga; drv=$(readlink $d/driver); echo "drv=${drv##*/}"; '
                'echo "ovr=$(cat $d/driver_override)"; echo "fb=$(cat /sys/class/graphics/fb0/name 2>/dev/null)"; '
                'grep -E "^ +[0-9a-f]+-[0-9a-f]+ : (BOOTFB|efifb|simple-framebuffer|simplefb|vesafb)$" /proc/iomem || true'
                % addr).splitlines()
    return (out[0].strip(), out[1][len('drv='):] or None, out[2][len('ovr='):], out[3][len('fb='):] or None,
            [line.strip() for line in out[4:]])


def test_boot_vga_under_efifb_is_refused_then_forced_then_given_back(vga_guest):
    g = vga_guest
    addr = g.devices['vga']
    # As Debian boots it: bochs-drm took the card over from the firmware framebuffer (no guard).
    assert _card(g, addr)[:3] == ('1', 'bochs-drm', '(null)')
    # One boot with the card's driver blacklisted: efifb keeps the console on it, as on a host
    # whose GPU driver is not loaded.
    g.ssh('sed -i "/^options/ s/$/ modprobe.blacklist=bochs/" %s' % ENTRY)
    g.reboot('reboot_bochs_blacklisted')
    boot_vga, drv, ovr, fb, ranges = _card(g, addr)
    assert (boot_vga, drv, ovr, fb) == ('1', None, '(null)', 'EFI VGA'), (boot_vga, drv, ovr, fb)
    assert len(ranges) == 1 and ranges[0].endswith(' : efifb'), ranges
    efifb = ranges[0].split(' : ')[0]

    # Refused before any write: the message names the device, the range, the BAR and fb0.
    ok, res = _bind(g, devices=[addr], state='vfio')
    assert not ok and 'vfio_bind refused before changing anything' in res['msg'], res
    assert ('devices[0] (%s): refusing to bind %s (no driver bound now): it is the boot VGA device and the firmware '
            'framebuffer efifb (%s in /proc/iomem) lives in its BAR 0; framebuffers: fb0 (EFI VGA): the host '
            'console runs on it' % (addr, addr, efifb)) in res['msg'], res['msg']
    assert 'Use force: true only if you are sure' in res['msg']
    assert _card(g, addr)[1:4] == (None, '(null)', 'EFI VGA'), 'the refusal wrote something'

    # force: bound; the kernel takes the console off the card (vfio-pci's vgaarb).
    ok, res = _bind(g, devices=[addr], state='vfio', force=True)
    assert ok and res['changed'] and res['devices'][0]['forced'], res
    assert _card(g, addr)[1] == 'vfio-pci'
    assert 'vfio-pci %s: vgaarb: deactivate vga console' % addr in g.ssh('dmesg')

    # Given back: the card is left as it was found, with no PCI driver. The firmware
    # framebuffer does not come back (vfio-pci removed efifb; only a reboot brings it back).
    ok, res = _bind(g, devices=[addr], state='host')
    assert ok and res['changed'] and res['devices'][0]['action'] == 'restore', res
    assert _card(g, addr)[1:4] == (None, '(null)', None)

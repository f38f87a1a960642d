# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot-time re-apply script (templates/reapply.sh.j2) on a fake sysfs tree.

A plain tree has no kernel behind it: unbind/drivers_probe are files that record what was
written, and no driver ever binds. That is enough to prove which writes the script makes,
that it leaves alone what it must, and that it gives a device back when the VFIO driver
does not take it. Run: python -m pytest roles/passthrough/tests
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess

import jinja2
import pytest

ROLE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDR = '0000:00:05.0'


def render(tmp_path):
    with open(os.path.join(ROLE, 'templates', 'reapply.sh.j2')) as f:
        text = jinja2.Template(f.read(), keep_trailing_newline=True).render(
            ansible_managed='test', passthrough_unit_name='hypervisor-vfio-reapply.service',
            passthrough_files={'reapply_config': '/nonexistent.conf'})
    script = tmp_path / 'reapply.sh'
    script.write_text(text)
    return script


@pytest.fixture
def tree(tmp_path):
    sys_ = tmp_path / 'sys'
    dev = sys_ / 'devices' / 'pci0000:00' / ADDR
    dev.mkdir(parents=True)
    for k, v in (('vendor', '0x8086'), ('device', '0x10d3'), ('driver_override', '(null)')):
        (dev / k).write_text(v + '\n')
    (sys_ / 'bus' / 'pci' / 'devices').mkdir(parents=True)
    (sys_ / 'bus' / 'pci' / 'devices' / ADDR).symlink_to(dev)
    (sys_ / 'bus' / 'pci' / 'drivers_probe').write_text('')
    for drv in ('e1000e', 'vfio-pci'):
        (sys_ / 'bus' / 'pci' / 'drivers' / drv).mkdir(parents=True)
    (sys_ / 'module').mkdir()
    # A modprobe that "loads" a module by creating /sys/module/<name>, as the kernel does.
    modprobe = tmp_path / 'modprobe'
    modprobe.write_text('#!/bin/sh\nmkdir -p "%s/module/$1"\n' % sys_)
    modprobe.chmod(0o755)
    return tmp_path, sys_, dev, modprobe


def bind(sys_, dev, driver):
    link = dev / 'driver'
    if os.path.lexists(str(link)):
        link.unlink()
    link.symlink_to(sys_ / 'bus' / 'pci' / 'drivers' / driver)


def run(tmp_path, sys_, modprobe, conf_lines):
    conf = tmp_path / 'passthrough.conf'
    conf.write_text('# test\n' + '\n'.join(conf_lines) + '\n')
    env = dict(os.environ, HYPERVISOR_VFIO_SYSFS=str(sys_), HYPERVISOR_VFIO_MODPROBE=str(modprobe))
    p = subprocess.run(['sh', str(render(tmp_path)), str(conf)], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, timeout=30, check=False)
    return p.returncode, p.stdout


LINE = 'device %s 8086 10d3 vfio-pci vfio_pci' % ADDR


def test_device_already_on_target_gets_only_its_override(tree):
    tmp, sys_, dev, modprobe = tree
    bind(sys_, dev, 'vfio-pci')
    rc, out = run(tmp, sys_, modprobe, [LINE])
    assert rc == 0, out
    assert (dev / 'driver_override').read_text() == 'vfio-pci\n'
    assert (sys_ / 'bus/pci/drivers_probe').read_text() == ''
    assert not (sys_ / 'module' / 'vfio_pci').exists()      # nothing loaded, nothing bounced


def test_device_taken_by_host_driver_is_moved_then_given_back_when_vfio_does_not_bind(tree):
    tmp, sys_, dev, modprobe = tree
    bind(sys_, dev, 'e1000e')
    rc, out = run(tmp, sys_, modprobe, [LINE])
    # The fake tree never binds: the script must notice and undo its override.
    assert rc == 1
    assert (sys_ / 'module' / 'vfio_pci').is_dir()
    assert (sys_ / 'bus/pci/drivers/e1000e/unbind').read_text() == ADDR + '\n'
    assert (sys_ / 'bus/pci/drivers_probe').read_text() == ADDR + '\n'
    assert (dev / 'driver_override').read_text() == '\n'
    assert 'did not take the device; giving it back' in out


def test_unloadable_module_leaves_the_device_alone(tree):
    tmp, sys_, dev, dummy = tree
    bind(sys_, dev, 'e1000e')
    rc, out = run(tmp, sys_, '/bin/false', [LINE])
    assert rc == 1 and 'is not loaded' in out
    assert (dev / 'driver_override').read_text() == '(null)\n'
    assert not (sys_ / 'bus/pci/drivers/e1000e/unbind').exists()


def test_other_hardware_at_the_address_is_left_alone(tree):
    tmp, sys_, dev, modprobe = tree
    bind(sys_, dev, 'e1000e')
    rc, out = run(tmp, sys_, modprobe, ['device %s 1af4 1041 virtio_vfio_pci virtio_vfio_pci' % ADDR])
    assert rc == 1 and 'hardware changed' in out
    assert (dev / 'driver_override').read_text() == '(null)\n'
    assert not (sys_ / 'module' / 'virtio_vfio_pci').exists()


def test_bad_names_are_refused(tree):
    tmp, sys_, dev, modprobe = tree
    bind(sys_, dev, 'e1000e')
    rc, out = run(tmp, sys_, modprobe, ['device %s 8086 10d3 ../../evil vfio_pci' % ADDR])
    assert rc == 1 and 'bad line' in out
    assert (dev / 'driver_override').read_text() == '(null)\n'


def test_sriov_vfs_are_recreated_with_autoprobe_off_first(tree):
    tmp, sys_, dev, modprobe = tree
    (dev / 'sriov_numvfs').write_text('0\n')
    (dev / 'sriov_drivers_autoprobe').write_text('1\n')
    bind(sys_, dev, 'e1000e')
    rc, out = run(tmp, sys_, modprobe, ['sriov %s 4 0' % ADDR])
    assert rc == 0, out
    assert (dev / 'sriov_drivers_autoprobe').read_text() == '0\n'
    assert (dev / 'sriov_numvfs').read_text() == '4\n'
    # Already right: nothing written again.
    (dev / 'sriov_numvfs').write_text('4\n')
    os.utime(str(dev / 'sriov_numvfs'), (0, 0))
    rc, out = run(tmp, sys_, modprobe, ['sriov %s 4 0' % ADDR])
    assert rc == 0 and os.stat(str(dev / 'sriov_numvfs')).st_mtime == 0


def test_missing_config_is_nothing_to_do(tree):
    tmp, sys_, dummy, modprobe = tree
    env = dict(os.environ, HYPERVISOR_VFIO_SYSFS=str(sys_), HYPERVISOR_VFIO_MODPROBE=str(modprobe))
    p = subprocess.run(['sh', str(render(tmp)), str(tmp / 'absent.conf')], env=env, stdout=subprocess.PIPE,
                       universal_newlines=True, check=False)
    assert p.returncode == 0 and 'nothing to re-apply' in p.stdout

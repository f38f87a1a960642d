# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_facts' devices option through the module (argument handling, result, failure)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hypervisor.vfio.plugins.modules import vfio_facts
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost
from ansible_collections.hypervisor.vfio.tests.unit.plugins.modules.module_runner import run_module


def make_host(tmp_path):
    h = FakeHost(tmp_path)
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True)
    h.add_module('virtio_pci', driver='virtio-pci', ids=[('1af4', '1041')], loaded=True)
    h.add_device('0000:00:02.0', '1af4', '1041', driver='virtio-pci')
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio-pci')
    h.add_device('0000:00:04.0', '8086', '10d3')
    return h


def args(h, **kw):
    return dict(sysfs_path=h.sys, procfs_path=h.proc, modules_dir=h.moddir, modprobe_config_dirs=[h.confdir], **kw)


def test_devices_selects_and_warns(tmp_path, capsys, monkeypatch):
    h = make_host(tmp_path)
    # module.warn() is recorded here: where ansible-core puts a warning depends on the process (in the
    # result, or on the controller's display once controller code was imported by another test)
    warned = []
    monkeypatch.setattr(vfio_facts.AnsibleModule, 'warn', lambda self, msg, *a, **kw: warned.append(msg))
    whole = run_module(vfio_facts, args(h), capsys)['ansible_facts']['vfio']
    out = run_module(vfio_facts, args(h, devices=['00:03.0', {'vendor': '8086', 'class': '0200'}, '0000:00:09.0']),
                     capsys, check_mode=True)
    vfio = out['ansible_facts']['vfio']
    assert not out['changed']
    assert vfio['devices'] == dict((a, whole['devices'][a]) for a in ('0000:00:03.0', '0000:00:04.0'))
    assert sorted(vfio['iommu_groups']) == sorted(str(whole['devices'][a]['iommu_group'])
                                                  for a in ('0000:00:03.0', '0000:00:04.0'))
    assert warned == ['devices[2] (0000:00:09.0) selects no device on this host']


def test_devices_refuses_acting_keys_before_reading(tmp_path, capsys):
    out = run_module(vfio_facts, args(make_host(tmp_path), devices=[{'address': '00:03.0', 'state': 'host'}]), capsys)
    assert out['failed'] and out['msg'].startswith('vfio_facts: devices[0]: state would change a device')

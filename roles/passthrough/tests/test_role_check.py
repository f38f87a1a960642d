# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role in check mode against fake sysfs trees (the unit tests' FakeHost).

Only check mode: the role's sysfs paths point at the fake tree, but a real run would modprobe
on this machine. The boot loader and persistence steps are off, so nothing outside the
test's temp folder is read for writing. Validation failures and the bind plan are checked.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest
import yaml

from ansible_collections.hypervisor.vfio.tests.playbook import run_playbook
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path / 'host')
    h.add_modules('vfio_pci', 'e1000e')
    h.add_module('virtio_pci', driver='virtio-pci', loaded=True)
    h.add_modules('virtio_vfio_pci', 'snd_hda_intel')
    h.add_device('0000:00:02.0', '8086', '10d3', driver='e1000e', net=['eth1'])
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio-pci', net=['eth2'])
    h.add_device('0000:01:00.0', '10de', '1eb8', cls='030000', group=20)
    h.add_device('0000:01:00.1', '10de', '10f0', cls='040300', driver='snd_hda_intel', group=20)
    return h


def run_role(tmp_path, h, devices, cli=(), **extra):
    vars_ = dict(passthrough_sysfs_path=h.sys, passthrough_procfs_path=h.proc,
                 passthrough_modules_dir=h.moddir, passthrough_modprobe_config_dirs=[h.confdir],
                 passthrough_rootfs_path=h.root, passthrough_iommu_cmdline=False, passthrough_persistent=False,
                 passthrough_devices=devices)
    vars_.update(extra)
    play = [{'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
             'vars': {'ansible_python_interpreter': '{{ ansible_playbook_python }}'},
             'roles': [{'role': 'hypervisor.vfio.passthrough'}],
             'post_tasks': [{'name': 'dump', 'ansible.builtin.copy': {
                 'content': '{{ passthrough_bound_devices | default([]) | to_json }}',
                 'dest': str(tmp_path / 'bound.json'), 'mode': '0644'}, 'check_mode': False}]}]
    pb = tmp_path / 'play.yml'
    pb.write_text(yaml.safe_dump(play))
    ev = tmp_path / 'vars.json'
    ev.write_text(json.dumps(vars_))
    rc, out = run_playbook(tmp_path, ['--check', '--diff'] + list(cli) + ['-e', '@%s' % ev, pb], timeout=300)
    bound = json.loads((tmp_path / 'bound.json').read_text()) if (tmp_path / 'bound.json').exists() else None
    return rc, out, bound


def test_check_mode_plans_the_bind_and_writes_nothing(tmp_path, host):
    before = dict((a, os.readlink(os.path.join(host.dev_dir(a), 'driver'))) for a in ('0000:00:02.0', '0000:00:03.0'))
    rc, out, bound = run_role(tmp_path, host, ['00:02.0', {'vendor': '1af4', 'device': '1041'}])
    assert rc == 0, out
    plan = dict((d['address'], (d['action'], d['module'], d['driver_after'])) for d in bound)
    assert plan == {'0000:00:02.0': ('rebind', 'vfio_pci', 'vfio-pci'),
                    '0000:00:03.0': ('rebind', 'virtio_vfio_pci', 'virtio_vfio_pci')}
    after = dict((a, os.readlink(os.path.join(host.dev_dir(a), 'driver'))) for a in before)
    assert before == after
    # the role's report: one line per device, "address: driver before -> driver now (action)"
    assert '"0000:00:02.0: e1000e -> ' in out and ' (rebind)"' in out, out
    for a in before:
        with open(os.path.join(host.dev_dir(a), 'driver_override')) as f:
            assert f.read() == '(null)\n'


@pytest.mark.parametrize('entry, message', [
    # the engine's own messages (vfio_bind in check mode validates the request, all problems at once)
    (60.0, "is the number 60.0, not a string: YAML 1.1 reads an unquoted 01:00.0 as a base-60 number"),
    ({'adress': '0000:00:02.0'}, 'devices[0] has unknown keys adress'),
    ({'address': '0000:00:02.0', 'state': 'gone'}, "devices[0]: state must be one of vfio, host, got 'gone'"),
    ({'state': 'vfio'}, 'devices[0] selects nothing'),
    ('0000:09:00.0', 'no device 0000:09:00.0 on this host'),
    # a VMD domain (5 digits) is an address like any other: refused only because this host has none
    ('10000:e0:00.0', 'no device 10000:e0:00.0 on this host'),
])
def test_bad_entries_fail_before_any_write(tmp_path, host, entry, message):
    rc, out, dummy = run_role(tmp_path, host, [entry])
    assert rc != 0 and message in out, out


def test_consumer_kubevirt_pins_vfio_pci_where_the_variant_search_picks_a_variant(tmp_path, host):
    # passthrough_consumer reaches vfio_bind's consumer: KubeVirt's device plugin only offers
    # devices bound to vfio-pci, so the virtio NIC gets vfio_pci instead of virtio_vfio_pci
    devices = ['00:02.0', {'vendor': '1af4', 'device': '1041'}]
    rc, out, bound = run_role(tmp_path, host, devices, passthrough_consumer='kubevirt')
    assert rc == 0, out
    plan = dict((d['address'], (d['module'], d['driver_after'])) for d in bound)
    assert plan == {'0000:00:02.0': ('vfio_pci', 'vfio-pci'), '0000:00:03.0': ('vfio_pci', 'vfio-pci')}
    # libvirt accepts any VFIO driver: the variant stays
    rc, out, bound = run_role(tmp_path, host, devices, passthrough_consumer='libvirt')
    assert rc == 0, out
    assert dict((d['address'], d['module']) for d in bound)['0000:00:03.0'] == 'virtio_vfio_pci'


def test_consumer_kubevirt_refuses_a_variant_pin(tmp_path, host):
    rc, out, dummy = run_role(tmp_path, host, [{'address': '0000:00:03.0', 'driver': 'virtio_vfio_pci'}],
                              passthrough_consumer='kubevirt')
    assert rc != 0, out
    assert 'devices[0] (0000:00:03.0) pins driver virtio_vfio_pci, which contradicts consumer=kubevirt' in out, out


def test_strict_group_policy_names_the_other_member(tmp_path, host):
    rc, out, dummy = run_role(tmp_path, host, ['0000:01:00.0'])
    assert rc != 0
    assert 'IOMMU group 20 of 0000:01:00.0 is not viable: 0000:01:00.1 (snd_hda_intel) stay on host drivers' in out
    assert 'ansible_facts' not in out       # the engine's message, not its whole answer


def test_whole_group_listed_passes(tmp_path, host):
    rc, out, bound = run_role(tmp_path, host, ['0000:01:00.0', '0000:01:00.1'])
    assert rc == 0, out
    assert sorted(d['address'] for d in bound) == ['0000:01:00.0', '0000:01:00.1']


def test_iommu_off_fails_with_the_arguments_to_add(tmp_path):
    h = FakeHost(tmp_path / 'noiommu')
    h.add_module('vfio_pci', driver='vfio-pci')
    h.add_device('0000:00:02.0', '8086', '10d3', group=None)
    rc, out, dummy = run_role(tmp_path, h, ['0000:00:02.0'])
    assert rc != 0
    assert 'the IOMMU is not enabled' in out and 'iommu=pt' in out
    # It names the boot loader that started the kernel and whether the role could set them there.
    assert "started by boot loader 'grub'" in out and 'GRUB without update-grub or grubby' in out


def test_restore_gives_everything_back_and_tolerates_absent_devices(tmp_path, host):
    rc, out, bound = run_role(tmp_path, host, ['00:02.0', '0000:09:00.0', {'vendor': '1af4', 'device': '1041'}],
                              passthrough_restore=True)
    assert rc == 0, out
    assert sorted((d['address'], d['state']) for d in bound) == [('0000:00:02.0', 'host'), ('0000:00:03.0', 'host')]

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The persistence templates rendered by Ansible from a vfio_bind result (render only: the
rendered text is written into the test's temp folder, nothing else on this machine)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import sys

import yaml

from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import parse_state

ROLE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BOUND = [
    {'address': '0000:00:05.0', 'state': 'vfio', 'action': 'rebind', 'module': 'vfio_pci',
     'driver_after': 'vfio-pci', 'vendor': '8086', 'device': '10d3'},
    {'address': '0000:00:04.0', 'state': 'vfio', 'action': 'none', 'module': 'virtio_vfio_pci',
     'driver_after': 'virtio_vfio_pci', 'vendor': '1af4', 'device': '1041'},
    {'address': '0000:00:06.0', 'state': 'host', 'action': 'restore', 'module': None,
     'driver_after': 'e1000e', 'vendor': '8086', 'device': '10d3'},
]
for _i, _row in enumerate(BOUND):
    _row['item'] = 'devices[%d] (%s)' % (_i, _row['address'])
# The request the rows come from: 0000:00:04.0 pinned its driver, 0000:00:05.0 did not.
REQUEST = ['0000:00:05.0', {'address': '0000:00:04.0', 'driver': 'virtio_vfio_pci', 'reset_method': ['flr'],
                            'd3cold_allowed': False},
           {'address': '0000:00:06.0', 'state': 'host'}]


def ansible_playbook():
    here = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    return here if os.path.exists(here) else shutil.which('ansible-playbook')


def render_all(tmp_path):
    with open(os.path.join(ROLE, 'vars', 'main.yml')) as f:
        role_vars = yaml.safe_load(f)
    out = tmp_path / 'out'
    out.mkdir()
    names = ['udev.rules.j2', 'modules-load.conf.j2', 'dracut.conf.j2', 'state.json.j2',
             'reapply.service.j2', 'vfio-passthrough.j2', 'grub-dropin.cfg.j2']
    play = [{
        'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
        'vars': dict(role_vars, passthrough_bound_devices=BOUND, passthrough_bind_items=REQUEST,
                     passthrough_iommu_group_policy='strict', passthrough_bind_timeout=10,
                     passthrough_boot_timeout=120,
                     passthrough_persist="{{ passthrough_bound_devices | selectattr('state', 'eq', 'vfio') | list }}",
                     passthrough_persist_modules="{{ passthrough_persist | map(attribute='module') | select | unique | sort }}",
                     passthrough_persist_sriov=[{'pf': '3b:00.0', 'numvfs': 4}],
                     passthrough_iommu_args=['intel_iommu=on', 'iommu=pt'],
                     ansible_facts={'vfio': {'devices': {}}}),
        'tasks': [{'name': 'render ' + n, 'ansible.builtin.copy': {
            'content': "{{ lookup('ansible.builtin.template', '%s/templates/%s') }}" % (ROLE, n),
            'dest': str(out / n[:-3]), 'mode': '0644'}} for n in names],
    }]
    pb = tmp_path / 'render.yml'
    pb.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_HOME=str(tmp_path / 'home'), ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
    p = subprocess.run([ansible_playbook(), str(pb)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout
    return dict((n[:-3], (out / n[:-3]).read_text()) for n in names)


def test_persistence_files(tmp_path):
    f = render_all(tmp_path)
    rules = [line for line in f['udev.rules'].splitlines() if line and not line.startswith('#')]
    assert rules == [
        'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:00:04.0", ATTR{vendor}=="0x1af4", ATTR{device}=="0x1041", '
        'ATTR{driver_override}="virtio_vfio_pci", RUN{builtin}+="kmod load virtio_vfio_pci"',
        'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:00:05.0", ATTR{vendor}=="0x8086", ATTR{device}=="0x10d3", '
        'ATTR{driver_override}="vfio-pci", RUN{builtin}+="kmod load vfio_pci"',
    ]
    assert [m for m in f['modules-load.conf'].splitlines() if m and not m.startswith('#')] == \
        ['vfio_pci', 'virtio_vfio_pci']
    assert 'force_drivers+=" vfio_pci virtio_vfio_pci "' in f['dracut.conf']
    assert 'install_items+=" /etc/udev/rules.d/40-hypervisor-vfio.rules "' in f['dracut.conf']
    state = json.loads(f['state.json'])
    assert state == {
        'format': 1, 'written_by': 'hypervisor.vfio.passthrough', 'iommu_group': 'strict', 'timeout': 10,
        'lock_timeout': 30,
        # a driver only where the request pinned one: the engine resolves the others at boot; the
        # reset and power settings an entry gives
        'devices': [{'address': '0000:00:04.0', 'vendor': '1af4', 'device': '1041', 'driver': 'virtio_vfio_pci',
                     'reset_method': ['flr'], 'd3cold_allowed': False},
                    {'address': '0000:00:05.0', 'vendor': '8086', 'device': '10d3', 'driver': None}],
        'sriov': [{'pf': '0000:3b:00.0', 'numvfs': 4, 'drivers_autoprobe': False}]}
    # ...and it is what the engine reads
    assert parse_state(state)['devices'][0]['driver'] == 'virtio_vfio_pci'
    assert parse_state(state)['devices'][0]['reset_method'] == ['flr']
    unit = f['reapply.service']
    assert 'ExecStart=/usr/local/sbin/vfio-passthrough apply --state /etc/hypervisor-vfio/state.json' in unit
    assert 'TimeoutStartSec=120' in unit and 'Before=network-pre.target' in unit and 'KillMode=process' in unit
    assert 'sys.path.insert(0, "/usr/local/lib/hypervisor-vfio")' in f['vfio-passthrough']
    assert 'exec /usr/bin/python3 -I -c ' in f['vfio-passthrough']
    assert 'GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} intel_iommu=on iommu=pt"' in f['grub-dropin.cfg']
    # The device given back to the host appears nowhere.
    assert not any('0000:00:06.0' in text for text in f.values())
    json.dumps(f)

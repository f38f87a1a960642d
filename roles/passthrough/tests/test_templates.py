# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The persistence files the engine makes from a vfio_bind result (module_utils/persist.py, what
hypervisor.vfio.vfio_persist writes for the role), the role's GRUB drop-in template and its final
check rendered by Ansible (render only: the rendered text is written into the test's temp folder,
nothing else on this machine)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import yaml

from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import parse_state
from ansible_collections.hypervisor.vfio.plugins.module_utils.persist import FILES, desired_files
from ansible_collections.hypervisor.vfio.plugins.module_utils.sriov import run_sriov
from ansible_collections.hypervisor.vfio.tests.playbook import run_playbook
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, FakeKernel, bind_on

ROLE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The request: 0000:00:04.0 pins its driver and gives reset and power settings, 0000:00:05.0
# does not, 0000:00:06.0 goes back to the host.
REQUEST = ['0000:00:05.0', {'address': '0000:00:04.0', 'driver': 'virtio_vfio_pci', 'reset_method': ['flr'],
                            'd3cold_allowed': False},
           {'address': '0000:00:06.0', 'state': 'host'}]


def engine_answers(tmp_path):
    """What the role's modules return for REQUEST on a fake host (the engine in check mode):
    vfio_bind's result and vfio_sriov's."""
    h = FakeHost(tmp_path / 'host')
    h.add_modules('vfio_pci', loaded=True)
    h.add_modules('virtio_vfio_pci', 'virtio_pci', 'e1000e')
    h.add_device('0000:00:04.0', '1af4', '1041', driver='virtio_vfio_pci', override='virtio_vfio_pci')
    with open(os.path.join(h.dev_dir('0000:00:04.0'), 'd3cold_allowed'), 'w') as f:
        f.write('1\n')     # a PCIe port's function: the kernel shows the attribute
    h.add_device('0000:00:05.0', '8086', '10d3', driver='e1000e')
    h.add_device('0000:00:06.0', '8086', '10d3', driver='vfio-pci', override='vfio-pci')
    h.add_device('0000:3b:00.0', '8086', '10c9', driver='igb', sriov_totalvfs=8)
    kernel = FakeKernel(h)
    bind = bind_on(h, kernel, check_mode=True, devices=REQUEST)
    sriov = run_sriov({'pfs': [{'pf': '3b:00.0', 'numvfs': 4}]}, kernel, check_mode=True)
    assert not kernel.log
    return bind, sriov


def render_all(tmp_path):
    """The engine's persistence files (by file name) for the role's default settings, and the
    GRUB drop-in rendered by Ansible."""
    bind, sriov = engine_answers(tmp_path)
    want = desired_files(bind['devices'], bind['desired']['devices'], sriov['desired']['sriov'],
                         {'initramfs': 'dracut'})
    by_path = dict((path, content) for path, (content, mode) in want['files'].items())
    names = {'udev.rules': FILES['udev_rule'], 'modules-load.conf': FILES['modules_load'],
             'dracut.conf': FILES['dracut_conf'], 'state.json': FILES['state'],
             'reapply.service': FILES['reapply_unit'], 'vfio-passthrough': FILES['engine_command'],
             'kernel-hook': FILES['kernel_hook_postinst']}
    out = dict((name, by_path[path]) for name, path in names.items())
    with open(os.path.join(ROLE, 'vars', 'main.yml')) as f:
        role_vars = yaml.safe_load(f)
    dest = tmp_path / 'out'
    dest.mkdir()
    play = [{
        'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
        'vars': dict(role_vars, passthrough_iommu_vendor='auto', passthrough_iommu_pt=True,
                     passthrough_kernel_args_extra=[],
                     ansible_facts={'vfio': {'devices': {}, 'iommu': {'enable_args': ['intel_iommu=on']}}}),
        'tasks': [{'name': 'render the GRUB drop-in', 'ansible.builtin.template': {
            'src': '%s/templates/grub-dropin.cfg.j2' % ROLE, 'dest': str(dest / 'grub-dropin.cfg'), 'mode': '0644'}}],
    }]
    run_play(tmp_path / 'render.yml', play)
    out['grub-dropin.cfg'] = (dest / 'grub-dropin.cfg').read_text()
    return out


def run_play(pb, play):
    """Run a local play written to pb (its folder holds Ansible's home); it must succeed."""
    pb.write_text(yaml.safe_dump(play))
    rc, output = run_playbook(pb.parent, [pb], timeout=300)
    assert rc == 0, output


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
    # the state file adds no rule of its own: the lists are the engine's answers as they are
    bind, sriov = engine_answers(tmp_path / 'again')
    assert (state['devices'], state['sriov']) == (bind['desired']['devices'], sriov['desired']['sriov'])
    # ...and it is what the engine reads
    assert parse_state(state)['devices'][0]['driver'] == 'virtio_vfio_pci'
    assert parse_state(state)['devices'][0]['reset_method'] == ['flr']
    unit = f['reapply.service']
    assert 'ExecStart=/usr/local/sbin/vfio-passthrough apply --state /etc/hypervisor-vfio/state.json' in unit
    assert 'TimeoutStartSec=120' in unit and 'Before=network-pre.target' in unit and 'KillMode=process' in unit
    assert 'sys.path.insert(0, "/usr/local/lib/hypervisor-vfio/engine.zip")' in f['vfio-passthrough']
    assert 'exec /usr/bin/python3 -I -c ' in f['vfio-passthrough']
    assert 'GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} intel_iommu=on iommu=pt"' in f['grub-dropin.cfg']
    # The device given back to the host appears nowhere.
    assert not any('0000:00:06.0' in text for text in f.values())
    json.dumps(f)


def render_misplaced(tmp_path, bind, facts):
    """The role's final check (__passthrough_misplaced, vars/main.yml) rendered by Ansible for a
    vfio_bind result and the facts it returned."""
    with open(os.path.join(ROLE, 'vars', 'main.yml')) as f:
        role_vars = yaml.safe_load(f)
    tmp_path.mkdir()
    out = tmp_path / 'misplaced.txt'
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': dict(role_vars, __passthrough_bind=bind, ansible_facts=facts),
             'tasks': [{'name': 'render', 'ansible.builtin.copy': {
                 'content': '{{ __passthrough_misplaced | trim }}', 'dest': str(out), 'mode': '0644'}}]}]
    run_play(tmp_path / 'misplaced.yml', play)
    return out.read_text()


def test_final_check_names_every_misplaced_device_and_only_those(tmp_path):
    # vfio_bind run for real on the fake kernel, with the facts it read after the call
    h = FakeHost(tmp_path / 'host')
    h.add_module('vfio_pci', driver='vfio-pci')
    h.add_module('e1000e', ids=[('8086', '10d3')], loaded=True)
    for addr in ('0000:00:04.0', '0000:00:05.0'):
        h.add_device(addr, '8086', '10d3', driver='e1000e')
    h.add_device('0000:00:06.0', '8086', '10d3', driver='vfio-pci', override='vfio-pci')
    bind = bind_on(h, FakeKernel(h), devices=['0000:00:04.0', '0000:00:05.0',
                                              {'address': '0000:00:06.0', 'state': 'host'}], return_facts=True)
    facts = bind.pop('ansible_facts')
    assert render_misplaced(tmp_path / 'ok', bind, facts) == ''
    # the kernel shows 0000:00:05.0 back on e1000e and 0000:00:06.0 still on VFIO
    facts['vfio']['devices']['0000:00:05.0'].update(driver='e1000e')
    facts['vfio']['devices']['0000:00:06.0'].update(driver='vfio-pci', vfio_bound=True)
    text = render_misplaced(tmp_path / 'bad', bind, facts)
    assert '0000:00:05.0 should be on vfio-pci but is on e1000e (vfio_bind said rebind' in text
    assert '0000:00:06.0 should be on a host driver but is on vfio-pci (vfio_bind said restore' in text
    assert '0000:00:04.0' not in text

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The README's module_defaults example: the action group group/hypervisor.vfio.vfio sets the
path options of both modules (vfio_facts reads the fake tree, vfio_bind plans on it)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.hypervisor.vfio.tests.playbook import run_local_play
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost

PLAY = '''
- hosts: localhost
  connection: local
  gather_facts: false
  module_defaults:
    group/hypervisor.vfio.vfio: %s
  tasks:
    - name: Read the facts
      hypervisor.vfio.vfio_facts:

    - name: Plan a bind
      hypervisor.vfio.vfio_bind:
        devices: ["0000:00:11.0"]
      check_mode: true
      register: plan

    - name: Write what both saw
      ansible.builtin.copy:
        content: "{{ {'module': ansible_facts.vfio.devices['0000:00:11.0'].vfio_module,
                      'planned': plan.devices[0].module} | to_json }}"
        dest: %s
        mode: "0644"
'''


def test_module_defaults_action_group(tmp_path):
    h = FakeHost(tmp_path / 'host')
    h.add_modules('vfio_pci', 'virtio_vfio_pci')
    h.add_device('0000:00:11.0', '1af4', '1041', driver='virtio-pci')
    seen = run_local_play(tmp_path, PLAY, h, tmp_path / 'seen.json')
    assert json.loads(seen) == {'module': 'virtio_vfio_pci', 'planned': 'virtio_vfio_pci'}

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_facts as a gather_facts module (facts_modules = smart, hypervisor.vfio.vfio_facts)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.hypervisor.vfio.tests.playbook import run_local_play
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost

PLAY = '''
- hosts: localhost
  connection: local
  gather_facts: true
  module_defaults:
    hypervisor.vfio.vfio_facts: %s
  tasks:
    - name: Write the gathered VFIO facts
      ansible.builtin.copy:
        content: "{{ ansible_facts.vfio | to_json }}"
        dest: %s
        mode: "0644"
'''


def test_vfio_facts_in_gather_facts(tmp_path):
    h = FakeHost(tmp_path / 'host')
    h.add_modules('virtio_vfio_pci')
    h.add_device('0000:00:11.0', '1af4', '1041', driver='virtio-pci')
    out = tmp_path / 'facts.json'
    # setup's own hardware probes (not ours) exceed the default 10 s on a loaded 2-core machine
    facts = json.loads(run_local_play(tmp_path, PLAY, h, out, ANSIBLE_FACTS_MODULES='smart,hypervisor.vfio.vfio_facts',
                                      ANSIBLE_GATHER_TIMEOUT='120'))
    assert facts['devices']['0000:00:11.0']['vfio_module'] == 'virtio_vfio_pci'
    assert facts['kernel_release'] == h.release

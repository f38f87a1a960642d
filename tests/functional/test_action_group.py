# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The README's module_defaults example: the action group group/hypervisor.vfio.vfio sets the
path options of both modules (vfio_facts reads the fake tree, vfio_bind plans on it)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import ansible_collections.hypervisor.vfio as collection
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
    h.add_module('vfio_pci', driver='vfio-pci')
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True)
    h.add_device('0000:00:11.0', '1af4', '1041', driver='virtio-pci')
    args = dict(sysfs_path=h.sys, procfs_path=h.proc, modules_dir=h.moddir, modprobe_config_dirs=[h.confdir])
    out = tmp_path / 'seen.json'
    play = tmp_path / 'play.yml'
    play.write_text(PLAY % (json.dumps(args), out))
    collections = os.path.dirname(os.path.dirname(os.path.dirname(list(collection.__path__)[0])))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_HOME=str(tmp_path / 'ansible-home'),
               ANSIBLE_LOCALHOST_WARNING='False', ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    p = subprocess.run([playbook if os.path.exists(playbook) else 'ansible-playbook', '-i', 'localhost,', str(play)],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(out.read_text()) == {'module': 'virtio_vfio_pci', 'planned': 'virtio_vfio_pci'}

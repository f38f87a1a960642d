# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_facts as a gather_facts module (facts_modules = smart, hypervisor.vfio.vfio_facts)."""

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
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True)
    h.add_device('0000:00:11.0', '1af4', '1041', driver='virtio-pci')
    args = dict(sysfs_path=h.sys, procfs_path=h.proc, modules_dir=h.moddir, modprobe_config_dirs=[h.confdir])
    out = tmp_path / 'facts.json'
    play = tmp_path / 'play.yml'
    play.write_text(PLAY % (json.dumps(args), out))
    collections = os.path.dirname(os.path.dirname(os.path.dirname(list(collection.__path__)[0])))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_FACTS_MODULES='smart,hypervisor.vfio.vfio_facts',
               ANSIBLE_HOME=str(tmp_path / 'ansible-home'), ANSIBLE_LOCALHOST_WARNING='False',
               ANSIBLE_PYTHON_INTERPRETER=sys.executable,
               # setup's own hardware probes (not ours) exceed the default 10 s on a loaded 2-core machine
               ANSIBLE_GATHER_TIMEOUT='120')
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    p = subprocess.run([playbook if os.path.exists(playbook) else 'ansible-playbook', '-i', 'localhost,', str(play)],
                       env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    facts = json.loads(out.read_text())
    assert facts['devices']['0000:00:11.0']['vfio_module'] == 'virtio_vfio_pci'
    assert facts['kernel_release'] == h.release

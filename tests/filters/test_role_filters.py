# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role's and the report's filters: restore_request and fleet_report."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hypervisor.vfio.plugins.filter.fleet import fleet_report
from ansible_collections.hypervisor.vfio.plugins.filter.restore import restore_request

FACTS = {'devices': {'0000:01:00.0': {'driver': 'vfio-pci', 'vfio_bound': True, 'iommu_group': 5},
                     '0000:01:00.1': {'driver': 'snd_hda_intel', 'vfio_bound': False, 'iommu_group': 5},
                     '0000:02:00.0': {'driver': 'e1000e', 'vfio_bound': False, 'iommu_group': 6}},
         # blockers are the engine's (devices.py): the filter has no driver list of its own
         'iommu_groups': {'5': {'devices': ['0000:01:00.0', '0000:01:00.1'], 'viable': False,
                                'blockers': ['0000:01:00.1']},
                          '6': {'devices': ['0000:02:00.0'], 'viable': False, 'blockers': ['0000:02:00.0']}},
         'iommu': {'enabled': True}, 'warnings': []}


def test_restore_request_gives_back_what_the_host_has():
    previous = {'devices': [{'address': '0000:02:00.0'}, {'address': '0000:09:00.0'}]}
    got = restore_request(['01:00.0', '0000:01:00.0', '0000:07:00.0', {'vendor': '10de', 'state': 'vfio'}, 60.0],
                          FACTS, previous)
    assert got == [{'vendor': '10de', 'state': 'host', 'optional': True},
                   '0000:01:00.0',      # the short form is the same device, listed once
                   60.0,                # not an address: vfio_bind names what is wrong with it
                   '0000:02:00.0']      # persisted earlier; 0000:07:00.0 and 0000:09:00.0 are absent


def test_fleet_report_takes_viability_and_blockers_from_the_facts():
    hostvars = {'hv1': {'ansible_facts': {'vfio': FACTS}}, 'down': {}}
    data = fleet_report(['hv1', 'down'], hostvars, title='T', generated='now')
    s = data['summary']
    # group 6 holds no VFIO device: not listed; group 5 names the engine's blocker with its driver
    assert s['nonviable_groups'] == [{'host': 'hv1', 'group': '5', 'members': ['0000:01:00.0', '0000:01:00.1'],
                                      'blockers': ['0000:01:00.1 on snd_hda_intel']}]
    assert (s['hosts'], s['hosts_ready'], s['devices_bound'], s['hosts_without_facts']) == (2, 1, 1, ['down'])
    assert [h['name'] for h in data['hosts']] == ['down', 'hv1']

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The consumer filters on facts read by vfio_facts' collector from a fake host, checked against
each consumer's documented format:

- KubeVirt: KubeVirt CR spec.configuration.permittedHostDevices.pciHostDevices, items
  {pciVendorSelector: "VVVV:DDDD", resourceName: "<domain>/<name>", externalResourceProvider}
  (KubeVirt user guide, Host Devices Assignment; API type v1.PciHostDevice); the device plugin
  lower-cases the selector and only offers devices bound to vfio-pci.
- Nova: nova.conf [pci] device_spec (JSON, tags address/vendor_id/product_id, managed yes|no)
  and alias (JSON, name/vendor_id/product_id/device_type type-PCI|type-PF|type-VF, numa_policy).
- libvirt: formatdomain "Host device assignment", <hostdev mode='subsystem' type='pci'
  managed='no'><source><address domain='0x....' bus='0x..' slot='0x..' function='0x.'/>.
- Proxmox VE: /cluster/mapping/pci (PVE::Mapping::PCI): id (pve-configid), map = property
  strings node=,path=,id=VVVV:DDDD,subsystem-id=VVVV:DDDD,iommugroup=N with the patterns of
  its $map_fmt, and subsystem-id/iommugroup present exactly when the device has them
  (assert_valid).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re
import xml.etree.ElementTree as ET

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.hypervisor.vfio.plugins.filter.consumers import FilterModule
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost

F = FilterModule().filters()
GPU, AUDIO, VIRTIO, PF, VF, BRIDGE, HOSTNIC = (
    '0000:3b:00.0', '0000:3b:00.1', '0000:00:03.0', '0000:5e:00.0', '0000:5e:00.2', '0000:00:01.0', '0000:00:02.0')


@pytest.fixture
def facts(tmp_path):
    h = FakeHost(tmp_path)
    h.add_modules('vfio_pci', 'virtio_vfio_pci', 'virtio_pci', loaded=True)
    h.add_device(BRIDGE, '8086', '1901', cls='060400', driver='pcieport')
    h.add_device(HOSTNIC, '1af4', '1041', driver='virtio-pci', net=['eth0'])
    h.add_device(GPU, '10de', '1eb8', cls='030200', subvendor='10de', subdevice='12a2', driver='vfio-pci',
                 override='vfio-pci', group=20)
    h.add_device(AUDIO, '10de', '10fa', cls='040300', subvendor='10de', subdevice='12a2', driver='vfio-pci',
                 override='vfio-pci', group=20)
    h.add_device(VIRTIO, '1af4', '1041', driver='virtio_vfio_pci', override='virtio_vfio_pci')
    h.add_device(PF, '15b3', '101d', sriov_totalvfs=8, driver='vfio-pci', override='vfio-pci', group=30)
    h.add_device(VF, '15b3', '101e', physfn=PF, driver='vfio-pci', override='vfio-pci', group=31)
    p = h.params()
    return collect_facts(HostContext(p))


def test_facts_fixture_is_what_vfio_facts_returns(facts):
    d = facts['devices']
    assert [a for a in sorted(d) if d[a]['vfio_bound']] == [VIRTIO, GPU, AUDIO, PF, VF]
    assert (d[GPU]['vendor'], d[GPU]['device'], d[GPU]['subsystem_vendor'], d[GPU]['subsystem_device']) == \
        ('10de', '1eb8', '10de', '12a2')


# ---------------------------------------------------------------- KubeVirt
def test_kubevirt_permitted_host_devices(facts):
    out = F['kubevirt_host_devices'](facts, devices=[GPU, AUDIO, PF, VF],
                                     resource_names={'10de:1eb8': 'nvidia.com/TU104GL_Tesla_T4'})
    assert out == {'pciHostDevices': [
        {'pciVendorSelector': '10DE:10FA', 'resourceName': 'hypervisor.vfio/pci-10de-10fa'},
        {'pciVendorSelector': '10DE:1EB8', 'resourceName': 'nvidia.com/TU104GL_Tesla_T4'},
        {'pciVendorSelector': '15B3:101D', 'resourceName': 'hypervisor.vfio/pci-15b3-101d'},
        {'pciVendorSelector': '15B3:101E', 'resourceName': 'hypervisor.vfio/pci-15b3-101e'},
    ]}
    for entry in out['pciHostDevices']:
        assert re.match(r'^[0-9A-F]{4}:[0-9A-F]{4}$', entry['pciVendorSelector'])
        domain, name = entry['resourceName'].split('/')
        assert re.match(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$', domain)
        assert re.match(r'^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$', name) and len(name) <= 63


def test_kubevirt_one_entry_per_vendor_device_and_external_provider(facts):
    out = F['kubevirt_host_devices'](facts, devices=[GPU, GPU], external_resource_provider=True)
    assert out == {'pciHostDevices': [{'pciVendorSelector': '10DE:1EB8', 'resourceName': 'hypervisor.vfio/pci-10de-1eb8',
                                       'externalResourceProvider': True}]}


def test_kubevirt_refuses_a_device_on_a_variant_driver(facts):
    # by default every device on a VFIO driver: the virtio device sits on virtio_vfio_pci
    with pytest.raises(AnsibleFilterError) as e:
        F['kubevirt_host_devices'](facts)
    assert '0000:00:03.0 is bound to virtio_vfio_pci' in str(e.value) and 'consumer: kubevirt' in str(e.value)


@pytest.mark.parametrize('kwargs, message', [
    (dict(devices=[HOSTNIC]), '0000:00:02.0 is on driver virtio-pci, not on a VFIO driver'),
    (dict(devices=['0000:99:00.0']), 'device 0000:99:00.0 is not in the facts'),
    (dict(devices=GPU), 'devices must be a list'),
    (dict(devices=[GPU], resource_names={'10de:1eb8': 'no slash'}), 'is not a valid resourceName'),
])
def test_kubevirt_bad_input(facts, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=re.escape(message)):
        F['kubevirt_host_devices'](facts, **kwargs)


def test_input_must_be_vfio_facts():
    with pytest.raises(AnsibleFilterError, match='the input must be ansible_facts.vfio'):
        F['libvirt_hostdev']({'ansible_facts': {}})


def test_accepts_the_dict_holding_vfio(facts):
    assert F['libvirt_hostdev']({'vfio': facts}, devices=[GPU]) == F['libvirt_hostdev'](facts, devices=[GPU])


# ---------------------------------------------------------------- Nova
def test_nova_device_spec_and_alias(facts):
    out = F['nova_pci'](facts, devices=[GPU, PF, VF, VIRTIO], alias_names={'10de:1eb8': 't4'})
    assert out['device_spec'] == [
        {'address': VIRTIO, 'vendor_id': '1af4', 'product_id': '1041', 'managed': 'no'},
        {'address': GPU, 'vendor_id': '10de', 'product_id': '1eb8', 'managed': 'no'},
        {'address': PF, 'vendor_id': '15b3', 'product_id': '101d', 'managed': 'no'},
        {'address': VF, 'vendor_id': '15b3', 'product_id': '101e', 'managed': 'no'},
    ]
    assert out['alias'] == [
        {'name': 't4', 'vendor_id': '10de', 'product_id': '1eb8', 'device_type': 'type-PCI'},
        {'name': 'pci-15b3-101d', 'vendor_id': '15b3', 'product_id': '101d', 'device_type': 'type-PF'},
        {'name': 'pci-15b3-101e', 'vendor_id': '15b3', 'product_id': '101e', 'device_type': 'type-VF'},
        {'name': 'pci-1af4-1041', 'vendor_id': '1af4', 'product_id': '1041', 'device_type': 'type-PCI'},
    ]
    # each entry is one JSON value of a multi-valued nova.conf option, tags as strings
    for entry in out['device_spec'] + out['alias']:
        assert all(isinstance(v, str) for v in json.loads(json.dumps(entry)).values())


def test_nova_managed_omitted_and_numa_policy(facts):
    out = F['nova_pci'](facts, devices=[GPU], managed=None, numa_policy='preferred')
    assert out['device_spec'] == [{'address': GPU, 'vendor_id': '10de', 'product_id': '1eb8'}]
    assert out['alias'][0]['numa_policy'] == 'preferred'
    with pytest.raises(AnsibleFilterError, match='numa_policy must be'):
        F['nova_pci'](facts, numa_policy='sometimes')
    with pytest.raises(AnsibleFilterError, match='managed must be'):
        F['nova_pci'](facts, managed=False)


# ---------------------------------------------------------------- libvirt
def test_libvirt_hostdev_xml(facts):
    out = F['libvirt_hostdev'](facts, devices=[GPU, VIRTIO])
    assert sorted(out) == [VIRTIO, GPU]
    el = ET.fromstring(out[GPU])
    assert el.tag == 'hostdev' and el.attrib == {'mode': 'subsystem', 'type': 'pci', 'managed': 'no'}
    (source,) = list(el)
    (address,) = list(source)
    assert source.tag == 'source' and address.tag == 'address'
    assert address.attrib == {'domain': '0x0000', 'bus': '0x3b', 'slot': '0x00', 'function': '0x0'}
    assert ET.fromstring(out[VIRTIO]).find('source/address').attrib['slot'] == '0x03'
    assert "managed='yes'" in F['libvirt_hostdev'](facts, devices=[GPU], managed='yes')[GPU]


# ---------------------------------------------------------------- Proxmox VE
PVE_PCI_RE = r'[a-f0-9]{4,}:[a-f0-9]{2}:[a-f0-9]{2}(?:\.[a-f0-9])?'
PVE_MAP_FMT = {
    'node': r'^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$',
    'id': r'^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}$',
    'subsystem-id': r'^[0-9A-Fa-f]{4}:[0-9A-Fa-f]{4}$',
    'path': r'^(?:%s;)*%s$' % (PVE_PCI_RE, PVE_PCI_RE),
    'iommugroup': r'^\d+$',
}


def parse_property_string(text):
    """PVE::JSONSchema::parse_property_string for the map format: key=value pairs, known keys only."""
    out = {}
    for part in text.split(','):
        key, value = part.split('=', 1)
        assert key in PVE_MAP_FMT and key not in out, key
        assert re.match(PVE_MAP_FMT[key], value), (key, value)
        out[key] = value
    return out


def test_proxmox_pci_mapping(facts):
    out = F['proxmox_pci_mapping'](facts, 'pve1', devices=[GPU, AUDIO, PF], mapping_ids={'10de:1eb8': 'tesla-t4'},
                                   description='from hypervisor.vfio')
    assert out == [
        {'id': 'pci-10de-10fa', 'description': 'from hypervisor.vfio',
         'map': ['node=pve1,path=0000:3b:00.1,id=10de:10fa,subsystem-id=10de:12a2,iommugroup=20']},
        {'id': 'tesla-t4', 'description': 'from hypervisor.vfio',
         'map': ['node=pve1,path=0000:3b:00.0,id=10de:1eb8,subsystem-id=10de:12a2,iommugroup=20']},
        {'id': 'pci-15b3-101d', 'description': 'from hypervisor.vfio',
         'map': ['node=pve1,path=0000:5e:00.0,id=15b3:101d,subsystem-id=15b3:0000,iommugroup=30']},
    ]
    for mapping in out:
        assert re.match(r'^[a-z][a-z0-9_-]+$', mapping['id'], re.IGNORECASE)  # pve-configid
        for entry in mapping['map']:
            parsed = parse_property_string(entry)
            # assert_valid: what the node reads from sysfs must be configured, and equal
            rec = facts['devices'][parsed['path']]
            assert parsed['id'] == '%s:%s' % (rec['vendor'], rec['device'])
            assert parsed['subsystem-id'] == '%s:%s' % (rec['subsystem_vendor'], rec['subsystem_device'])
            assert int(parsed['iommugroup']) == rec['iommu_group']


def test_proxmox_groups_same_model_devices_of_a_node(tmp_path):
    h = FakeHost(tmp_path)
    h.add_module('vfio_pci', driver='vfio-pci', loaded=True)
    h.add_device('0000:01:00.0', '10de', '1eb8', cls='030200', driver='vfio-pci')
    h.add_device('0000:02:00.0', '10de', '1eb8', cls='030200', driver='vfio-pci')
    out = F['proxmox_pci_mapping'](collect_facts(HostContext(h.params())), 'pve2')
    assert [m['id'] for m in out] == ['pci-10de-1eb8']
    assert [parse_property_string(e)['path'] for e in out[0]['map']] == ['0000:01:00.0', '0000:02:00.0']


@pytest.mark.parametrize('kwargs, message', [
    (dict(node='pve 1'), 'node must be the Proxmox VE node name'),
    (dict(node='pve1', devices=[GPU], mapping_ids={'10de:1eb8': '1gpu'}), 'is not a valid mapping id'),
    (dict(node='pve1'), '0000:00:03.0 is bound to virtio_vfio_pci'),
])
def test_proxmox_bad_input(facts, kwargs, message):
    with pytest.raises(AnsibleFilterError, match=re.escape(message)):
        F['proxmox_pci_mapping'](facts, **kwargs)

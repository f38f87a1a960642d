# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/export.yml (hypervisor.vfio.export) on the fake fleet: the files each consumer
needs, per host, in the directory ansible-playbook runs in."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import xml.etree.ElementTree as ET

import yaml

from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost
from fleet import make_fleet

HV1_BOUND = ['0000:00:02.0', '0000:01:00.0', '0000:3b:10.0']


def test_export_writes_every_consumer_per_host_in_the_working_directory(tmp_path, run_playbook):
    inventory = make_fleet(tmp_path / 'fleet')
    extra = {'export_hosts': 'hv1:hv2', 'export_nova_alias_names': {'10de:1eb8': 't4'}}
    proc = run_playbook('hypervisor.vfio.export', inventory, extra)
    hv1 = tmp_path / 'hv1'
    assert sorted(p.name for p in hv1.iterdir()) == [
        'kubevirt-permitted-host-devices.yml', 'libvirt-hostdev.xml', 'nova-pci.conf', 'proxmox-pci-mapping.json']

    kubevirt = yaml.safe_load((hv1 / 'kubevirt-permitted-host-devices.yml').read_text())
    assert kubevirt == {'permittedHostDevices': {'pciHostDevices': [
        {'pciVendorSelector': '10DE:1EB8', 'resourceName': 'hypervisor.vfio/pci-10de-1eb8'},
        {'pciVendorSelector': '8086:10D3', 'resourceName': 'hypervisor.vfio/pci-8086-10d3'},
        {'pciVendorSelector': '8086:10ED', 'resourceName': 'hypervisor.vfio/pci-8086-10ed'}]}}

    nova = (hv1 / 'nova-pci.conf').read_text().splitlines()
    assert nova[1] == '[pci]'
    specs = [json.loads(line.split(' = ', 1)[1]) for line in nova if line.startswith('device_spec = ')]
    aliases = [json.loads(line.split(' = ', 1)[1]) for line in nova if line.startswith('alias = ')]
    assert [s['address'] for s in specs] == HV1_BOUND and all(s['managed'] == 'no' for s in specs)
    assert {a['name']: a['device_type'] for a in aliases} == {
        't4': 'type-PCI', 'pci-8086-10d3': 'type-PCI', 'pci-8086-10ed': 'type-VF'}

    xml = (hv1 / 'libvirt-hostdev.xml').read_text()
    root = ET.fromstring('<devices>%s</devices>' % xml)
    hostdevs = root.findall('hostdev')
    assert [h.get('managed') for h in hostdevs] == ['no'] * 3
    assert [h.find('source/address').get('bus') for h in hostdevs] == ['0x00', '0x01', '0x3b']

    proxmox = json.loads((hv1 / 'proxmox-pci-mapping.json').read_text())
    assert [m['id'] for m in proxmox] == ['pci-10de-1eb8', 'pci-8086-10d3', 'pci-8086-10ed']
    assert proxmox[0]['map'] == ['node=hv1,path=0000:01:00.0,id=10de:1eb8,subsystem-id=10de:0000,iommugroup=20']

    # hv2 has nothing on a VFIO driver: valid, empty configurations
    hv2 = tmp_path / 'hv2'
    assert yaml.safe_load((hv2 / 'kubevirt-permitted-host-devices.yml').read_text()) == {
        'permittedHostDevices': {'pciHostDevices': []}}
    assert json.loads((hv2 / 'proxmox-pci-mapping.json').read_text()) == []
    assert '%s: kubevirt, libvirt, nova, proxmox for 3 device(s) on VFIO drivers' % hv1 in proc.stdout


def test_export_one_consumer_and_named_devices(tmp_path, run_playbook):
    inventory = make_fleet(tmp_path / 'fleet')
    run_playbook('playbooks/export.yml', inventory, {'export_hosts': 'hv1', 'export_dir': 'out',
                                                     'export_consumers': ['libvirt'],
                                                     'export_devices': ['0000:01:00.0']})
    assert [p.name for p in (tmp_path / 'out' / 'hv1').iterdir()] == ['libvirt-hostdev.xml']
    xml = (tmp_path / 'out' / 'hv1' / 'libvirt-hostdev.xml').read_text()
    assert xml.count('<hostdev ') == 1 and "bus='0x01'" in xml


def test_export_refuses_a_device_not_on_vfio(tmp_path, run_playbook):
    inventory = make_fleet(tmp_path / 'fleet')
    proc = run_playbook('playbooks/export.yml', inventory, {'export_hosts': 'hv1', 'export_consumers': ['nova'],
                                                            'export_devices': ['0000:00:03.0']}, check=False)
    assert proc.returncode != 0
    assert '0000:00:03.0 is on driver virtio-pci, not on a VFIO driver' in proc.stdout


def test_export_leaves_variant_bound_devices_out_of_kubevirt_and_proxmox(tmp_path, run_playbook):
    """A device on a VFIO variant driver: in the libvirt file, left out of KubeVirt's and Proxmox
    VE's (they need vfio-pci) and named in the summary with the fix."""
    h = FakeHost(tmp_path / 'hv')
    h.add_module('vfio_pci', driver='vfio-pci', loaded=True)
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True, loaded=True)
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio_vfio_pci', override='virtio_vfio_pci')
    h.add_device('0000:00:04.0', '8086', '10d3', driver='vfio-pci', override='vfio-pci')
    inventory = os.path.join(str(tmp_path), 'inventory.yml')
    with open(inventory, 'w') as f:
        yaml.safe_dump({'all': {'children': {'hypervisors': {'hosts': {'hv5': {
            'ansible_connection': 'local', 'ansible_python_interpreter': '{{ ansible_playbook_python }}',
            'passthrough_sysfs_path': h.sys, 'passthrough_procfs_path': h.proc,
            'passthrough_modules_dir': h.moddir, 'passthrough_modprobe_config_dirs': [h.confdir]}}}}}}, f)
    proc = run_playbook('hypervisor.vfio.export', inventory)
    out = tmp_path / 'hv5'
    kubevirt = yaml.safe_load((out / 'kubevirt-permitted-host-devices.yml').read_text())
    assert kubevirt['permittedHostDevices']['pciHostDevices'] == [
        {'pciVendorSelector': '8086:10D3', 'resourceName': 'hypervisor.vfio/pci-8086-10d3'}]
    assert [m['id'] for m in json.loads((out / 'proxmox-pci-mapping.json').read_text())] == ['pci-8086-10d3']
    assert (out / 'libvirt-hostdev.xml').read_text().count('<hostdev ') == 2
    assert ('left out of kubevirt/proxmox (on a VFIO variant driver, these consumers need vfio-pci; bind them with '
            'consumer: kubevirt or proxmox): 0000:00:03.0') in proc.stdout

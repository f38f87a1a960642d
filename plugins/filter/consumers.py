# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn ``ansible_facts.vfio`` into the configuration of the software that consumes
the devices: KubeVirt, OpenStack Nova, libvirt and Proxmox VE.  Documented in the .yml files
next to this one (one per filter)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

from collections.abc import Mapping

VFIO_PCI_DRIVER = 'vfio-pci'
_ADDRESS = re.compile(r'^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$')
# Proxmox VE's pve-configid and Kubernetes' extended resource name part
_CONFIG_ID = re.compile(r'^[a-z][a-z0-9_-]+$', re.IGNORECASE)
_RESOURCE_NAME = re.compile(r'^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$')


def _devices(facts, devices, what, need_vfio_pci=False):
    """The device records to export, sorted by address.

    ``facts`` is ``ansible_facts.vfio`` (or a dict with a ``vfio`` key).  Without ``devices``,
    every non-bridge device bound to a VFIO driver; with it, exactly those addresses (an address
    the host does not have is an error, so is one that is not bound to a VFIO driver).
    ``need_vfio_pci``: the consumer only takes devices on vfio-pci itself (not a variant driver).
    """
    if isinstance(facts, Mapping) and 'devices' not in facts and isinstance(facts.get('vfio'), Mapping):
        facts = facts['vfio']
    if not isinstance(facts, Mapping) or not isinstance(facts.get('devices'), Mapping):
        raise AnsibleFilterError('%s: the input must be ansible_facts.vfio (from hypervisor.vfio.vfio_facts, or '
                                 'vfio_bind with return_facts=true), got %s' % (what, type(facts).__name__))
    known = facts['devices']
    if devices is None:
        chosen = [a for a in sorted(known) if known[a].get('vfio_bound') and not known[a].get('is_bridge')]
    else:
        if isinstance(devices, (str, bytes)) or not isinstance(devices, (list, tuple)):
            raise AnsibleFilterError('%s: devices must be a list of PCI addresses, got %r' % (what, devices))
        chosen = []
        for addr in devices:
            addr = to_text(addr).lower()
            if addr not in known:
                raise AnsibleFilterError('%s: device %s is not in the facts of this host' % (what, addr))
            if not known[addr].get('vfio_bound'):
                raise AnsibleFilterError('%s: device %s is on driver %s, not on a VFIO driver; bind it first '
                                         '(hypervisor.vfio.vfio_bind)' % (what, addr, known[addr].get('driver')))
            chosen.append(addr)
        chosen = sorted(set(chosen))
    out = []
    for addr in chosen:
        rec = known[addr]
        if need_vfio_pci and rec.get('driver') != VFIO_PCI_DRIVER:
            raise AnsibleFilterError(
                '%s: device %s is bound to %s, a VFIO variant driver, but this consumer only takes devices bound to '
                'vfio-pci; bind it with consumer: %s (hypervisor.vfio.vfio_bind, or passthrough_consumer of the '
                'role), which pins vfio_pci' % (what, addr, rec.get('driver'), what.split('_')[0]))
        if not _ADDRESS.match(addr):
            raise AnsibleFilterError('%s: %s is not a PCI address' % (what, addr))
        out.append(rec)
    return out


def _vd(rec):
    return '%s:%s' % (rec['vendor'], rec['device'])


def _name(names, key, default, what, pattern, kind):
    if names is not None and not isinstance(names, Mapping):
        raise AnsibleFilterError('%s: %s must be a dict of "vendor:device" to names, got %r' % (what, kind, names))
    name = (names or {}).get(key, default)
    if not pattern.match(to_text(name)):
        raise AnsibleFilterError('%s: %r (for %s) is not a valid %s' % (what, name, key, kind))
    return to_text(name)


def kubevirt_host_devices(facts, devices=None, resource_names=None, resource_prefix='hypervisor.vfio',
                          external_resource_provider=False):
    """The ``permittedHostDevices`` value of the KubeVirt CR's configuration (pciHostDevices)."""
    what = 'kubevirt_host_devices'
    seen = {}
    for rec in _devices(facts, devices, what, need_vfio_pci=True):
        key = _vd(rec)
        if key in seen:
            continue
        name = _name(resource_names, key, '%s/pci-%s-%s' % (resource_prefix, rec['vendor'], rec['device']),
                     what, _RESOURCE_NAME, 'resourceName (domain/name)')
        entry = {'pciVendorSelector': key.upper(), 'resourceName': name}
        if external_resource_provider:
            entry['externalResourceProvider'] = True
        seen[key] = entry
    return {'pciHostDevices': [seen[k] for k in sorted(seen)]}


def _nova_type(rec):
    if rec.get('physfn'):
        return 'type-VF'
    if rec.get('sriov_totalvfs'):
        return 'type-PF'
    return 'type-PCI'


def nova_pci(facts, devices=None, alias_names=None, managed='no', numa_policy=None):
    """Nova's ``[pci] device_spec`` and ``alias`` entries (dicts; each is one JSON line of nova.conf)."""
    what = 'nova_pci'
    if managed not in ('yes', 'no', None):
        raise AnsibleFilterError("%s: managed must be 'yes', 'no' or null, got %r" % (what, managed))
    if numa_policy not in (None, 'required', 'legacy', 'preferred', 'socket'):
        raise AnsibleFilterError('%s: numa_policy must be required, legacy, preferred or socket, got %r'
                                 % (what, numa_policy))
    specs, aliases = [], {}
    for rec in _devices(facts, devices, what):
        spec = {'address': rec['address'], 'vendor_id': rec['vendor'], 'product_id': rec['device']}
        if managed is not None:
            spec['managed'] = managed
        specs.append(spec)
        dtype = _nova_type(rec)
        key = (rec['vendor'], rec['device'], dtype)
        if key in aliases:
            continue
        name = _name(alias_names, _vd(rec), 'pci-%s-%s' % (rec['vendor'], rec['device']), what, _CONFIG_ID,
                     'alias name')
        alias = {'name': name, 'vendor_id': rec['vendor'], 'product_id': rec['device'], 'device_type': dtype}
        if numa_policy:
            alias['numa_policy'] = numa_policy
        aliases[key] = alias
    return {'device_spec': specs, 'alias': [aliases[k] for k in sorted(aliases)]}


def libvirt_hostdev(facts, devices=None, managed='no'):
    """One libvirt ``<hostdev>`` element (XML text) per device, keyed by PCI address."""
    what = 'libvirt_hostdev'
    if managed not in ('yes', 'no'):
        raise AnsibleFilterError("%s: managed must be 'yes' or 'no', got %r" % (what, managed))
    out = {}
    for rec in _devices(facts, devices, what):
        domain, bus, slot, function = _ADDRESS.match(rec['address']).groups()
        out[rec['address']] = (
            "<hostdev mode='subsystem' type='pci' managed='%s'>\n"
            "  <source>\n"
            "    <address domain='0x%s' bus='0x%s' slot='0x%s' function='0x%s'/>\n"
            "  </source>\n"
            "</hostdev>" % (managed, domain, bus, slot, function))
    return out


def proxmox_pci_mapping(facts, node, devices=None, mapping_ids=None, description=None):
    """Proxmox VE PCI resource mappings (``/cluster/mapping/pci``): one mapping per vendor:device,
    with one ``map`` entry per device of this node."""
    what = 'proxmox_pci_mapping'
    node = to_text(node or '')
    if not re.match(r'^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$', node):
        raise AnsibleFilterError('%s: node must be the Proxmox VE node name (a host name), got %r' % (what, node))
    mappings = {}
    for rec in _devices(facts, devices, what, need_vfio_pci=True):
        key = _vd(rec)
        if key not in mappings:
            mid = _name(mapping_ids, key, 'pci-%s-%s' % (rec['vendor'], rec['device']), what, _CONFIG_ID,
                        'mapping id')
            mappings[key] = {'id': mid, 'map': []}
            if description:
                mappings[key]['description'] = to_text(description)
        fields = ['node=%s' % node, 'path=%s' % rec['address'], 'id=%s' % key]
        if rec.get('subsystem_vendor') and rec.get('subsystem_device'):
            fields.append('subsystem-id=%s:%s' % (rec['subsystem_vendor'], rec['subsystem_device']))
        if rec.get('iommu_group') is not None:
            fields.append('iommugroup=%d' % int(rec['iommu_group']))
        mappings[key]['map'].append(','.join(fields))
    return [mappings[k] for k in sorted(mappings)]


class FilterModule(object):
    def filters(self):
        return {
            'kubevirt_host_devices': kubevirt_host_devices,
            'nova_pci': nova_pci,
            'libvirt_hostdev': libvirt_hostdev,
            'proxmox_pci_mapping': proxmox_pci_mapping,
        }

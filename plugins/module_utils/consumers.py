# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The software that consumes the devices, and what it needs from the binding.

Binding is not the end of the story: each consumer has rules of its own.  ``constrain`` turns
a vfio_bind request into the request that satisfies the consumer (a pure function: entries in,
entries out, with the reason), before anything is read or written.

- kubevirt: KubeVirt's device plugin offers a PCI host device only while it is bound to
  ``vfio-pci`` ("KubeVirt is only able to assign PCI devices that are using the vfio-pci
  driver", KubeVirt user guide, Host Devices Assignment); a device on a variant driver such as
  ``mlx5_vfio_pci`` is invisible to ``permittedHostDevices``.  Every VFIO entry is pinned to
  ``vfio_pci``; an entry or a ``driver`` pinning anything else is refused.
- proxmox: Proxmox VE's qemu-server moves a passthrough device to ``vfio-pci`` when the VM
  starts (PVE::SysFSTools::pci_dev_bind_to_vfio: new_id, unbind, bind to vfio-pci unless the
  device already sits there).  A device left on a variant driver with ``driver_override`` set
  to it would make that bind fail, so entries are pinned to ``vfio_pci`` as for KubeVirt.
- libvirt, nova: any VFIO driver, variant drivers included, is fine; devices bound ahead of
  time by this collection are given to domains with ``managed='no'`` (libvirt) or declared
  with ``managed: 'no'`` in nova's ``[pci] device_spec`` so that libvirt never detaches or
  re-attaches them.  Nothing to change in the request; the filters of this collection write
  those configurations from the facts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import normalize_module
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError

VFIO_PCI = 'vfio_pci'

RULES = {
    'kubevirt': {
        'driver': VFIO_PCI,
        'reason': "KubeVirt's device plugin offers a PCI host device only while it is bound to vfio-pci; "
                  "on a VFIO variant driver it is invisible to permittedHostDevices",
        'managed': None,
    },
    'proxmox': {
        'driver': VFIO_PCI,
        'reason': "Proxmox VE binds a passthrough device to vfio-pci when the VM starts "
                  "(pci_dev_bind_to_vfio); a device held on a variant driver by driver_override would "
                  "make that bind fail",
        'managed': None,
    },
    'libvirt': {
        'driver': None,
        'reason': "libvirt uses any VFIO driver; give these devices to domains with <hostdev managed='no'> "
                  "(filter hypervisor.vfio.libvirt_hostdev) so that libvirt does not rebind them",
        'managed': 'no',
    },
    'nova': {
        'driver': None,
        'reason': "nova's libvirt driver uses any VFIO driver; declare these devices with managed: 'no' in "
                  "[pci] device_spec (filter hypervisor.vfio.nova_pci) so that libvirt does not rebind them",
        'managed': 'no',
    },
}

CONSUMERS = tuple(sorted(RULES))


def _entry_label(index, entry):
    if isinstance(entry, dict) and entry.get('address'):
        return 'devices[%d] (%s)' % (index, entry['address'])
    if not isinstance(entry, dict):
        return 'devices[%d] (%s)' % (index, entry)
    return 'devices[%d]' % index


def constrain(consumer, devices, state='vfio', driver=None):
    """Apply the consumer's rules to a vfio_bind request.

    Returns ``(devices, info)``: the entries to bind (new list; the input is not modified) and,
    when a consumer is given, ``info`` = ``{name, driver, managed, reason, pinned}`` where
    ``pinned`` lists the entries the consumer pinned.  Raises RequestError, naming the entry and
    the consumer's reason, when the request contradicts the consumer (for example
    ``driver: mlx5_vfio_pci`` with ``consumer: kubevirt``).  Entries that are not well formed
    are passed through unchanged: vfio_bind's own validation reports them.
    """
    if consumer is None:
        return devices, None
    if consumer not in RULES:
        raise RequestError('consumer must be one of %s, got %r' % (', '.join(CONSUMERS), consumer))
    rule = RULES[consumer]
    info = {'name': consumer, 'driver': rule['driver'], 'managed': rule['managed'], 'reason': rule['reason'],
            'pinned': []}
    if not isinstance(devices, list):
        return devices, info
    pin = rule['driver']
    if pin is None:
        return list(devices), info
    if driver is not None and normalize_module(str(driver)) != pin:
        raise RequestError('driver=%s contradicts consumer=%s, which needs %s: %s'
                           % (driver, consumer, pin, rule['reason']))
    out = []
    for index, original in enumerate(devices):
        entry = {'address': original} if isinstance(original, str) else original
        if not isinstance(entry, dict) or (entry.get('state') or state) != 'vfio':
            out.append(original)
            continue
        own = entry.get('driver')
        if own is not None:
            if normalize_module(str(own)) != pin:
                raise RequestError('%s pins driver %s, which contradicts consumer=%s (needs %s): %s'
                                   % (_entry_label(index, entry), own, consumer, pin, rule['reason']))
            out.append(entry)
            continue
        entry = dict(entry, driver=pin)
        info['pinned'].append(_entry_label(index, entry))
        out.append(entry)
    return out, info


def constrain_params(params):
    """vfio_bind's parameters with the consumer's rules applied: ``(params, info)``."""
    devices, info = constrain(params.get('consumer'), params.get('devices'), params.get('state') or 'vfio',
                              params.get('driver'))
    if info is None:
        return params, None
    return dict(params, devices=devices), info

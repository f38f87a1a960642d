# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vfio_bind request that gives devices back to the host (the role's passthrough_restore).
Documented in restore_request.yml next to this file."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI


def restore_request(devices, facts, previous=None):
    """Every entry of ``devices`` as ``state: host``: a selector entry becomes optional; an address
    entry, and every device of the previous desired state (``previous``, the decoded state.json),
    is kept when the host has it (``facts``: ansible_facts.vfio). Addresses are compared in the
    engine's canonical form (kernel.PCI)."""
    if not isinstance(devices, list):
        raise AnsibleFilterError('restore_request: the input must be the list passthrough_devices, got %r' % (devices,))
    known = (facts or {}).get('devices') or {} if isinstance(facts, Mapping) else {}
    out = []
    addresses = []
    for entry in devices:
        if isinstance(entry, Mapping):
            out.append(dict(entry, state='host', optional=True))
        else:
            addresses.append(entry)
    if isinstance(previous, Mapping):
        addresses += [d.get('address') for d in previous.get('devices') or [] if isinstance(d, Mapping)]
    seen = set()
    for a in addresses:
        addr = PCI.normalize_address(a) if isinstance(a, str) else None
        if addr is None:
            out.append(a)       # vfio_bind names what is wrong with it
        elif addr in known and addr not in seen:
            seen.add(addr)
            out.append(addr)
    return out


class FilterModule(object):
    def filters(self):
        return {'restore_request': restore_request}

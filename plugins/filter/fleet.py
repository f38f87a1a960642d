# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report's data (playbooks/report.yml) from the VFIO facts of every host.

It only arranges the facts: whether an IOMMU group is viable, and which members block it, are
the facts' own ``viable`` and ``blockers`` (computed in module_utils/devices.py by the rule
vfio_bind plans with). Documented in fleet_report.yml next to this file."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

KERNEL_KEYS = ('release', 'running', 'initramfs', 'missing_vfio_modules', 'initramfs_vfio_modules')


def _facts_of(hostvars, name):
    try:
        facts = hostvars[name].get('ansible_facts') or {}
    except (KeyError, AttributeError):
        return None
    vfio = facts.get('vfio') if isinstance(facts, Mapping) else None
    return vfio if isinstance(vfio, Mapping) else None


def _sriov(d):
    if d.get('sriov_totalvfs'):
        autoprobe = 'on' if d.get('sriov_drivers_autoprobe') else 'off'
        return 'PF %s/%s VFs, autoprobe %s' % (d.get('sriov_numvfs') or 0, d['sriov_totalvfs'], autoprobe)
    if d.get('physfn'):
        return 'VF of %s' % d['physfn']
    return ''


def _reset(d):
    methods = d.get('reset_method')
    if methods == [] or (methods is None and not d.get('reset_supported')):
        return 'none'
    return ' '.join(methods or []) or 'yes'


def _device_row(addr, d, groups):
    group = str(d['iommu_group']) if d.get('iommu_group') is not None else None
    g = groups.get(group, {}) if group is not None else {}
    cands = ['%s (%s *%s)' % (c['module'], c['wildcards'], ', blacklisted' if c.get('blacklisted') else '')
             for c in d.get('vfio_candidates') or []]
    return {'address': addr, 'ids': '%s:%s' % (d.get('vendor') or '????', d.get('device') or '????'),
            'class': d.get('class') or '', 'driver': d.get('driver') or '', 'override': d.get('driver_override') or '',
            'vfio_bound': bool(d.get('vfio_bound')), 'vfio_module': d.get('vfio_module') or '', 'candidates': cands,
            'ambiguous': bool(d.get('vfio_ambiguous')), 'group': group if group is not None else '',
            'group_viable': g.get('viable'), 'group_members': g.get('devices') or [], 'sriov': _sriov(d),
            'net': ', '.join(d.get('net_interfaces') or []), 'reset': _reset(d)}


def _host(name, v, summary):
    devices = v.get('devices') or {}
    groups = v.get('iommu_groups') or {}
    rows = [_device_row(a, devices[a], groups) for a in sorted(devices) if not devices[a].get('is_bridge')]
    for r in rows:
        if r['ambiguous']:
            summary['ambiguous'].append({'host': name, 'address': r['address'], 'ids': r['ids'],
                                         'candidates': r['candidates']})
    for num in sorted(groups, key=int):
        g = groups[num]
        members = g.get('devices') or []
        if not g.get('viable') and any(devices.get(a, {}).get('vfio_bound') for a in members):
            summary['nonviable_groups'].append({
                'host': name, 'group': num, 'members': members,
                'blockers': ['%s on %s' % (a, devices.get(a, {}).get('driver')) for a in g.get('blockers') or []]})
    iommu = v.get('iommu') or {}
    ready = bool(iommu.get('enabled')) and not v.get('warnings')
    boot = v.get('boot') or {}
    flags = [k if val is True else '%s=%s' % (k, val)
             for k, val in sorted((iommu.get('cmdline_flags') or {}).items()) if val is not None]
    bound = sum(1 for r in rows if r['vfio_bound'])
    summary['hosts_ready'] += int(ready)
    summary['devices'] += len(rows)
    summary['devices_bound'] += bound
    return {'name': name, 'reachable': True, 'ready': ready, 'kernel': v.get('kernel_release'),
            'boot_loader': boot.get('loader'), 'boot_method': boot.get('method'),
            'boot_method_reason': boot.get('method_reason'),
            'kernels': [dict((k, x.get(k)) for k in KERNEL_KEYS if k in x) for x in v.get('kernels') or []],
            'iommu_enabled': bool(iommu.get('enabled')), 'group_count': iommu.get('group_count'),
            'cmdline_flags': flags, 'vfio_modules': iommu.get('loaded_vfio_modules') or [],
            'warnings': list(v.get('warnings') or []), 'devices': rows, 'bound': bound}


def fleet_report(host_names, hostvars, title='VFIO fleet report', generated=''):
    """{'title', 'generated', 'summary', 'hosts'} for the hosts named, from hostvars[*].ansible_facts.vfio."""
    if isinstance(host_names, (str, bytes)) or not isinstance(host_names, (list, tuple)):
        raise AnsibleFilterError('fleet_report: the input must be a list of host names, got %r' % (host_names,))
    summary = {'hosts': len(host_names), 'hosts_ready': 0, 'hosts_without_facts': [], 'devices': 0,
               'devices_bound': 0, 'nonviable_groups': [], 'ambiguous': []}
    hosts = []
    for name in sorted(to_text(h) for h in host_names):
        v = _facts_of(hostvars, name)
        if v is None:
            summary['hosts_without_facts'].append(name)
            hosts.append({'name': name, 'reachable': False, 'ready': False, 'devices': [],
                          'warnings': ['no VFIO facts: unreachable or failed'], 'bound': 0})
        else:
            hosts.append(_host(name, v, summary))
    return {'title': to_text(title), 'generated': to_text(generated), 'summary': summary, 'hosts': hosts}


class FilterModule(object):
    def filters(self):
        return {'fleet_report': fleet_report}

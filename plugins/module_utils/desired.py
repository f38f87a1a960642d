# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The desired state the role persists on the host, and the requests the engine gets from it.

The role writes it (JSON) from what vfio_bind did: the devices meant for VFIO, with the IDs
they had and the driver only where the request pinned one (otherwise the best VFIO variant
is resolved again, for the kernel that booted), and the SR-IOV PFs with their VF count.
The boot entry point (cli.py) reads it and hands the requests to the same vfio_sriov and
vfio_bind cores as the modules.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import (
    GROUP_POLICIES, RequestError, SETTING_KEYS, check_driver_name, d3cold_allowed, reset_methods)

FORMAT = 1
DEFAULT_PATH = '/etc/hypervisor-vfio/state.json'
# Bounds used when the file does not carry its own (seconds).
DEFAULTS = {'iommu_group': 'strict', 'timeout': 10, 'lock_timeout': 30, 'sriov_timeout': 30,
            'sriov_wait_timeout': 30}
MAX_SECONDS = 3600
_HEX4 = '0123456789abcdef'


class StateError(ValueError):
    """The state file is missing, unreadable or not what the role writes."""


def _ids(value, what):
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 4 or any(c not in _HEX4 for c in value.lower()):
        raise StateError('%s must be a 4-digit hexadecimal id or null, got %r' % (what, value))
    return value.lower()


def parse_state(data, bus=PCI):
    """Validate the decoded JSON; return a normalized copy or raise StateError."""
    if not isinstance(data, dict):
        raise StateError('the state must be a JSON object, got %s' % type(data).__name__)
    if data.get('format') != FORMAT:
        raise StateError('unknown state format %r (this engine reads format %d)' % (data.get('format'), FORMAT))
    out = dict(DEFAULTS)
    for key in ('timeout', 'lock_timeout', 'sriov_timeout', 'sriov_wait_timeout'):
        value = data.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SECONDS:
            raise StateError('%s must be a number of seconds from 1 to %d, got %r' % (key, MAX_SECONDS, value))
        out[key] = value
    policy = data.get('iommu_group', DEFAULTS['iommu_group'])
    if policy not in GROUP_POLICIES:
        raise StateError('iommu_group must be one of %s, got %r' % (', '.join(GROUP_POLICIES), policy))
    out['iommu_group'] = policy
    devices = data.get('devices', [])
    if not isinstance(devices, list):
        raise StateError('devices must be a list')
    out['devices'] = []
    seen = set()
    for i, d in enumerate(devices):
        what = 'devices[%d]' % i
        if not isinstance(d, dict):
            raise StateError('%s must be an object with address, vendor, device, driver' % what)
        addr = bus.normalize_address(d.get('address') if isinstance(d.get('address'), str) else None)
        if addr is None:
            raise StateError('%s: address %r is not a PCI address' % (what, d.get('address')))
        if addr in seen:
            raise StateError('%s: %s is listed twice' % (what, addr))
        seen.add(addr)
        driver = d.get('driver')
        if driver is not None:
            try:
                check_driver_name(driver, what + '.driver')
            except RequestError as e:
                raise StateError(str(e))
        dev = {'address': addr, 'vendor': _ids(d.get('vendor'), what + '.vendor'),
               'device': _ids(d.get('device'), what + '.device'), 'driver': driver}
        # the reset and power settings of the device, re-applied with its binding
        try:
            if d.get('reset_method') is not None:
                dev['reset_method'] = list(reset_methods(d['reset_method'], '%s (%s)' % (what, addr)))
            if d.get('d3cold_allowed') is not None:
                dev['d3cold_allowed'] = d3cold_allowed(d['d3cold_allowed'], '%s (%s)' % (what, addr))
        except RequestError as e:
            raise StateError(str(e))
        out['devices'].append(dev)
    try:
        # imported here: vfio_bind imports this file for desired_devices on every call, and
        # AnsiballZ compiles every imported module_utils file on every run
        from ansible_collections.hypervisor.vfio.plugins.module_utils.sriov import parse_pfs
        out['sriov'] = parse_pfs(data.get('sriov', []), bus)
    except RequestError as e:
        raise StateError('sriov: %s' % e)
    return out


def load_state(path, bus=PCI):
    try:
        with open(path) as f:
            text = f.read()
    except (IOError, OSError) as e:
        raise StateError('cannot read %s: %s' % (path, e.strerror))
    try:
        data = json.loads(text)
    except ValueError as e:
        raise StateError('%s is not JSON: %s' % (path, e))
    try:
        return parse_state(data, bus)
    except StateError as e:
        raise StateError('%s: %s' % (path, e))


def select(state, only, bus=PCI):
    """The state restricted to the given addresses (every device and PF when ``only`` is empty)."""
    if not only:
        return state
    wanted = set()
    for a in only:
        n = bus.normalize_address(a)
        if n is None:
            raise StateError('%r is not a PCI address' % a)
        wanted.add(n)
    known = set(d['address'] for d in state['devices']) | set(p['pf'] for p in state['sriov'])
    unknown = sorted(wanted - known)
    if unknown:
        raise StateError('%s not in the desired state (known: %s)' % (
            ', '.join(unknown), ', '.join(sorted(known)) or 'nothing'))
    out = dict(state)
    out['devices'] = [d for d in state['devices'] if d['address'] in wanted]
    out['sriov'] = [p for p in state['sriov'] if p['pf'] in wanted]
    return out


def present_devices(state, fs, bus=PCI):
    """(devices to act on, [(address, why skipped)]): absent devices and devices whose IDs are not
    the recorded ones (the hardware changed) are left alone."""
    keep = []
    skipped = []
    for d in state['devices']:
        base = bus.device_dir(d['address'])
        if not fs.isdir(base):
            skipped.append((d['address'], 'absent (nothing at %s)' % fs.sys(base)))
            continue
        now = tuple((fs.read_optional(base + '/' + k) or '').lower().replace('0x', '', 1) for k in ('vendor', 'device'))
        want = (d['vendor'], d['device'])
        if None not in want and now != want:
            skipped.append((d['address'], 'is %s:%s, not the recorded %s:%s (hardware changed?): left alone'
                            % (now + want)))
            continue
        keep.append(d)
    return keep, skipped


def bind_params(state, devices, host_params, give_back=False, lock_file=None):
    """vfio_bind's parameters for these state devices (to VFIO, or back to the host)."""
    items = []
    for d in devices:
        item = {'address': d['address']}
        if not give_back:
            if d['driver']:
                item['driver'] = d['driver']
            item.update((k, d[k]) for k in SETTING_KEYS if d.get(k) is not None)
        items.append(item if len(item) > 1 else d['address'])
    p = dict(host_params)
    p.update(devices=items, state='host' if give_back else 'vfio', driver=None, iommu_group=state['iommu_group'],
             force=False, timeout=state['timeout'], lock_timeout=state['lock_timeout'], return_facts=False)
    if lock_file:
        p['lock_file'] = lock_file
    return p


def desired_devices(items, rows):
    """The ``devices`` of the desired state from a vfio_bind plan: every device the call leaves
    (or would leave) on VFIO, with the IDs it has and a driver only where its request entry pinned
    one (``items`` from plan.parse_request, ``rows`` the call's per-device result); otherwise the
    boot resolves the best VFIO variant again for the kernel that booted. The reset_method and
    d3cold_allowed an entry gives come along."""
    by_label = dict((item.label, item) for item in items)
    out = []
    for r in sorted(rows, key=lambda r: r['address']):
        if r['state'] != 'vfio':
            continue
        item = by_label.get(r['item'])
        dev = {'address': r['address'], 'vendor': r['vendor'], 'device': r['device'],
               'driver': item.driver if item else None}
        # the entry's reset and power settings, re-applied with the binding at boot
        for key, value in sorted(((item.settings if item else None) or {}).items()):
            dev[key] = list(value) if isinstance(value, tuple) else value
        out.append(dev)
    return out


def sriov_params(state, lock_file):
    return {'pfs': [dict(p) for p in state['sriov']], 'force': False, 'timeout': state['sriov_timeout'],
            'wait_timeout': state['sriov_wait_timeout'], 'lock_file': lock_file, 'lock_timeout': state['lock_timeout']}

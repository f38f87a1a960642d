# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read the devices of a bus, their IOMMU groups and the VFIO state into plain data."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

# Drivers a VFIO group may contain besides VFIO drivers (the kernel's own allow-list).
GROUP_SAFE_DRIVERS = ('pci-stub', 'pcieport')
VFIO_CORE_DRIVERS = ('vfio-pci', 'vfio_pci', 'vfio-platform', 'vfio_platform')

_ID_ATTRS = ('vendor', 'device', 'subsystem_vendor', 'subsystem_device')


def _hex_id(value, width):
    """'0x1af4' -> '1af4'; None stays None."""
    if value is None:
        return None
    value = value.strip().lower()
    if value.startswith('0x'):
        value = value[2:]
    return value.zfill(width) if value else None


def _int_or_none(value):
    if value is None:     # most devices lack the SR-IOV attributes: no exception for them
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# Attributes read_device reads when the device directory lists them (the IDs only when modalias
# does not carry them), and the symbolic links it follows.
_ATTRS = ('modalias', 'driver_override', 'numa_node', 'sriov_totalvfs', 'sriov_numvfs',
          'sriov_drivers_autoprobe', 'reset_method', 'd3cold_allowed', 'power_state', 'boot_vga')
_LINKS = ('driver', 'iommu_group', 'physfn')


def read_device(fs, bus, address, netdevs=None, ids_cache=None):
    """One device's record.  Attributes the kernel does not expose are None.

    The device directory is listed once and an optional entry (SR-IOV, physfn, vfio-dev,
    driver...) is read only when it is listed: an ordinary device costs no failing
    syscall.  The IDs and the class come from ``modalias`` when the bus prints them there
    (``ids_cache``: {modalias: IDs}, shared by the devices of one scan: devices of one model
    parse it once).
    """
    base = bus.device_dir(address)
    entries = fs.entries(base)
    present = set(entries)
    attrs = fs.read_attrs(base, [a for a in _ATTRS if a in present])
    opt = attrs.get
    virtfns = [n for n in entries if n.startswith('virtfn')]
    links = fs.link_names(base, [n for n in _LINKS if n in present] + virtfns)
    link = links.get

    rec = {'address': address, 'bus': bus.name}
    modalias = opt('modalias')
    rec.update(device_ids(fs, bus, base, modalias, present, ids_cache))
    rec['modalias'] = modalias
    rec['driver'] = link('driver')
    rec['driver_module'] = fs.link_name(base + '/driver/module') if rec['driver'] else None
    override = opt('driver_override')
    rec['driver_override'] = None if override in (None, '', '(null)') else override
    rec['iommu_group'] = _int_or_none(link('iommu_group'))
    rec['numa_node'] = _int_or_none(opt('numa_node'))
    rec['sriov_totalvfs'] = _int_or_none(opt('sriov_totalvfs'))
    rec['sriov_numvfs'] = _int_or_none(opt('sriov_numvfs'))
    autoprobe = opt('sriov_drivers_autoprobe')
    rec['sriov_drivers_autoprobe'] = None if autoprobe is None else autoprobe == '1'
    rec['physfn'] = link('physfn')
    rec['virtfns'] = sorted((link(n) for n in virtfns), key=lambda a: a or '') if virtfns else []
    if netdevs is None:
        netdevs = fs.class_index('net')
    rec['net_interfaces'] = sorted(netdevs.get(fs.link_path(base), ())) if netdevs else []
    rec['vfio_dev'] = fs.listdir(base + '/vfio-dev') if 'vfio-dev' in present else []
    rec['is_bridge'] = bool(rec['class'] and rec['class'][:4] in bus.bridge_classes)
    rec.update(reset_and_power(opt, present))
    return rec


def device_ids(fs, bus, base, modalias, present=None, ids_cache=None):
    """{vendor, device, subsystem_vendor, subsystem_device, class}: from ``modalias`` when the bus
    prints them there (``ids_cache``: {modalias: IDs}, shared by one scan), else from the ID
    attributes (those ``present`` lists; all of them when None)."""
    if ids_cache is None:
        ids = bus.ids_from_modalias(modalias)
    else:
        ids = ids_cache.get(modalias)
        if ids is None:
            ids = ids_cache[modalias] = bus.ids_from_modalias(modalias)
    if ids is None:
        extra = fs.read_attrs(base, [a for a in _ID_ATTRS + ('class',) if present is None or a in present])
        ids = dict((attr, _hex_id(extra.get(attr), 4)) for attr in _ID_ATTRS)
        ids['class'] = _hex_id(extra.get('class'), 6)
    return ids


def _flag(value):
    return None if value is None else value == '1'


def reset_and_power(opt, present):
    """The reset and power attributes of a device (None where the kernel shows none).

    ``reset_method`` (5.15+) lists the enabled reset methods in the order the kernel tries
    them; the kernel does not show which others the device would support (writing
    ``default`` restores them all). ``reset`` exists only when the kernel found at least
    one method when it added the device.
    """
    methods = opt('reset_method')
    return {
        'reset_method': None if methods is None else methods.split(),
        'reset_supported': 'reset' in present,
        'd3cold_allowed': _flag(opt('d3cold_allowed')),
        'power_state': opt('power_state'),
        'boot_vga': _flag(opt('boot_vga')),
    }


def no_reset_reason(rec):
    """Why the kernel cannot reset this device (a VM restart then hands it over in the state the
    guest left it: the reason for out-of-tree reset modules such as vendor-reset), or None."""
    methods = rec.get('reset_method')
    if methods == [] or (methods is None and not rec.get('reset_supported')):
        return ('the kernel has no reset method for this device (%s): a VM restart cannot reset it, so a '
                'guest may find it in the state the previous one left'
                % ('reset_method is empty' if methods == [] else 'no reset attribute'))
    return None


def scan(fs, bus, addresses=None, netdevs=None):
    """Every device of the bus (or those of ``addresses``), keyed by address."""
    if netdevs is None:
        netdevs = fs.class_index('net')
    ids_cache = {}
    if addresses is None:
        addresses = fs.listdir(bus.devices_dir())
    return dict((addr, read_device(fs, bus, addr, netdevs, ids_cache)) for addr in addresses)


# The link a selector key (plan.SELECTOR_KEYS) needs read, besides modalias for the IDs and class.
_SELECT_LINKS = {'current_driver': 'driver', 'physfn': 'physfn', 'iommu_group': 'iommu_group'}


def select(fs, bus, addresses, selectors, selects):
    """{selector index: [addresses]} of the devices each selector selects, ``selects(selector,
    rec)`` deciding (vfio_bind's rule, plan.selects).

    Reads per device only what the selectors look at: nothing when they all name addresses,
    ``modalias`` for the IDs and the class, one link each for the driver, the PF and the IOMMU
    group, with read_device's semantics.
    """
    keys = set(k for sel in selectors for k in sel)
    if keys == set(['address']):
        return dict((i, [sel['address']] if sel['address'] in addresses else []) for i, sel in enumerate(selectors))
    links = sorted(set(_SELECT_LINKS[k] for k in keys if k in _SELECT_LINKS))
    need_ids = bool(keys & set(_ID_ATTRS + ('class',)))
    ids_cache = {}
    hits = dict((i, []) for i in range(len(selectors)))
    for addr in sorted(addresses):
        base = bus.device_dir(addr)
        rec = {'address': addr}
        if need_ids:
            rec.update(device_ids(fs, bus, base, fs.read_attrs(base, ('modalias',))['modalias'], None, ids_cache))
        got = fs.link_names(base, links)
        rec['driver'] = got.get('driver')
        rec['physfn'] = got.get('physfn')
        rec['iommu_group'] = _int_or_none(got.get('iommu_group'))
        for i, sel in enumerate(selectors):
            if selects(sel, rec):
                hits[i].append(addr)
    return hits


def iommu_groups_names(fs):
    """{group number: directory name} of /sys/kernel/iommu_groups."""
    return dict((num, name) for num, name in ((_int_or_none(n), n) for n in fs.listdir('kernel/iommu_groups'))
                if num is not None)


def iommu_groups(fs):
    """{group number: [member addresses]} from /sys/kernel/iommu_groups."""
    return dict((num, fs.listdir('kernel/iommu_groups/%s/devices' % name))
                for num, name in sorted(iommu_groups_names(fs).items()))


def loaded_vfio_modules(fs):
    return [m for m in fs.listdir('module') if 'vfio' in m]


def module_driver(fs, bus, module):
    """The driver name a loaded module registers on the bus (vfio_pci -> vfio-pci), or None."""
    prefix = bus.module_driver_prefix()
    for entry in fs.listdir('module/%s/drivers' % module):
        if entry.startswith(prefix):
            return entry[len(prefix):]
    return None


def is_vfio_driver(rec, vfio_modules):
    """Whether the device's current driver is a VFIO driver.

    Variant drivers (kernel 6.1+) give their devices a ``vfio-dev/`` directory;
    otherwise the driver is known by name or by being a module that publishes
    ``vfio_`` aliases for this device.
    """
    drv = rec.get('driver')
    if not drv:
        return False
    if rec.get('vfio_dev') or drv in VFIO_CORE_DRIVERS:
        return True
    mod = rec.get('driver_module') or drv
    return mod.replace('-', '_') in vfio_modules


def member_ok(rec, vfio_modules):
    """A group member that does not stop the group from being handed to a VM."""
    return (rec is None or rec.get('is_bridge') or not rec.get('driver')
            or rec.get('driver') in GROUP_SAFE_DRIVERS or is_vfio_driver(rec, vfio_modules))


def gather(fs, bus, resolver, addresses=None):
    """(devices, IOMMU groups): every device and group, or, with ``addresses``, those devices and
    the groups that hold them (their other members are read too, for the viability, but not
    returned)."""
    if addresses is None:
        devices = scan(fs, bus)
        members = iommu_groups(fs)
        shown = devices
    else:
        netdevs = fs.class_index('net')
        devices = scan(fs, bus, sorted(addresses), netdevs)
        shown = dict(devices)
        members = {}
        for num in sorted(set(r['iommu_group'] for r in devices.values() if r['iommu_group'] is not None)):
            members[num] = fs.listdir('kernel/iommu_groups/%d/devices' % num)
        present = set(fs.entries(bus.devices_dir()))
        devices.update(scan(fs, bus, sorted(set(a for m in members.values() for a in m if a in present)
                                            - set(devices)), netdevs))
    return shown, classify(bus, resolver, devices, members, loaded_vfio_modules(fs))


def classify(bus, resolver, devices, members, loaded_vfio):
    """The IOMMU groups' facts, {number as text: {devices, viable, blockers}}, from the device
    records read (scan; their VFIO keys are filled in here), the groups' members ({number:
    [addresses]}) and the loaded modules named *vfio* (``loaded_vfio``): no read of the host.
    """
    # With a selection, the candidates of the devices read (the selection and its groups' members)
    # count here: a device whose driver is a VFIO candidate of an unread device only, neither loaded
    # under a *vfio* name nor giving it a vfio-dev/ (kernel 6.1+), would read as not vfio_bound.
    vfio_modules = set(loaded_vfio)
    chosen = {}     # modalias -> resolver.choose(): devices of one model share one answer (and its list)
    for rec in devices.values():
        if rec['modalias']:
            if rec['modalias'] not in chosen:
                chosen[rec['modalias']] = resolver.choose(bus.vfio_alias(rec['modalias']))
            module, ambiguous, cands = chosen[rec['modalias']]
        else:
            module, ambiguous, cands = None, False, []
        rec['vfio_module'] = module
        rec['vfio_ambiguous'] = ambiguous
        rec['vfio_candidates'] = cands
        vfio_modules.update(c['module'] for c in cands)
    for rec in devices.values():
        rec['vfio_bound'] = is_vfio_driver(rec, vfio_modules)
    groups = {}
    for num, addrs in sorted(members.items()):
        blockers = [a for a in addrs if not member_ok(devices.get(a), vfio_modules)]
        groups[str(num)] = {'devices': addrs, 'viable': not blockers, 'blockers': blockers}
    return groups


def kernel_cmdline_flags(fs):
    """The IOMMU/VFIO-related kernel command line arguments (None when absent)."""
    cmdline = (fs.read_proc('cmdline') or '').split()
    wanted = ('intel_iommu', 'amd_iommu', 'iommu', 'iommu.passthrough', 'iommu.strict',
              'vfio-pci.ids', 'vfio_pci.ids', 'vfio.enable_unsafe_noiommu_mode', 'pci', 'pcie_acs_override')
    flags = dict((k, None) for k in wanted)
    for arg in cmdline:
        key, sep, value = arg.partition('=')
        if key in flags:
            flags[key] = value if sep else True
    return flags, ' '.join(cmdline)


def iommu_facts(fs, groups, group_count=None, loaded_vfio=None):
    """The IOMMU state; ``group_count`` when ``groups`` holds only some groups (a selection);
    ``loaded_vfio``: the loaded modules named *vfio*, sorted, when already read."""
    flags, cmdline = kernel_cmdline_flags(fs)
    iommus = fs.listdir('class/iommu')
    noiommu = fs.read_optional('module/vfio/parameters/enable_unsafe_noiommu_mode')
    count = len(groups) if group_count is None else group_count
    return {
        'enabled': bool(count) or bool(iommus),
        'group_count': count,
        'units': iommus,
        'cmdline_flags': flags,
        'cmdline': cmdline,
        'noiommu_mode': None if noiommu is None else noiommu in ('Y', '1'),
        'loaded_vfio_modules': loaded_vfio_modules(fs) if loaded_vfio is None else list(loaded_vfio),
    }


def running_kernel_release(fs):
    rel = fs.read_proc('sys/kernel/osrelease')
    return rel.strip() if rel else os.uname()[2]

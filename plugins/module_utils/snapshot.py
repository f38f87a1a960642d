# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the host for a plan: the snapshot plan.plan() decides on.

``read_snapshot`` reads once what every plan needs: the bus's devices, the IOMMU groups,
the loaded modules, the library every VFIO variant holds, and the host's alias index (the
resolver over modules.alias, modules.dep and modprobe.d, loaded as it is looked up).
``read_facts`` reads the facts only some plans need, for the devices and modules a plan
names: the reasons a device is in use (guards.HostUsage) and the driver a loaded module
registers.  ``plan_on_host`` does both around the pure ``plan``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import namedtuple
from types import MappingProxyType

from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import VFIO_CORES, plan

# bus, kernel_release, resolver; devices: {address: device record}; groups: {number: (members)};
# loaded_modules: every /sys/module entry; vfio_modules: the loaded ones named *vfio*;
# core_holders: the modules holding the bus's VFIO library; devices_path: where the bus's devices
# are (for messages); facts: {key: value} (read_facts).
Snapshot = namedtuple('Snapshot', 'bus kernel_release resolver devices groups loaded_modules vfio_modules '
                                  'core_holders devices_path facts')
# The kinds of in-use facts, each a tuple of reasons (guards.HostUsage):
IN_USE_KINDS = ('ssh', 'nic', 'block', 'vfio', 'gpu')
# At most this many reads of missing facts per plan (each read can only reveal facts that
# depend on those just read: a pinned driver's module, then that module's driver name).
MAX_ROUNDS = 4


def read_snapshot(host, bus):
    """One read of the host, for plans: a Snapshot with the facts every loaded VFIO module's
    driver name already in."""
    fs = host.fs
    loaded = frozenset(fs.listdir('module'))
    vfio = frozenset(m for m in loaded if 'vfio' in m)
    core = VFIO_CORES.get(bus.name, (None, None))[1]
    facts = dict((('module_driver', m), devs.module_driver(fs, bus, m)) for m in sorted(vfio))
    return Snapshot(
        bus=bus, kernel_release=host.kernel_release, resolver=host.resolver,
        devices=MappingProxyType(dict((a, MappingProxyType(r)) for a, r in devs.scan(fs, bus).items())),
        groups=MappingProxyType(dict((g, tuple(m)) for g, m in devs.iommu_groups(fs).items())),
        loaded_modules=loaded, vfio_modules=vfio,
        core_holders=frozenset(fs.listdir('module/%s/holders' % core)) if core else frozenset(),
        devices_path=fs.sys(bus.devices_dir()), facts=MappingProxyType(facts))


def read_facts(host, bus, snapshot, keys, usage=None):
    """The snapshot with the facts of ``keys`` (a plan's ``needs``) read in."""
    fs = host.fs
    usage = usage or host_usage(fs)
    facts = dict(snapshot.facts)
    for key in sorted(keys, key=repr):
        kind = key[0]
        if kind == 'module_driver':
            facts[key] = devs.module_driver(fs, bus, key[1])
        elif kind == 'driver_module':
            facts[key] = fs.link_name('%s/module' % bus.driver_dir(key[1]))
        elif kind == 'noiommu_mode':  # vfio's unsafe no-IOMMU mode: a device with no group can be bound
            facts[key] = fs.read_optional('module/vfio/parameters/enable_unsafe_noiommu_mode') in ('Y', '1')
        elif kind == 'in_use':
            facts[key] = tuple(_in_use(usage, bus, snapshot.devices[key[1]], key[2]))
        else:
            raise ValueError('unknown fact %r' % (key,))
    return snapshot._replace(facts=MappingProxyType(facts))


def host_usage(fs):
    """A guards.HostUsage (what the host uses, read as it is asked)."""
    # imported here: guards.py is compiled only when a plan asks what a device is used for (a
    # device that moves), not on a call that finds every device where it belongs (AnsiballZ
    # compiles every imported module_utils file on every run)
    from ansible_collections.hypervisor.vfio.plugins.module_utils.guards import HostUsage
    return HostUsage(fs)


def _in_use(usage, bus, rec, kind):
    if kind == 'ssh':
        return usage.ssh_session_reasons(rec['net_interfaces'])
    if kind == 'nic':
        return usage.nic_reasons(rec['net_interfaces'])
    if kind == 'block':
        return usage.block_reasons(bus.device_dir(rec['address']))
    if kind == 'vfio':
        return usage.vfio_reasons(rec)
    if kind == 'gpu':
        return usage.gpu_reasons(rec, bus.device_dir(rec['address']))
    raise ValueError('unknown in-use kind %r' % (kind,))


def plan_on_host(host, bus, request):
    """(snapshot, plan): the host read once, the facts the plan names read in, the plan made
    on them (complete: its ``needs`` is empty)."""
    snapshot = read_snapshot(host, bus)
    usage = None
    result = plan(request, snapshot)
    for dummy in range(MAX_ROUNDS):
        if not result.needs:
            break
        usage = usage or host_usage(host.fs)
        snapshot = read_facts(host, bus, snapshot, result.needs, usage)
        result = plan(request, snapshot)
    if result.needs:  # pragma: no cover - a fact that reveals a new fact every round
        raise RuntimeError('the plan still lacks %s after %d reads' % (sorted(result.needs), MAX_ROUNDS))
    return snapshot, result

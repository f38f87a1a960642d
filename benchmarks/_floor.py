# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The floor of benchmarks/facts_scale.py: the reads vfio_facts makes, with no interpretation.

Standard library only. In-process: ``floor(sysfs, procfs)`` (the I/O floor). As a process,
``python3 _floor.py SYSFS MODULES_ALIAS``: a bare interpreter doing the same reads, matching each
device's ``vfio_`` alias against the ``vfio_pci:`` lines of modules.alias (fnmatch, fewest ``*``
wins, once per distinct modalias) and printing the per-device result as JSON: what a lean
hand-written script would do; the floor of the whole module process.
"""

from __future__ import absolute_import, division, print_function

import fnmatch
import json
import os
import re
import sys

# What read_device reads since the IDs come from modalias and optional entries are read only
# when the device directory lists them (E4 + the modalias IDs, BENCHMARKS.md part 1).
_FLOOR_ATTRS = ('modalias', 'driver_override', 'numa_node')
_FLOOR_OPTIONAL = ('sriov_totalvfs', 'sriov_numvfs', 'sriov_drivers_autoprobe', 'reset_method', 'd3cold_allowed',
                   'power_state', 'boot_vga')


def _read(path):
    """os.open/os.read until EOF/os.close: 4 syscalls (open().read() makes 9)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                return b''.join(chunks)
            chunks.append(b)
    finally:
        os.close(fd)


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return None


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def floor(sysfs, procfs, module_files=()):
    """The same reads the facts make, with no interpretation: the I/O floor."""
    devdir = sysfs + '/bus/pci/devices/'
    out = {}
    for addr in os.listdir(devdir):
        b = devdir + addr + '/'
        names = os.listdir(b)
        present = set(names)
        vals = [_read(b + a) for a in _FLOOR_ATTRS] + [_read(b + a) for a in _FLOOR_OPTIONAL if a in present]
        drv = _readlink(b + 'driver') if 'driver' in present else None
        links = (drv, _readlink(b + 'driver/module') if drv else None,
                 _readlink(b + 'iommu_group') if 'iommu_group' in present else None,
                 _readlink(b + 'physfn') if 'physfn' in present else None)
        vfs = [_readlink(b + n) for n in names if n.startswith('virtfn')]
        out[addr] = (vals, links, vfs, _listdir(b + 'net') if 'net' in present else [],
                     _listdir(b + 'vfio-dev') if 'vfio-dev' in present else [])
    groups = dict((g, _listdir(sysfs + '/kernel/iommu_groups/' + g + '/devices'))
                  for g in _listdir(sysfs + '/kernel/iommu_groups'))
    extra = (_listdir(sysfs + '/module'), _listdir(sysfs + '/class/iommu'), _read(procfs + '/cmdline'),
             _read(procfs + '/sys/kernel/osrelease'),
             _read(sysfs + '/module/vfio/parameters/enable_unsafe_noiommu_mode'))
    blobs = [_read(p) for p in module_files]
    return out, groups, extra, blobs


def floor_process(sysfs, alias_file):
    """{'devices': {address: {attribute: text, ..., 'vfio_module': m}}, 'groups': {...}}."""
    with open(alias_file) as f:
        pats = re.findall(r'^alias (vfio[-_]pci:\S+) (\S+)', f.read(), re.M)
    pats = [(p.replace('-', '_', 1) if p.startswith('vfio-') else p, m) for p, m in pats]
    best = {}
    devdir = sysfs + '/bus/pci/devices/'
    out = {}

    def text(path):
        b = _read(path)
        return None if b is None else b.decode('utf-8', 'replace').strip()

    def name(path):
        t = _readlink(path)
        return None if t is None else t.rpartition('/')[2]

    for addr in os.listdir(devdir):
        b = devdir + addr + '/'
        names = os.listdir(b)
        present = set(names)
        rec = dict((a, text(b + a)) for a in _FLOOR_ATTRS)
        rec.update((a, text(b + a)) for a in _FLOOR_OPTIONAL if a in present)
        drv = name(b + 'driver') if 'driver' in present else None
        rec.update(driver=drv, driver_module=name(b + 'driver/module') if drv else None,
                   iommu_group=name(b + 'iommu_group') if 'iommu_group' in present else None,
                   physfn=name(b + 'physfn') if 'physfn' in present else None,
                   virtfns=[name(b + n) for n in names if n.startswith('virtfn')],
                   net=_listdir(b + 'net') if 'net' in present else [],
                   vfio_dev=_listdir(b + 'vfio-dev') if 'vfio-dev' in present else [],
                   real=_readlink(devdir + addr))
        key = 'vfio_' + (rec['modalias'] or '')
        if key not in best:
            m = [(p.count('*'), mod) for p, mod in pats if fnmatch.fnmatchcase(key, p)]
            best[key] = min(m)[1] if m else None
        rec['vfio_module'] = best[key]
        out[addr] = rec
    groups = dict((g, _listdir(sysfs + '/kernel/iommu_groups/' + g + '/devices'))
                  for g in _listdir(sysfs + '/kernel/iommu_groups'))
    return {'devices': out, 'groups': groups}


if __name__ == '__main__':
    sys.stdout.write(json.dumps(floor_process(sys.argv[1], sys.argv[2])))

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SR-IOV virtual functions: plan (deciding), then apply, wait, verify and roll back (doing).

The kernel's rules (KERNEL-NOTES): ``sriov_drivers_autoprobe`` is written before
``sriov_numvfs``, or host drivers grab the new VFs; a nonzero count changes only through 0
(writing N while N' != 0 VFs exist fails with EBUSY), and going through 0 destroys the
existing VFs (and unplugs them from running VMs), so that needs ``force``.  The VFs appear
as ``virtfn<i>`` links of the PF; they are waited for, bounded.  Every write is bounded too.
A failure puts every PF this call changed back to its previous count and autoprobe (VFs
this call created are removed).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import (
    EngineFailed, StepFailed, failure_message, under_host_lock)
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI, KernelError, WriteTimeout
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError

MAX_VFS = 4096
PF_KEYS = ('pf', 'numvfs', 'drivers_autoprobe')


class SriovFailed(EngineFailed):
    """The call fails; ``result`` carries what is known (plan, per-PF outcome)."""


def _bool(value, what):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ('true', 'yes', 'on', '1', 'false', 'no', 'off', '0'):
        return value.lower() in ('true', 'yes', 'on', '1')
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise RequestError('%s must be a boolean, got %r' % (what, value))


def parse_pfs(entries, bus=PCI, name='pfs'):
    """Validate ``pfs`` entries into [{pf, numvfs, drivers_autoprobe}]; raise RequestError
    (``name``: the option the entries came from, as the messages say it)."""
    if not isinstance(entries, list):
        raise RequestError('%s must be a list of {pf, numvfs, drivers_autoprobe}, got %r' % (name, entries))
    out = []
    seen = set()
    for i, entry in enumerate(entries):
        what = '%s[%d]' % (name, i)
        if not isinstance(entry, dict):
            raise RequestError('%s must be a dict with pf and numvfs, got %r' % (what, entry))
        unknown = sorted(set(entry) - set(PF_KEYS))
        if unknown:
            raise RequestError('%s has unknown keys %s (allowed: %s)' % (what, ', '.join(unknown), ', '.join(PF_KEYS)))
        pf = bus.normalize_address(entry.get('pf') if isinstance(entry.get('pf'), str) else None)
        if pf is None:
            raise RequestError('%s: pf must be a quoted PCI address such as "0000:3b:00.0", got %r'
                               % (what, entry.get('pf')))
        numvfs = entry.get('numvfs')
        if isinstance(numvfs, str) and numvfs.isdigit():
            numvfs = int(numvfs)
        if isinstance(numvfs, bool) or not isinstance(numvfs, int) or not 0 <= numvfs <= MAX_VFS:
            raise RequestError('%s (%s): numvfs must be a number from 0 to %d, got %r' % (what, pf, MAX_VFS, numvfs))
        if pf in seen:
            raise RequestError('%s: %s is listed twice' % (what, pf))
        seen.add(pf)
        out.append({'pf': pf, 'numvfs': numvfs,
                    'drivers_autoprobe': _bool(entry.get('drivers_autoprobe', False), what + '.drivers_autoprobe')})
    return out


def persisted_pfs(answer, bus=PCI, name='sriov'):
    """The PFs whose VFs the boot makes again, from vfio_sriov's answer taken as it is.

    ``answer`` is vfio_sriov's result as registered: its ``desired.sriov`` (the PFs as
    :func:`run_sriov` validated them), or none when the task was skipped (no SR-IOV asked, or a
    restore: the role does not call vfio_sriov then). A list is a ``pfs`` request as vfio_sriov
    takes it (or its ``desired.sriov``), validated the same way. None is no PF. Anything else, a
    failed run included, raises RequestError naming ``name``.
    """
    if answer is None:
        return []
    if isinstance(answer, dict):
        if answer.get('failed'):
            raise RequestError('%s is the result of a vfio_sriov run that failed (%s): its PFs are not persisted; '
                               'fix that run first' % (name, str(answer.get('msg') or 'no message').splitlines()[0]))
        if answer.get('skipped'):
            return []
        desired = answer.get('desired')
        if not isinstance(desired, dict) or 'sriov' not in desired:
            raise RequestError('%s must be the result of vfio_sriov as registered (with desired.sriov) or a list of '
                               '{pf, numvfs, drivers_autoprobe}; got a dict with keys %s'
                               % (name, ', '.join(sorted(str(k) for k in answer)) or 'none'))
        return parse_pfs(desired['sriov'], bus, name + '.desired.sriov')
    return parse_pfs(answer, bus, name)


def _attr(bus, pf, name):
    return '%s/%s' % (bus.device_dir(pf), name)


def read_pf(fs, bus, pf):
    """The SR-IOV state of one PF (None values when the kernel does not expose it)."""
    rec = devs.read_device(fs, bus, pf, netdevs={}) if fs.isdir(bus.device_dir(pf)) else None
    if rec is None:
        return None
    return {'totalvfs': rec['sriov_totalvfs'], 'numvfs': rec['sriov_numvfs'],
            'drivers_autoprobe': rec['sriov_drivers_autoprobe'], 'vfs': [v for v in rec['virtfns'] if v],
            'driver': rec['driver']}


def plan_sriov(fs, items, force=False, bus=PCI):
    """Decide, per PF, what to write.  Returns {'pfs': [...], 'errors': [...], 'changed': bool}."""
    pfs = []
    errors = []
    for item in items:
        pf = item['pf']
        cur = read_pf(fs, bus, pf)
        entry = {'pf': pf, 'numvfs_before': None, 'numvfs_after': item['numvfs'], 'totalvfs': None,
                 'autoprobe_before': None, 'autoprobe_after': item['drivers_autoprobe'],
                 'vfs_before': [], 'vfs': [], 'steps': [], 'action': 'none', 'reason': '', 'result': None}
        pfs.append(entry)
        if cur is None:
            errors.append('%s: no such PCI device (nothing at %s)' % (pf, fs.sys(bus.device_dir(pf))))
            continue
        if cur['totalvfs'] is None or cur['numvfs'] is None:
            errors.append('%s is not an SR-IOV physical function: no sriov_totalvfs/sriov_numvfs in %s (is its '
                          'host driver loaded? it is on %s)' % (
                              pf, fs.sys(bus.device_dir(pf)), cur['driver'] or 'no driver'))
            continue
        entry.update(numvfs_before=cur['numvfs'], totalvfs=cur['totalvfs'], autoprobe_before=cur['drivers_autoprobe'],
                     vfs_before=cur['vfs'], vfs=cur['vfs'])
        want = item['numvfs']
        if want > cur['totalvfs']:
            errors.append('%s supports at most %d VFs (sriov_totalvfs), %d asked' % (pf, cur['totalvfs'], want))
            continue
        steps = []
        if cur['drivers_autoprobe'] != item['drivers_autoprobe']:
            steps.append(('sriov_drivers_autoprobe', '1' if item['drivers_autoprobe'] else '0'))
        if cur['numvfs'] != want:
            if cur['numvfs'] != 0:
                if not force:
                    errors.append('%s has %d VFs (%s); changing the count to %d destroys them first (and unplugs '
                                  'them from any VM that uses them): set force to allow it'
                                  % (pf, cur['numvfs'], ', '.join(cur['vfs']) or 'none listed', want))
                    continue
                steps.append(('sriov_numvfs', '0'))
            if want:
                steps.append(('sriov_numvfs', str(want)))
        entry['steps'] = steps
        if not steps:
            entry.update(action='none', reason='%d VFs, drivers_autoprobe %s: as asked' % (
                want, 'on' if item['drivers_autoprobe'] else 'off'))
        elif cur['numvfs'] == want:
            entry.update(action='autoprobe', reason='setting sriov_drivers_autoprobe to %s' % steps[0][1])
        elif want == 0:
            entry.update(action='remove', reason='removing its %d VFs' % cur['numvfs'])
        elif cur['numvfs'] == 0:
            entry.update(action='create', reason='creating %d VFs (drivers_autoprobe %s first)' % (
                want, 'on' if item['drivers_autoprobe'] else 'off'))
        else:
            entry.update(action='resize', reason='%d VFs -> 0 -> %d (force)' % (cur['numvfs'], want))
    return {'pfs': pfs, 'errors': errors, 'changed': any(e['steps'] for e in pfs)}


def diff_of(plan):
    before = {}
    after = {}
    for e in plan['pfs']:
        before[e['pf']] = {'sriov_numvfs': e['numvfs_before'], 'sriov_drivers_autoprobe': e['autoprobe_before']}
        after[e['pf']] = {'sriov_numvfs': e['numvfs_after'], 'sriov_drivers_autoprobe': e['autoprobe_after']}
    return {'before': before, 'after': after}


class SriovExecutor:
    """Applies an SR-IOV plan through the KernelFS: bounded writes, bounded wait for the VFs."""

    def __init__(self, fs, bus=PCI, timeout=30, wait_timeout=30, clock=time.monotonic, sleep=time.sleep):
        self.fs = fs
        self.bus = bus
        self.timeout = timeout
        self.wait_timeout = wait_timeout
        self.clock = clock
        self.sleep = sleep

    def _write(self, pf, name, value):
        try:
            self.fs.write(_attr(self.bus, pf, name), value, timeout=self.timeout)
        except WriteTimeout as e:
            raise StepFailed(pf, 'write %s=%s' % (name, value), str(e), pending=True)
        except KernelError as e:
            raise StepFailed(pf, 'write %s=%s' % (name, value), str(e))

    def vfs(self, pf):
        base = self.bus.device_dir(pf)
        links = [n for n in self.fs.listdir(base) if n.startswith('virtfn') and n[6:].isdigit()]
        return [self.fs.link_name('%s/%s' % (base, n)) for n in sorted(links, key=lambda n: int(n[6:]))]

    def wait_vfs(self, pf, count):
        """Wait until the PF has exactly ``count`` VFs, each a device of the bus; return them."""
        deadline = self.clock() + self.wait_timeout
        while True:
            vfs = self.vfs(pf)
            ready = [v for v in vfs if v and self.fs.isdir(self.bus.device_dir(v))]
            if len(vfs) == count and len(ready) == count:
                return ready
            if self.clock() >= deadline:
                raise StepFailed(pf, 'wait for %d VFs' % count, 'after %ss the PF lists %d VFs (%s), %d of them '
                                 'present in %s' % (self.wait_timeout, len(vfs), ', '.join(v or '?' for v in vfs),
                                                    len(ready), self.fs.sys(self.bus.devices_dir())))
            self.sleep(0.1)

    def _apply_pf(self, e):
        pf = e['pf']
        for name, value in e['steps']:
            self._write(pf, name, value)
            if name == 'sriov_numvfs':
                e['vfs'] = self.wait_vfs(pf, int(value))
        numvfs = self.fs.read_optional(_attr(self.bus, pf, 'sriov_numvfs'))
        autoprobe = self.fs.read_optional(_attr(self.bus, pf, 'sriov_drivers_autoprobe'))
        if numvfs != str(e['numvfs_after']) or autoprobe != ('1' if e['autoprobe_after'] else '0'):
            raise StepFailed(pf, 'verify', 'expected sriov_numvfs %s and sriov_drivers_autoprobe %s, read %s and %s'
                             % (e['numvfs_after'], '1' if e['autoprobe_after'] else '0', numvfs, autoprobe))

    def rollback(self, e):
        """Back to the count and autoprobe before the call; return a problem or None."""
        pf = e['pf']
        try:
            now = self.fs.read_optional(_attr(self.bus, pf, 'sriov_numvfs'))
            if now != str(e['numvfs_before']):
                if now not in (None, '0'):
                    self._write(pf, 'sriov_numvfs', '0')
                    self.wait_vfs(pf, 0)
                if e['numvfs_before']:
                    self._write(pf, 'sriov_numvfs', str(e['numvfs_before']))
                    self.wait_vfs(pf, e['numvfs_before'])
            want = '1' if e['autoprobe_before'] else '0'
            if self.fs.read_optional(_attr(self.bus, pf, 'sriov_drivers_autoprobe')) != want:
                self._write(pf, 'sriov_drivers_autoprobe', want)
        except StepFailed as exc:
            return 'rollback of %s failed: %s' % (pf, exc)
        e['vfs'] = self.vfs(pf)
        return None

    def apply(self, plan):
        """Apply; return (changed, failure or None).  Each PF entry gets its 'result'."""
        done = []
        for e in plan['pfs']:
            if not e['steps']:
                e['result'] = 'unchanged'
                continue
            try:
                self._apply_pf(e)
            except StepFailed as exc:
                return True, self._fail(e, exc, done)
            e['result'] = 'changed'
            done.append(e)
        return bool(done), None

    def _fail(self, failed, exc, done):
        problems = []
        rolled = []
        for e in [failed] + list(reversed(done)):
            if e is failed and exc.pending:
                problems.append('%s was not rolled back: a write is still pending in the kernel' % e['pf'])
                e['result'] = 'pending'
                continue
            problem = self.rollback(e)
            e['result'] = 'rollback_failed' if problem else 'rolled_back'
            if problem:
                problems.append(problem)
            else:
                rolled.append(e['pf'])
        return {'device': exc.address, 'step': exc.step, 'error': exc.detail, 'pending': exc.pending,
                'rolled_back': rolled, 'rollback_problems': problems}


RESULT_KEYS = ('pf', 'action', 'reason', 'numvfs_before', 'numvfs_after', 'totalvfs', 'autoprobe_before',
               'autoprobe_after', 'vfs', 'result')


def _report(plan):
    out = []
    for e in plan['pfs']:
        row = dict((k, e.get(k)) for k in RESULT_KEYS)
        row['result'] = e.get('result') or ('planned' if e['steps'] else 'unchanged')
        out.append(row)
    return out


def sriov_failure_message(f):
    if f['pending']:
        advice = ('The kernel has not finished the write (a VF held by a VM, or a PF driver busy resetting): '
                  'find what holds it, then re-run.')
    else:
        advice = ('Check the kernel log (dmesg) for the PF: the firmware may have SR-IOV off, the PF driver may '
                  'refuse the count, or the bus may lack room for the VFs (pci=realloc).')
    return failure_message('vfio_sriov', f, 'put back to their previous VF count and drivers_autoprobe', [advice])


def run_sriov(params, fs, check_mode=False, bus=PCI, clock=time.monotonic, sleep=time.sleep):
    """Validate, lock, plan, then apply or just show.  Returns the result or raises SriovFailed /
    RequestError.  ``params``: pfs, force, timeout, wait_timeout, lock_file, lock_timeout."""
    items = parse_pfs(params['pfs'], bus)  # bad input fails here, before anything is read
    if check_mode:
        result = _plan_and_apply(params, fs, items, bus, True, clock, sleep)
    else:
        result = under_host_lock(params, 'vfio_sriov', SriovFailed,
                                 lambda: _plan_and_apply(params, fs, items, bus, False, clock, sleep))
    # what the role persists for the boot (desired.py reads it back): the PFs as validated
    result['desired'] = {'sriov': [dict(p) for p in items]}
    return result


def _plan_and_apply(params, fs, items, bus, check_mode, clock, sleep):
    plan = plan_sriov(fs, items, force=params.get('force', False), bus=bus)
    if plan['errors']:
        raise SriovFailed('vfio_sriov refused before changing anything:\n- ' + '\n- '.join(plan['errors']),
                          {'pfs': _report(plan), 'errors': plan['errors']})
    result = {'changed': plan['changed'], 'diff': diff_of(plan)}
    if check_mode or not plan['changed']:
        result['pfs'] = _report(plan)
        return result
    executor = SriovExecutor(fs, bus, timeout=params['timeout'], wait_timeout=params['wait_timeout'],
                             clock=clock, sleep=sleep)
    changed, failure = executor.apply(plan)
    result.update(changed=changed, pfs=_report(plan))
    if failure:
        result['failure'] = failure
        raise SriovFailed(sriov_failure_message(failure), result)
    return result

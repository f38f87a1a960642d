# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_bind from parameters to result: validate, lock, plan, then apply or just show."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import desired_devices
from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import (
    EngineFailed, Executor, failure_message, show, under_host_lock)
from ansible_collections.hypervisor.vfio.plugins.module_utils.journal import (
    DEFAULT_JOURNAL, Journal, JournalError, recovery_plan)
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import BUSES
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import Request, diff_of, parse_request
from ansible_collections.hypervisor.vfio.plugins.module_utils.snapshot import host_usage, plan_on_host

RESULT_KEYS = ('address', 'state', 'action', 'reason', 'module', 'driver_before', 'driver_after',
               'override_before', 'override_after', 'candidates', 'ambiguous', 'iommu_group', 'vendor',
               'device', 'guards', 'forced', 'warnings', 'item', 'result', 'settings')


class BindFailed(EngineFailed):
    """The task fails; ``result`` carries what is known (plan, per-device outcome)."""


def _report(plan, applied=None):
    """The plan's entries as result rows, with what the executor found (applied) where it ran."""
    out = []
    outcomes = applied.outcomes if applied else {}
    extra = applied.device_warnings if applied else {}
    for e in plan.devices:
        row = dict((k, list(v) if isinstance(v, tuple) else v) for k, v in e._asdict().items() if k in RESULT_KEYS)
        row['candidates'] = [dict(c) for c in e.candidates]
        row['warnings'] = list(e.warnings) + list(extra.get(e.address, ()))
        row['settings'] = [{'attribute': a, 'before': b, 'after': v} for a, b, v in e.settings]
        o = outcomes.get(e.address)
        if o is not None:
            row.update(result=o.result, driver_after=o.driver_after, override_after=o.override_after)
        else:
            row['result'] = 'planned' if e.action != 'none' or e.settings else 'unchanged'
        out.append(row)
    return out


def modprobe_args(host):
    """modprobe's -d for a modules_dir that is not /lib/modules (modprobe loads into the running
    kernel only: the plan refuses a kernel_release that is not the running one before this)."""
    args = []
    if host.modules_dir.rstrip('/') != '/lib/modules' and host.modules_dir.rstrip('/').endswith('/lib/modules'):
        args += ['-d', host.modules_dir.rstrip('/')[:-len('/lib/modules')]]
    return args


def run_bind(params, host, run, check_mode=False, bus_name='pci', may_load_modules=None):
    """Do the whole job; return the module result or raise BindFailed / RequestError.

    ``run`` executes argv lists (modprobe).  modprobe acts on the kernel running here, so by
    default it is used only when sysfs_path is this kernel's /sys; a fake tree's missing module
    is then an error, never a real module load (``may_load_modules`` overrides, for a fake kernel).
    """
    if may_load_modules is None:
        may_load_modules = os.path.realpath(host.fs.sysfs_path) == '/sys'
    bus = BUSES[bus_name]
    items = parse_request(params, bus)  # bad input fails here, before anything is read
    # what the plan read of the host ('snapshot'), while nothing has been written since
    seen = {}

    def job():
        # a run killed half-way is repaired first, then the facts are read, all under the lock:
        # no other run moves a device in between.  A refused or failed call still shows the host
        # as it left it (the role, when the IOMMU is off, goes on to the boot loader with these facts)
        try:
            recovery = recover_interrupted(params, host, bus, run, check_mode=check_mode)
            return _with_facts(params, host, bus, seen, _with_recovery(recovery, lambda: _plan_and_apply(
                params, host, run, items, bus, check_mode, may_load_modules, seen)))
        except BindFailed as e:
            _with_facts(params, host, bus, seen, e.result)
            raise
    return job() if check_mode else under_host_lock(params, 'vfio_bind', BindFailed, job)


def _with_facts(params, host, bus, seen, result):
    """return_facts: the vfio_facts of the host after the call, so that a caller can verify and
    report without another module run.  After a write they are a fresh scan of sysfs by the
    facts collector (not the executor's own bookkeeping); on a call that wrote nothing (a re-run,
    check mode, a refusal) the plan's reading of the host, made a moment before under the same
    lock, is the state after the call, and the facts are made from it (the same facts)."""
    if params.get('return_facts'):
        # imported here: facts.py and bootloader.py are compiled only for a call that returns facts
        # (AnsiballZ compiles every imported module_utils file on every run)
        from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts
        result['ansible_facts'] = {'vfio': collect_facts(host, bus, snapshot=seen.get('snapshot'))}
    return result


def _plan_and_apply(params, host, run, items, bus, check_mode, may_load_modules, seen):
    seen['snapshot'], plan = plan_on_host(host, bus, Request(items, params['iommu_group'], params['force']))
    running = host.fs.read_proc('sys/kernel/osrelease')
    running = running.strip() if running else host.kernel_release
    if plan.errors:
        raise BindFailed('vfio_bind refused before changing anything:\n- ' + '\n- '.join(plan.errors),
                         {'devices': _report(plan), 'errors': list(plan.errors)})
    rows = _report(plan)
    result = {'changed': plan.changed, 'diff': diff_of(plan), 'warnings_list': _warnings(plan, host),
              'modules_loaded': [], 'desired': {'devices': desired_devices(items, rows)}}
    if check_mode or not plan.changed:
        result['devices'] = rows
        return result
    if host.kernel_release != running:
        raise BindFailed('vfio_bind acts on the running kernel %s; kernel_release=%s is for inspection with '
                         'vfio_facts only' % (running, host.kernel_release), {'devices': _report(plan)})
    seen['snapshot'] = None  # the executor writes: the facts are read again after it
    executor = Executor(host.fs, bus, run, timeout=params['timeout'], modprobe_args=modprobe_args(host),
                        may_load=may_load_modules, journal=Journal(journal_path(params)))
    try:
        applied = executor.apply(plan)
    finally:
        host.fs.close()  # the writer process of the bounded writes
    result.update(changed=applied.changed, devices=_report(plan, applied), modules_loaded=applied.loaded,
                  diff=diff_of(plan, applied.outcomes))
    result['warnings_list'] = _warnings(plan, host, applied) + applied.warnings  # the executor's own
    if applied.failure:
        result['failure'] = applied.failure
        raise BindFailed(_failure_message(applied.failure), result)
    return result


def _warnings(plan, host, applied=None):
    extra = applied.device_warnings if applied else {}
    return [w for e in plan.devices for w in list(e.warnings) + list(extra.get(e.address, ()))] + host.warnings()


def _failure_message(f):
    if f['device'] == 'journal':
        advice = ['No device was touched. Make journal_file a writable path in a root-only directory, then re-run.']
    elif f['device'].startswith('module '):
        advice = ['No device was touched. Check that the module is installed for the running kernel (modinfo), '
                  'not blacklisted in modprobe.d, and loads by hand (modprobe -v).']
    elif f['pending']:
        advice = ['The device is probably held by a VM or another VFIO user: stop it, then re-run; the run after '
                  'that converges.']
    else:
        advice = []
    if f.get('journal_kept'):
        advice.append('The journal %s is kept: the next run puts these devices back on their recorded driver '
                      'first.' % f['journal_kept'])
    else:
        advice.append('Check the kernel log (dmesg) for the device, fix the cause (IOMMU enabled? driver probe '
                      'error?) or pin another driver with driver:, then re-run.')
    return failure_message('vfio_bind', f, 'rolled back to their previous driver and driver_override', advice)


# -- the intent journal of an interrupted run --------------------------------------------
def journal_path(params):
    return params.get('journal_file') or DEFAULT_JOURNAL


def recover_interrupted(params, host, bus, run, check_mode=False):
    """Repair what a run killed between two kernel steps left, before anything is planned.

    Call it under the host lock.  Returns None when no journal is left, else a report:
    ``path``, ``pid`` and ``started`` of the interrupted run, ``devices`` (per device its
    ``action``, the last ``step`` recorded, the ``decision`` and the state found) and
    ``problems``.  Decisions (journal.recovery_plan): a device already on the run's target
    is kept (completed), one still as it was is left alone, anything else is rolled back to
    the driver and override the journal recorded.  A rollback that would take a device off
    VFIO while a process holds its /dev/vfio file is refused unless ``force``.  The journal
    is removed once every device is sane; otherwise it stays and BindFailed is raised, so
    no new plan is built on a device in an unknown state.  In check mode nothing is written.
    """
    journal = Journal(journal_path(params))
    try:
        record = journal.load()
    except JournalError as e:
        raise BindFailed('vfio_bind: %s; nothing was changed' % e, {})
    if record is None:
        return None
    executor = Executor(host.fs, bus, run, timeout=params.get('timeout', 10), may_load=False)
    usage = host_usage(host.fs)

    def current_of(addr):
        if not host.fs.isdir(bus.device_dir(addr)):
            return None
        return executor.current(addr)

    report = {'path': journal.path, 'pid': record.get('pid'), 'started': record.get('started'),
              'devices': [], 'problems': []}
    for d, decision in recovery_plan(record, current_of):
        found = current_of(d['address']) or (None, None)
        row = {'address': d['address'], 'action': d['action'], 'step': d['step'], 'decision': decision,
               'driver_before': d['driver_before'], 'override_before': d['override_before'],
               'driver_found': found[0], 'override_found': found[1]}
        report['devices'].append(row)
        if decision != 'rollback' or check_mode:
            continue
        holders = []
        if found[0] and found[0] != d['driver_before']:
            rec = devs.read_device(host.fs, bus, d['address'])
            if devs.is_vfio_driver(rec, set(devs.loaded_vfio_modules(host.fs))):
                holders = usage.vfio_reasons(rec)
        if holders and not params.get('force'):
            row['decision'] = 'rollback_refused'
            report['problems'].append('%s: not rolled back to %s: %s' % (
                d['address'], show(d['driver_before']), '; '.join(holders)))
            continue
        problem = executor.rollback(d)
        row['driver_found'], row['override_found'] = current_of(d['address']) or (None, None)
        if problem:
            row['decision'] = 'rollback_failed'
            report['problems'].append(problem)
        else:
            row['decision'] = 'rolled_back'
    if report['problems']:
        raise BindFailed(recovery_message(report) + '\nFix that (the kernel log names the cause), or put the '
                         'devices right by hand and remove %s; then re-run.' % journal.path, {'journal': report})
    if not check_mode:
        try:
            journal.remove()
        except JournalError as e:
            raise BindFailed('vfio_bind: %s' % e, {'journal': report})
    return report


def recovery_message(report):
    rows = ['%s %s (last step begun: %s): %s' % (r['address'], r['action'], r['step'], r['decision'].replace('_', ' '))
            for r in report['devices']]
    msg = ('vfio_bind: a run interrupted before it finished (pid %s, started %s) left the journal %s: %s'
           % (report['pid'], report['started'], report['path'], '; '.join(rows) or 'no device'))
    if report['problems']:
        msg += '\nNOT repaired: ' + '; '.join(report['problems'])
    return msg


def _with_recovery(recovery, plan_and_apply):
    """The result of the run, with the repaired journal reported (result and warning)."""
    try:
        result = plan_and_apply()
    except BindFailed as e:
        if recovery is not None:
            e.result['journal'] = recovery
        raise
    if recovery is not None:
        result['journal'] = recovery
        result['warnings_list'].insert(0, recovery_message(recovery))
        result['changed'] = result['changed'] or any(r['decision'] == 'rolled_back' for r in recovery['devices'])
    return result

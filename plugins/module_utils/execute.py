# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Doing: carry out a plan (steps 5-8), verify each device, roll back on failure.

Order of work: every module is loaded and checked first (no device is touched
yet), then each device in turn: driver_override, unbind, bind, re-read the
``driver`` link.  When a device does not end where the plan says, it and every
device this call already changed are put back on their previous driver and
override, and the failure names the device, the step and the kernel's words.

The plan (plan.Plan) is never edited: ``Executor.apply`` returns an :class:`Applied`
value with an :class:`Outcome` per device it reached.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import time
from collections import namedtuple

from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.journal import DONE, JournalError
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import KernelError, WriteTimeout


# What happened to one device of a plan: result is 'changed', 'unchanged', 'pending',
# 'rolled_back' or 'rollback_failed'; driver_after/override_after as read from the kernel.
Outcome = namedtuple('Outcome', 'address result driver_after override_after')
# What apply() did: changed, failure (a dict, or None), outcomes {address: Outcome} of the
# devices it reached, drivers {module: the driver name it registers}, loaded (the modules it
# loaded), device_warnings {address: (warning,)} beyond the plan's own, warnings of the call.
Applied = namedtuple('Applied', 'changed failure outcomes drivers loaded device_warnings warnings')


def show(value):
    """A driver or driver_override for a message: never Python's None."""
    return '(none)' if value is None else value


class StepFailed(Exception):
    def __init__(self, address, step, detail, pending=False):
        super(StepFailed, self).__init__('%s: %s failed: %s' % (address, step, detail))
        self.address = address
        self.step = step
        self.detail = detail
        # the kernel has not finished the write (a blocked unbind): the device cannot be rolled back now
        self.pending = pending


class EngineFailed(Exception):
    """A run of the engine fails; ``result`` carries what is known (plan, per-item outcome)."""

    def __init__(self, msg, result):
        super(EngineFailed, self).__init__(msg)
        self.result = result


def failure_message(who, f, restored, advice):
    """The message of a run that failed after a write: ``who: device: step failed: error``, the
    kernel's log, what was put back (``restored`` says how), what was not, then ``advice`` lines."""
    msg = '%s: %s: %s failed: %s' % (who, f['device'], f['step'], f['error'])
    if f.get('kernel_log'):
        msg += '\nkernel: ' + ' | '.join(f['kernel_log'])
    if f['rolled_back']:
        msg += '\n%s: %s' % (restored, ', '.join(f['rolled_back']))
    if f['rollback_problems']:
        msg += '\nNOT restored: ' + '; '.join(f['rollback_problems'])
    return msg + ''.join('\n' + line for line in advice)


class LockTimeout(Exception):
    pass


class HostLock:
    """Serializes runs on one host (flock on a root-owned file, never through a symlink)."""

    def __init__(self, path, timeout):
        self.path = path
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        flags = os.O_RDWR | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
        self.fd = os.open(self.path, flags, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except (IOError, OSError) as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                os.close(self.fd)
                self.fd = None
                raise LockTimeout('another vfio_bind run holds %s for more than %ss' % (self.path, self.timeout))
            time.sleep(0.1)

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def under_host_lock(params, who, failed, work):
    """``work()`` under the host lock (params lock_file, lock_timeout); a lock that times out or
    cannot be opened raises ``failed(message, {})`` naming ``who`` and what to do."""
    try:
        with HostLock(params['lock_file'], params['lock_timeout']):
            return work()
    except LockTimeout as e:
        raise failed('%s: %s; wait for it to finish (or find a stuck run) and retry' % (who, e), {})
    except (IOError, OSError) as e:
        if getattr(e, 'filename', None) == params['lock_file']:
            raise failed('%s: cannot open lock file %s: %s (set lock_file to a writable path)'
                         % (who, params['lock_file'], e.strerror), {})
        raise


class Executor:
    """Applies a plan through the KernelFS; ``run`` executes argv lists (no shell)."""

    def __init__(self, fs, bus, run, timeout=10, modprobe_args=(), may_load=True, journal=None):
        self.fs = fs
        # the intent journal (journal.Journal): each step is on disk before the kernel sees it
        self.journal = journal
        self.bus = bus
        self.run = run
        # modprobe acts on the kernel running here: only when sysfs_path is that kernel's
        self.may_load = may_load
        self.timeout = timeout
        self.modprobe_args = list(modprobe_args)
        self.loaded = []
        self.warnings = []

    # -- step 5: modules -------------------------------------------------------
    def load_module(self, module, use_blacklist=False):
        """modprobe a module by name (never an alias) and confirm the kernel has it."""
        if self.fs.isdir('module/' + module):
            return
        if not self.may_load:
            raise StepFailed('module ' + module, 'modprobe', 'module %s is not loaded in %s, and vfio_bind runs '
                             'modprobe only when sysfs_path is the running kernel\'s /sys' % (
                                 module, self.fs.sys('module')))
        argv = ['modprobe'] + self.modprobe_args + (['-b'] if use_blacklist else []) + ['--', module]
        rc, out, err = self.run(argv)
        if rc != 0:
            raise StepFailed('module ' + module, 'modprobe', '%s exited %d: %s' % (
                ' '.join(argv), rc, (err or out or '').strip() or 'no output'))
        if not self.fs.isdir('module/' + module):
            raise StepFailed('module ' + module, 'modprobe', 'modprobe exited 0 but %s is not loaded (no %s): '
                             'it is blacklisted or replaced by an install command in modprobe.d'
                             % (module, self.fs.sys('module/' + module)))
        self.loaded.append(module)

    def prepare(self, plan):
        """Load every module the plan needs and learn the real driver names:
        ({module: driver}, {address: [warning]})."""
        drivers = {}
        warnings = {}
        for module in plan.modules:
            self.load_module(module)
            driver = devs.module_driver(self.fs, self.bus, module)
            if not driver:
                raise StepFailed('module ' + module, 'find driver', 'module %s is loaded but registers no %s driver '
                                 '(nothing in %s); is it a VFIO driver?' % (
                                     module, self.bus.name, self.fs.sys('module/%s/drivers' % module)))
            drivers[module] = driver
        for e in plan.devices:
            if e.action == 'restore':
                for module in e.host_modules:
                    try:
                        self.load_module(module, use_blacklist=True)
                    except StepFailed as exc:
                        warnings.setdefault(e.address, []).append(str(exc))
        return drivers, warnings

    @staticmethod
    def target(e, drivers):
        """The entry with the driver name the loaded module registers (a new value)."""
        driver = drivers.get(e.module) if e.action in ('bind', 'rebind') else None
        if not driver:
            return e
        return e._replace(driver=driver, driver_known=True, driver_after=driver, override_after=driver)

    # -- steps 6-8: one kernel operation each ---------------------------------
    def _dev(self, address, attr):
        return '%s/%s' % (self.bus.device_dir(address), attr)

    def current(self, address):
        drv = self.fs.link_name(self._dev(address, 'driver'))
        override = self.fs.read_optional(self._dev(address, 'driver_override'))
        return drv, (None if override in (None, '', '(null)') else override)

    def set_override(self, address, driver):
        # an unset override is cleared by writing a newline (an empty write is no syscall);
        # bounded too: the kernel takes the device lock, which a blocked unbind holds
        self.fs.write(self._dev(address, 'driver_override'), driver if driver else '\n', timeout=self.timeout)

    def unbind(self, address, driver):
        self.fs.write('%s/unbind' % self.bus.driver_dir(driver), address, timeout=self.timeout)

    def bind(self, address, driver):
        self.fs.write('%s/bind' % self.bus.driver_dir(driver), address, timeout=self.timeout)

    def probe(self, address):
        self.fs.write(self.bus.drivers_probe(), address, timeout=self.timeout)

    def _note(self, address, step):
        """Record in the journal the step a device is about to take (a failure is a failed step)."""
        if self.journal is None:
            return
        try:
            self.journal.step(address, step)
        except JournalError as e:
            raise StepFailed(address, 'record %s in the journal' % step, str(e))

    def _step(self, address, step, func, *args):
        self._note(address, step)
        try:
            func(*args)
        except WriteTimeout as e:
            raise StepFailed(address, step, str(e), pending=True)
        except KernelError as e:
            raise StepFailed(address, step, str(e))

    # -- per action ------------------------------------------------------------
    def _to_vfio(self, e, warnings):
        addr = e.address
        target = e.driver
        self._step(addr, 'set driver_override to %s' % target, self.set_override, addr, target)
        drv = self.fs.link_name(self._dev(addr, 'driver'))
        if drv and drv != target:
            self._step(addr, 'unbind from %s' % drv, self.unbind, addr, drv)
            drv = self.fs.link_name(self._dev(addr, 'driver'))
        if drv != target:
            # explicit bind reports the probe's errno; drivers_probe would hide it
            self._step(addr, 'bind to %s' % target, self.bind, addr, target)
        return self._verify(addr, 'verify binding', target, target)

    def _to_override(self, e, warnings):
        self._step(e.address, 'set driver_override to %s' % e.driver, self.set_override, e.address, e.driver)
        return self._verify(e.address, 'verify driver_override', e.driver, e.driver)

    def _to_host(self, e, warnings):
        addr = e.address
        self._step(addr, 'clear driver_override', self.set_override, addr, None)
        drv = self.fs.link_name(self._dev(addr, 'driver'))
        if drv:
            self._step(addr, 'unbind from %s' % drv, self.unbind, addr, drv)
        self._step(addr, 'probe host drivers', self.probe, addr)
        drv, override = self.current(addr)
        if override is not None:
            raise StepFailed(addr, 'verify', 'driver_override still reads %s' % override)
        if drv and drv == e.driver_before:
            raise StepFailed(addr, 'verify', 'still on VFIO driver %s after the re-probe' % drv)
        if not drv:
            note = ('no host driver bound it; kernel has none loaded that matches %s' % ', '.join(e.host_modules)
                    if e.host_modules else 'the kernel has no host driver for it')
            warnings.append('%s left unbound: %s' % (addr, note))
        return drv, override

    def _clear_override(self, e, warnings):
        self._step(e.address, 'clear driver_override', self.set_override, e.address, None)
        return self._verify(e.address, 'verify driver_override', e.driver_before, None)

    def _verify(self, address, step, driver, override):
        drv, ovr = self.current(address)
        if drv != driver or ovr != override:
            raise StepFailed(address, step, 'expected driver %s and driver_override %s, found driver %s and '
                             'driver_override %s' % (show(driver), show(override), show(drv), show(ovr)))
        return drv, ovr

    def _write_settings(self, e):
        """The reset and power settings of the entry, each written then read back."""
        for attr, dummy, value in e.settings:
            rel = self._dev(e.address, attr)
            self._step(e.address, 'set %s to %s' % (attr, value), self.fs.write, rel, value, self.timeout)
            now = self.fs.read_optional(rel)
            if ' '.join((now or '').split()) != value:
                raise StepFailed(e.address, 'verify %s' % attr, 'wrote %s but %s reads %s' % (
                    value, self.fs.sys(rel), show(now)))

    ACTIONS = {'bind': '_to_vfio', 'rebind': '_to_vfio', 'override': '_to_override',
               'restore': '_to_host', 'clear_override': '_clear_override'}

    # -- rollback -------------------------------------------------------------
    def rollback(self, e):
        """Put a device back on its previous driver and override; return a problem or None.
        ``e``: a mapping with address, driver_before and override_before (a journal record,
        an Entry's ``_asdict()``)."""
        addr = e['address']
        want_drv, want_ovr = e['driver_before'], e['override_before']
        if not self.fs.isdir(self.bus.device_dir(addr)):
            return '%s vanished from %s (hot-unplugged?): nothing to roll back' % (
                addr, self.fs.sys(self.bus.devices_dir()))
        try:
            for attr, before, dummy in reversed(e.get('settings') or ()):
                rel = self._dev(addr, attr)
                if ' '.join((self.fs.read_optional(rel) or '').split()) != before:
                    self.fs.write(rel, before, timeout=self.timeout)
            drv, ovr = self.current(addr)
            if ovr != want_ovr:
                self.set_override(addr, want_ovr)
            if drv != want_drv:
                if drv:
                    self.unbind(addr, drv)
                if want_drv:
                    try:
                        self.bind(addr, want_drv)
                    except KernelError:
                        self.probe(addr)
            drv, ovr = self.current(addr)
        except KernelError as exc:
            return 'rollback of %s failed: %s' % (addr, exc)
        if (drv, ovr) != (want_drv, want_ovr):
            return 'rollback of %s ended on driver %s / driver_override %s instead of %s / %s' % (
                addr, show(drv), show(ovr), show(want_drv), show(want_ovr))
        return None

    # -- the whole plan ----------------------------------------------------------
    def apply(self, plan):
        """Apply a plan.Plan; return an Applied (the plan is left as it is)."""
        outcomes = {}
        try:
            drivers, warnings = self.prepare(plan)
        except StepFailed as exc:
            return self._applied(False, {'device': exc.address, 'step': exc.step, 'error': exc.detail,
                                         'kernel_log': [], 'pending': False, 'rolled_back': [],
                                         'rollback_problems': []}, outcomes, {})
        targets = [self.target(e, drivers) for e in plan.devices]
        if self.journal is not None:
            try:
                self.journal.begin({'devices': [t._asdict() for t in targets]})
            except JournalError as exc:
                return self._applied(False, {'device': 'journal', 'step': 'record the transaction', 'error': str(exc),
                                             'kernel_log': [], 'pending': False, 'rolled_back': [],
                                             'rollback_problems': []}, outcomes, drivers, warnings)
        done = []
        # one position in the kernel log for the whole call: read only when a step fails
        cursor = self.fs.kernel_log_cursor()
        try:
            for e in targets:
                method = self.ACTIONS.get(e.action)
                if method is None and not e.settings:
                    outcomes[e.address] = Outcome(e.address, 'unchanged', e.driver_after, e.override_after)
                    continue
                mine = warnings.setdefault(e.address, [])
                try:
                    # each action ends by reading the device back: (driver, driver_override)
                    drv, ovr = getattr(self, method)(e, mine) if method else self.current(e.address)
                    self._write_settings(e)
                except StepFailed as exc:
                    log = self.fs.kernel_log_since(cursor, e.address)
                    failure = self._fail(e, exc, log, done, outcomes)
                    self._close_journal(failure)
                    return self._applied(True, failure, outcomes, drivers, warnings)
                outcomes[e.address] = Outcome(e.address, 'changed', drv, ovr)
                done.append(e)
                if self.journal is not None:
                    try:
                        self.journal.step(e.address, DONE, driver_after=drv, override_after=ovr)
                    except JournalError as exc:
                        failure = self._fail(e, StepFailed(e.address, 'record done in the journal', str(exc)),
                                             [], done[:-1], outcomes)
                        self._close_journal(failure)
                        return self._applied(True, failure, outcomes, drivers, warnings)
            if self.journal is not None:
                try:
                    self.journal.flush()
                except JournalError as exc:
                    self.warnings.append(str(exc))  # every device is verified: only the record is late
        finally:
            self.fs.close_cursor(cursor)
        self._close_journal(None)
        return self._applied(bool(done), None, outcomes, drivers, warnings)

    def _applied(self, changed, failure, outcomes, drivers, device_warnings=None):
        return Applied(changed=changed, failure=failure, outcomes=outcomes, drivers=drivers,
                       loaded=list(self.loaded), warnings=list(self.warnings),
                       device_warnings=dict((a, tuple(w)) for a, w in (device_warnings or {}).items() if w))

    def _close_journal(self, failure):
        """The run is over and reported: the journal goes, unless a device is left in a state only
        the journal can explain (a write still pending in the kernel, a failed rollback): then the
        next run repairs it first."""
        if self.journal is None:
            return
        if failure and (failure['pending'] or failure['rollback_problems']):
            failure['journal_kept'] = self.journal.path
            return
        try:
            self.journal.finish()
        except JournalError as exc:
            self.warnings.append(str(exc))

    def _fail(self, failed, exc, log, done, outcomes):
        """Roll back the failed device and those done before it; their outcomes are recorded."""
        problems = []
        rolled = []
        for e in [failed] + list(reversed(done)):
            if e is failed and exc.pending:
                # no rollback begins: the journal keeps the step the kernel is still in
                problems.append('%s was not rolled back: a write is still pending in the kernel' % e.address)
                result = 'pending'
            else:
                if self.journal is not None:
                    try:
                        self.journal.step(e.address, 'rollback')
                    except JournalError:
                        pass  # the rollback matters more than its record
                problem = self.rollback(e._asdict())
                result = 'rollback_failed' if problem else 'rolled_back'
                if problem:
                    problems.append(problem)
                else:
                    rolled.append(e.address)
            drv, ovr = self.current(e.address)
            outcomes[e.address] = Outcome(e.address, result, drv, ovr)
        return {'device': exc.address, 'step': exc.step, 'error': exc.detail, 'kernel_log': log,
                'pending': exc.pending, 'rolled_back': rolled, 'rollback_problems': problems}

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The intent journal: what a run is doing to which device, on disk before each kernel step.

A run killed between two kernel steps (SIGKILL from a timeout, the OOM killer, a power cut
before a reboot clears /run) would otherwise leave a device with its ``driver_override``
set and no driver, with nothing recording where it came from.  The executor writes the
transaction (every device's driver and override before and after) before the first device
write, records each step before doing it (a device's ``done`` rides on the next record when
it changes no decision of the next run: :meth:`Journal.step`), and removes the file when the run is over
(succeeded, or failed and rolled back and reported).  The next run finds a leftover journal
and repairs before it plans (see :func:`recovery_plan` and ``bind.recover_interrupted``).

The file is root-only (directory 0700, file 0600, never followed through a symlink) and
replaced atomically: a temporary file in the same directory is written, fsync'd, renamed
over the journal, and the directory is fsync'd.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import json
import os
import stat
import time

from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import read_fd

DEFAULT_JOURNAL = '/run/hypervisor-vfio/journal.json'
VERSION = 1
# What the journal keeps of each plan entry.
ENTRY_KEYS = ('address', 'action', 'driver', 'driver_before', 'override_before', 'driver_after',
              'override_after')
# The last step of a device: it was verified on its target.
DONE = 'done'


class JournalError(Exception):
    """The journal cannot be written or trusted; the run must not go on."""


def fsync_dir(path):
    """Make a rename or an unlink in folder ``path`` durable (best effort: a folder that cannot be
    opened or synced is left as it is)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_owner(st, path, what):
    """Only a file of our own user, writable by nobody else, is trusted."""
    if st.st_uid != os.geteuid():
        raise JournalError('%s %s belongs to uid %d, not to this user (uid %d): not trusted; inspect and '
                           'remove it' % (what, path, st.st_uid, os.geteuid()))
    if st.st_mode & 0o022:
        raise JournalError('%s %s is writable by group or others (mode %o): not trusted; inspect and remove '
                           'it' % (what, path, stat.S_IMODE(st.st_mode)))


class Journal:
    """One journal file.  ``record`` is the transaction being written (None when idle)."""

    def __init__(self, path):
        self.path = path
        self.dir = os.path.dirname(path) or '.'
        self.record = None
        self.writes = 0
        # a change of the record not on disk yet (a deferred ``done``): the next commit writes it
        self.dirty = False

    # -- reading -----------------------------------------------------------------
    def load(self):
        """The leftover record of an interrupted run, or None when there is none."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            if e.errno == errno.ELOOP:
                raise JournalError('journal %s is a symbolic link: not trusted; inspect and remove it' % self.path)
            raise JournalError('cannot read journal %s: %s' % (self.path, os.strerror(e.errno or 0)))
        try:
            _check_owner(os.fstat(fd), self.path, 'journal')
            data = read_fd(fd)
        finally:
            os.close(fd)
        try:
            record = json.loads(data.decode('utf-8'))
        except ValueError as e:
            raise JournalError('journal %s of an interrupted run is unreadable (%s); check the devices it names by '
                               'hand (driver and driver_override), then remove it' % (self.path, e))
        if not isinstance(record, dict) or record.get('version') != VERSION or \
                not isinstance(record.get('devices'), list):
            raise JournalError('journal %s is not a vfio_bind journal of version %d; inspect and remove it'
                               % (self.path, VERSION))
        for d in record['devices']:
            if not isinstance(d, dict) or not all(k in d for k in ENTRY_KEYS + ('step',)):
                raise JournalError('journal %s has a malformed device entry %r; inspect and remove it'
                                   % (self.path, d))
        return record

    # -- writing -----------------------------------------------------------------
    def _ensure_dir(self):
        try:
            st = os.lstat(self.dir)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise JournalError('cannot use journal directory %s: %s' % (self.dir, os.strerror(e.errno or 0)))
            try:
                os.makedirs(self.dir, 0o700)
            except OSError as e2:
                if e2.errno != errno.EEXIST:
                    raise JournalError('cannot create journal directory %s: %s (set journal_file to a writable '
                                       'path)' % (self.dir, os.strerror(e2.errno or 0)))
            st = os.lstat(self.dir)
        if not stat.S_ISDIR(st.st_mode):
            raise JournalError('journal directory %s is not a directory (a symbolic link?): not trusted' % self.dir)
        if st.st_uid == os.geteuid():
            _check_owner(st, self.dir, 'journal directory')
        elif st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            raise JournalError('journal directory %s is world-writable: not trusted' % self.dir)

    def _commit(self):
        """Replace the journal atomically with the current record."""
        # compact: json's C encoder (indent= takes its pure-Python one, a cost per record that
        # grows with the devices of the transaction)
        data = json.dumps(self.record, sort_keys=True, separators=(',', ':')).encode('utf-8')
        tmp = '%s.%d.tmp' % (self.path, os.getpid())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
        try:
            if not self.writes:
                try:
                    os.unlink(tmp)  # a temporary file of a killed run with our pid
                except OSError:
                    pass
            fd = os.open(tmp, flags, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self.path)
        except OSError as e:
            try:
                os.unlink(tmp)  # O_EXCL: the next commit needs the name free
            except OSError:
                pass
            raise JournalError('cannot write journal %s: %s (set journal_file to a writable path)'
                               % (self.path, os.strerror(e.errno or 0)))
        fsync_dir(self.dir)
        self.writes += 1
        self.dirty = False

    def begin(self, plan, context=None):
        """Record the transaction (every writing entry) before its first device write."""
        self._ensure_dir()
        devices = []
        for e in plan['devices']:
            if e.get('action') in (None, 'none'):
                continue
            d = dict((k, e.get(k)) for k in ENTRY_KEYS)
            d['step'] = 'planned'
            devices.append(d)
        started = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        self.record = {'version': VERSION, 'pid': os.getpid(), 'started': started, 'devices': devices}
        self.record.update(context or {})
        self._commit()

    def step(self, address, step, **changes):
        """Record the step a device is about to go through (or has reached, for DONE).

        A step is on disk before this returns, with one exception that changes no decision of
        the next run: a DONE whose outcome (``driver_after``/``override_after``) the rules for
        an unfinished step already recognise as reached (:func:`reached_target`) waits for the
        next commit (the next device's first step, or :meth:`flush`).  Killed before that
        commit, the next run keeps the device all the same; only a DONE that decides otherwise
        (a restore that left the device unbound) is written at once.
        """
        if self.record is None:
            return
        defer = False
        for d in self.record['devices']:
            if d['address'] == address:
                if step == DONE and d['step'] != DONE:
                    defer = reached_target(d, (changes.get('driver_after'), changes.get('override_after')))
                d['step'] = step
                d.update(changes)
        if defer:
            self.dirty = True
        else:
            self._commit()

    def flush(self):
        """Write a deferred change (the last device's DONE) before the run goes on."""
        if self.record is not None and self.dirty:
            self._commit()

    def finish(self):
        """The run is over (and reported): remove the journal."""
        self.record = None
        self.remove()

    def remove(self):
        """Remove the journal and the temporary files of killed runs (``<journal>.<pid>.tmp``)."""
        base = os.path.basename(self.path)
        try:
            names = os.listdir(self.dir)
        except OSError:
            names = []
        stale = [n for n in names if n.startswith(base + '.') and n.endswith('.tmp')
                 and n[len(base) + 1:-4].isdigit()]
        for name in [base] + stale:
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise JournalError('cannot remove journal %s: %s' % (os.path.join(self.dir, name),
                                                                         os.strerror(e.errno or 0)))
        fsync_dir(self.dir)


def reached_target(d, current):
    """Whether a journaled device stands where its interrupted run meant to put it.

    ``current`` is its (driver, driver_override) now.  A device verified before the kill
    (step ``done``) counts; so does a VFIO binding whose driver and override both read the
    target (the kill fell between the bind and its verification), and a ``restore`` that a
    host driver took (an unbound device with no override may simply not have been probed yet).
    """
    drv, ovr = current
    if d['step'] == DONE:
        if d['action'] == 'restore':
            return ovr is None and drv != d['driver_before']
        return (drv, ovr) == (d['driver_after'], d['override_after'])
    if d['action'] in ('bind', 'rebind', 'override'):
        return drv is not None and (drv, ovr) == (d['driver'], d['driver'])
    if d['action'] == 'clear_override':
        return (drv, ovr) == (d['driver_before'], None)
    if d['action'] == 'restore':  # the probe is the last step: a host driver took it
        return ovr is None and drv is not None and drv != d['driver_before']
    return False


def recovery_plan(record, current_of):
    """What the next run does with each device of a leftover journal.

    Returns [(journal entry, decision)] with decision ``keep`` (already where the run meant
    it: completed), ``untouched`` (still as it was before: nothing to undo) or ``rollback``
    (anything else: back to the recorded driver and override, the safe default: the
    interrupted run's later steps, verification and IOMMU group checks never ran for it).
    ``current_of(address)`` returns (driver, override), or None when the device is gone.
    """
    out = []
    for d in record['devices']:
        current = current_of(d['address'])
        if current is None:
            out.append((d, 'gone'))
        elif current == (d['driver_before'], d['override_before']):
            out.append((d, 'untouched'))
        elif reached_target(d, current):
            out.append((d, 'keep'))
        else:
            out.append((d, 'rollback'))
    return out

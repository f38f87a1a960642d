# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio-passthrough: the engine on the host, without Ansible (boot re-apply and console).

The role installs plugins/module_utils on the host and a small entry script that calls
:func:`main`.  It reads the desired state the role persisted (desired.py) and runs the same
cores as the modules: vfio_sriov (sriov.run_sriov) and vfio_bind (bind.run_bind), so the
guards, bounded writes, host lock, rollback and variant resolution against the kernel that
actually runs are the modules' own.  Standard library only (Python 3.9+).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import subprocess
import sys

from ansible_collections.hypervisor.vfio.plugins.module_utils import desired as ds
from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import (
    DEFAULT_MODPROBE_CONFIG_DIRS, normalize_module)
from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed, recovery_message, run_bind
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.journal import DEFAULT_JOURNAL
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI
from ansible_collections.hypervisor.vfio.plugins.module_utils.sriov import SriovFailed, read_pf, run_sriov

PROG = 'vfio-passthrough'
EXIT_OK = 0           # done, or nothing to do (status/plan: the kernel is as desired)
EXIT_FAILED = 1       # a step failed after a write: rolled back, or a write is still pending
EXIT_USAGE = 2        # bad arguments, or a state file that is missing or invalid
EXIT_REFUSED = 3      # refused before any write (a device or PF the engine will not touch)
EXIT_LOCKED = 4       # another run holds the host lock
EXIT_DIFFERS = 5      # status/plan: the kernel differs from the desired state
EXIT_SKIPPED = 6      # apply: done, but some devices were absent or changed and left alone

EPILOG = '''commands:
  status    the desired state next to the kernel's: driver, driver_override, VF count
  plan      what apply would do (read only: the modules' check mode)
  apply     bring the kernel to the desired state: VFs first, then bindings (what the boot unit runs)
  restore   give the devices of the desired state back to their host drivers (the state file stays:
            the next boot binds them again; run the role with passthrough_restore=true to undo that)
  kernel RELEASE [ADDRESS...]
            read only: whether an installed kernel (/lib/modules/RELEASE) ships the VFIO driver each
            device of the desired state would get when booting it (its pinned driver, or the variant
            resolved from that kernel's modules.alias); the role's kernel hook runs it for a new kernel

exit codes:
  0  done, or nothing to do             4  another run holds the lock
  1  a step failed (rolled back, or a   5  status/plan: the kernel differs from the desired state;
     write still pending in the kernel)    kernel: a device would get no VFIO driver from that kernel
                                        6  apply: done, but absent or changed devices were left alone
  2  bad usage or state file            3  refused before any write (in-use guard, IOMMU group...)
'''


class Output:
    def __init__(self, stream, as_json):
        self.stream = stream
        self.as_json = as_json
        self.doc = {}

    def line(self, text=''):
        if not self.as_json:
            self.stream.write(text + '\n')

    def put(self, key, value):
        self.doc[key] = value

    def close(self, code):
        if self.as_json:
            self.doc['exit_code'] = code
            self.stream.write(json.dumps(self.doc, indent=1, sort_keys=True) + '\n')
        self.stream.flush()
        return code


def run_command(argv, timeout=120):
    """modprobe for the executor: argv only, bounded."""
    try:
        # pylint: disable-next=ansible-bad-function  # no AnsibleModule here: the command runs without Ansible
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return 124, '', '%s did not end within %ss' % (' '.join(argv), timeout)
    except OSError as e:
        return 127, '', 'cannot run %s: %s' % (argv[0], e.strerror)
    return p.returncode, p.stdout, p.stderr


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description='Show and apply the VFIO bindings and SR-IOV VFs that the hypervisor.vfio.passthrough role '
                    'persisted, through the collection\'s engine: in-use guards, IOMMU group checks, bounded '
                    'sysfs writes, the host lock, rollback, and the VFIO variant resolved for the running kernel.')
    p.add_argument('command', choices=('status', 'plan', 'apply', 'restore', 'kernel'))
    p.add_argument('devices', nargs='*', metavar='ADDRESS',
                   help='act on these devices or PFs of the desired state only (default: all)')
    p.add_argument('--state', default=ds.DEFAULT_PATH, help='desired state file (default: %(default)s)')
    p.add_argument('--json', action='store_true', help='print one JSON document (the engine\'s results)')
    p.add_argument('--timeout', type=int, help='seconds each sysfs write may take (default: the state file\'s)')
    p.add_argument('--lock-timeout', type=int, help='seconds to wait for the host lock (default: the state file\'s)')
    p.add_argument('--lock-file', default='/run/hypervisor-vfio.lock', help='default: %(default)s')
    p.add_argument('--journal-file', default=DEFAULT_JOURNAL,
                   help='intent journal of a run in progress (default: %(default)s)')
    p.add_argument('--sysfs', default='/sys', help=argparse.SUPPRESS)
    p.add_argument('--procfs', default='/proc', help=argparse.SUPPRESS)
    p.add_argument('--modules-dir', default='/lib/modules', help=argparse.SUPPRESS)
    p.add_argument('--modprobe-config-dir', action='append', help=argparse.SUPPRESS)
    return p


class Cli:
    def __init__(self, args, out, fs=None, run=None):
        self.args = args
        self.out = out
        self.fs = fs
        self.run = run or run_command
        self.may_load = True if run is not None else None
        self.host_params = {'sysfs_path': args.sysfs, 'procfs_path': args.procfs, 'modules_dir': args.modules_dir,
                            'kernel_release': None, 'lock_file': args.lock_file,
                            'journal_file': args.journal_file,
                            'modprobe_config_dirs': args.modprobe_config_dir or list(DEFAULT_MODPROBE_CONFIG_DIRS)}

    # -- helpers ---------------------------------------------------------------
    def load(self):
        state = ds.select(ds.load_state(self.args.state), self.args.devices)
        for key, value in (('timeout', self.args.timeout), ('lock_timeout', self.args.lock_timeout)):
            if value is not None:
                if value < 1:
                    raise ds.StateError('--%s must be at least 1 second' % key.replace('_', '-'))
                state[key] = value
        return state

    def host(self):
        return HostContext(self.host_params, fs=self.fs)

    def bind(self, state, host, devices, check_mode, give_back=False):
        params = ds.bind_params(state, devices, self.host_params, give_back=give_back)
        return run_bind(params, host, self.run, check_mode=check_mode,
                        may_load_modules=self.may_load)

    def _skipped(self, skipped):
        for addr, why in skipped:
            self.out.line('%s: %s' % (addr, why))
        self.out.put('skipped', [{'address': a, 'reason': r} for a, r in skipped])

    def _devices(self, rows, planned):
        for r in rows:
            if r['action'] == 'none':
                self.out.line('%s: %s, as desired' % (r['address'], r['driver_after'] or 'no driver'))
                continue
            arrow = '%s -> %s' % (r['driver_before'] or 'no driver', r['driver_after'] or 'no driver')
            how = ', planned' if planned else ', ' + r['result']
            self.out.line('%s: %s (%s%s: %s)' % (r['address'], arrow, r['action'], how, r['reason']))
        for r in rows:
            for w in r.get('warnings') or []:
                self.out.line('warning: %s: %s' % (r['address'], w))

    def _run_warnings(self, result):
        """The run's warnings that no device row carries (_devices shows those): the journal of an
        interrupted run it repaired, the host's own (a blacklisted variant skipped...)."""
        shown = set(w for r in result.get('devices', []) for w in r.get('warnings') or [])
        for w in result.get('warnings_list') or []:
            if w not in shown:
                self.out.line('warning: ' + w)

    def _pfs(self, rows, planned):
        for r in rows:
            if r['action'] == 'none':
                self.out.line('%s: %d VFs, as desired' % (r['pf'], r['numvfs_after']))
            else:
                how = ', planned' if planned else ', ' + r['result']
                self.out.line('%s: %s VFs -> %d (%s%s: %s)' % (
                    r['pf'], r['numvfs_before'], r['numvfs_after'], r['action'], how, r['reason']))

    # -- commands --------------------------------------------------------------
    def status(self):
        state = self.load()
        host = self.host()
        differs = False
        pfs = []
        for p in state['sriov']:
            cur = read_pf(host.fs, PCI, p['pf']) or {}
            ok = cur.get('numvfs') == p['numvfs'] and cur.get('drivers_autoprobe') == p['drivers_autoprobe']
            differs = differs or not ok
            pfs.append({'pf': p['pf'], 'numvfs': cur.get('numvfs'), 'drivers_autoprobe': cur.get('drivers_autoprobe'),
                        'want_numvfs': p['numvfs'], 'want_drivers_autoprobe': p['drivers_autoprobe'], 'ok': ok})
            self.out.line('%-14s %s VFs (want %d), drivers_autoprobe %s (want %s)  %s' % (
                p['pf'], cur.get('numvfs'), p['numvfs'], _onoff(cur.get('drivers_autoprobe')),
                _onoff(p['drivers_autoprobe']), 'ok' if ok else 'DIFFERS'))
        self.out.put('sriov', pfs)
        devices, skipped = ds.present_devices(state, host.fs, PCI)
        rows = []
        if devices:
            try:
                rows = self.bind(state, host, devices, check_mode=True)['devices']
            except BindFailed as e:
                rows = e.result.get('devices', [])
                self.out.line('refused: %s' % e)
                differs = True
        for r in rows:
            ok = r['action'] == 'none'
            differs = differs or not ok
            self.out.line('%-14s %s:%s driver %-16s override %-16s want %-16s %s' % (
                r['address'], r['vendor'], r['device'], r['driver_before'] or '-', r['override_before'] or '-',
                r['driver_after'] or r['module'] or '?', 'ok' if ok else 'DIFFERS (%s)' % r['action']))
        self.out.put('devices', rows)
        self._skipped(skipped)
        return EXIT_DIFFERS if differs or skipped else EXIT_OK

    def plan(self):
        return self.apply(check_mode=True)

    def apply(self, check_mode=False):
        state = self.load()
        host = self.host()
        code = EXIT_OK
        changed = False
        if state['sriov']:
            try:
                r = run_sriov(ds.sriov_params(state, self.args.lock_file), host.fs, check_mode=check_mode)
                changed = changed or r['changed']
                self._pfs(r['pfs'], check_mode)
                self.out.put('sriov', r)
            except SriovFailed as e:
                self.out.line(str(e))
                self.out.put('sriov', dict(e.result, msg=str(e)))
                code = _code(e)
        devices, skipped = ds.present_devices(state, host.fs, PCI)
        if devices:
            r, bind_code = self._bind_and_show(state, host, devices, check_mode)
            changed = changed or bool(r and r['changed'])
            code = code or bind_code
        self._skipped(skipped)
        self.out.put('changed', changed)
        if code:
            return code
        if skipped:
            return EXIT_SKIPPED if not check_mode else EXIT_DIFFERS
        return EXIT_DIFFERS if check_mode and changed else EXIT_OK

    def _bind_and_show(self, state, host, devices, check_mode, give_back=False):
        """vfio_bind through the core, its devices shown: (the result or None, the exit code)."""
        try:
            r = self.bind(state, host, devices, check_mode=check_mode, give_back=give_back)
        except BindFailed as e:
            journal = e.result.get('journal')
            if journal and not journal.get('problems'):  # repaired, then this run failed
                self.out.line('warning: ' + recovery_message(journal))
            self._devices(e.result.get('devices', []), check_mode)
            self.out.line(str(e))
            self.out.put('bind', dict(_clean(e.result), msg=str(e)))
            return None, _code(e)
        self._run_warnings(r)
        self._devices(r['devices'], check_mode)
        self.out.put('bind', _clean(r))
        return r, EXIT_OK

    def restore(self):
        state = self.load()
        host = self.host()
        devices, skipped = ds.present_devices(state, host.fs, PCI)
        code = EXIT_OK
        if devices:
            dummy, code = self._bind_and_show(state, host, devices, False, give_back=True)
        self._skipped(skipped)
        if code == EXIT_OK and devices:
            self.out.line('given back to the host; %s still lists them, so the next boot binds them again'
                          % self.args.state)
        return code or (EXIT_SKIPPED if skipped else EXIT_OK)

    def kernel(self):
        """Whether kernel RELEASE ships the VFIO driver of every device of the desired state."""
        if not self.args.devices:
            raise ds.StateError('kernel needs the release to check, as in /lib/modules/RELEASE')
        release = self.args.devices[0]
        self.args.devices = self.args.devices[1:]
        state = self.load()
        host = HostContext(dict(self.host_params, kernel_release=release), fs=self.fs)
        names = host.resolver.tree.shipped_names()   # the tree of that release, as the resolver's
        self.out.put('release', release)
        if names is None:
            raise ds.StateError('kernel %s: %s/%s/modules.dep is missing: cannot check its VFIO modules'
                                % (release, host.modules_dir, release))
        rows = []
        for d in state['devices']:
            row = {'address': d['address'], 'module': None, 'how': 'pinned', 'shipped': False}
            if d['driver']:
                row['module'] = normalize_module(d['driver'])
            elif host.fs.isdir(PCI.device_dir(d['address'])):
                modalias = devs.read_device(host.fs, PCI, d['address'])['modalias']
                row['how'] = 'resolved'
                row['module'] = host.resolver.choose(PCI.vfio_alias(modalias))[0] if modalias else None
            else:
                row['how'] = 'absent'
            row['shipped'] = row['module'] is not None and row['module'] in names
            rows.append(row)
            if row['how'] == 'absent':
                self.out.line('%s: absent from this host: not checked' % d['address'])
            elif row['shipped']:
                self.out.line('%s: kernel %s ships %s (%s)' % (d['address'], release, row['module'], row['how']))
            else:
                self.out.line('WARNING: %s: kernel %s has no %s: booting it leaves the device without its VFIO '
                              'driver (install the module for %s, or keep booting the current kernel)' % (
                                  d['address'], release, row['module'] or 'VFIO driver for it', release))
        self.out.put('devices', rows)
        for w in host.warnings():
            self.out.line('warning: ' + w)
        return EXIT_DIFFERS if any(r['how'] != 'absent' and not r['shipped'] for r in rows) else EXIT_OK


def _onoff(value):
    return '?' if value is None else ('on' if value else 'off')


def _clean(result):
    r = dict(result)
    r.pop('warnings_list', None)
    return r


def _code(exc):
    result = getattr(exc, 'result', {}) or {}
    if 'errors' in result:
        return EXIT_REFUSED
    if 'failure' in result:
        return EXIT_FAILED
    if 'holds' in str(exc) and 'for more than' in str(exc):
        return EXIT_LOCKED
    return EXIT_FAILED


def main(argv=None, stdout=None, fs=None, run=None):
    """Entry point; returns the exit code (the entry script passes it to sys.exit)."""
    stdout = stdout or sys.stdout
    args = build_parser().parse_args(argv)
    out = Output(stdout, args.json)
    cli = Cli(args, out, fs=fs, run=run)
    try:
        code = getattr(cli, args.command)()
    except ds.StateError as e:
        out.line('%s: %s' % (PROG, e))
        out.put('msg', str(e))
        return out.close(EXIT_USAGE)
    except (RequestError, ValueError) as e:
        out.line('%s: %s; nothing was changed' % (PROG, e))
        out.put('msg', str(e))
        return out.close(EXIT_USAGE)
    return out.close(code)

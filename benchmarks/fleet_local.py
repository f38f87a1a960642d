#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 17, goal 4: a fleet of simulated hypervisors from one controller.

    benchmarks/fleet_local.py --hosts 100 --runs role:converge:linear:25,role:rerun:linear:25 [--devices 16]

Each simulated host is an inventory host with ``ansible_connection: local`` and its own fake tree
written by tools/fakehost.py (16 passthrough candidates by default: 2 GPUs with their audio
function, 4 e1000e NICs, 2 NVMe drives, 4 SR-IOV VFs of an X710 PF, 2 virtio-net NICs on the
virtio_vfio_pci variant), its own root, lock file and journal file. Two trees per host:
``host/`` (every device on its host driver) and ``vfio/`` (the candidates on their VFIO driver,
as a converge leaves them).

A run is ``what:kind:strategy:forks``:

- ``role:converge``: the passthrough role in check mode on the ``host/`` trees: facts, validation,
  the whole bind plan of 16 devices (a fake tree cannot bind for real: no kernel behind it);
- ``role:rerun``: the role for real on the ``vfio/`` trees: everything is on its target, nothing
  is written (the idempotent re-run a fleet runs every day);
- ``naive:rerun``: the per-device shell loop (benchmarks/fleet/naive_local.yml) on the ``vfio/`` trees.

Measured per run: wall time; CPU seconds of everything the run started (getrusage of the
children: the controller, its forked workers and the module processes, which run on this machine
with a local connection); the module processes' own CPU (the interpreter is a wrapper that
appends each module process's user+sys time to a log), so that controller CPU = total - modules;
peak memory of the controller (sum of the PSS of ansible-playbook and its workers, sampled every
0.5 s); module invocations and failures per host (bench_stats callback).
Runs under ``nice -n 10`` by default (the machine is shared). Nothing is written outside --tmpdir.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench as B  # noqa: E402

AC = B.import_collection()
from ansible_collections.hypervisor.vfio.tools.fakehost import generate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PLAYS = {'role': os.path.join(HERE, 'fleet', 'role_local.yml'), 'naive': os.path.join(HERE, 'fleet', 'naive_local.yml')}
MIX = dict(gpu=2, nic=4, nvme=2, sriov_pf=1, vfs=4, virtio=2)   # 16 candidates


def build_fleet(base, hosts):
    """hNNNN/{host,vfio}/ for each host; the inventories of both states."""
    inv = {'host': {}, 'vfio': {}}
    for i in range(hosts):
        name = 'h%04d' % i
        for state in ('host', 'vfio'):
            info = generate(os.path.join(base, name, state), state=state, **MIX)
            hv = dict(info['role_vars'], ansible_connection='local')
            inv[state][name] = hv
    paths = {}
    for state, hostvars in inv.items():
        paths[state] = os.path.join(base, 'inventory-%s.json' % state)
        with open(paths[state], 'w') as f:
            json.dump({'hypervisors': {'hosts': hostvars}}, f)
    return paths


def _ppid(pid):
    with open('/proc/%s/stat' % pid) as f:
        return int(f.read().rsplit(')', 1)[1].split()[1])


class PssSampler(threading.Thread):
    """Peak of the summed PSS of this run's controller: the processes named ansible-playbook
    that descend from the process started (its forked workers), not other users' runs."""

    def __init__(self):
        super(PssSampler, self).__init__()
        self.daemon = True
        self.stop = threading.Event()
        self.root = None
        self.peak_kb = 0
        self.peak_procs = 0

    def _ours(self, pid):
        try:
            while pid > 1:
                if pid == self.root:
                    return True
                pid = _ppid(pid)
        except (IOError, OSError, ValueError, IndexError):
            return False
        return False

    def run(self):
        while not self.stop.wait(0.5):
            if self.root is None:
                continue
            total, n = 0, 0
            for pid in os.listdir('/proc'):
                if not pid.isdigit():
                    continue
                try:
                    with open('/proc/%s/comm' % pid) as f:
                        if not f.read().startswith('ansible-playboo'):
                            continue
                    if not self._ours(int(pid)):
                        continue
                    with open('/proc/%s/smaps_rollup' % pid) as f:
                        for line in f:
                            if line.startswith('Pss:'):
                                total += int(line.split()[1])
                                n += 1
                                break
                except (IOError, OSError):
                    continue
            if total > self.peak_kb:
                self.peak_kb, self.peak_procs = total, n


def run_one(args, tmp, inventories, what, kind, strategy, forks, hosts):
    state = 'host' if kind == 'converge' else 'vfio'
    stats = os.path.join(tmp, 'stats-%s-%s-%s-%d.json' % (what, kind, strategy, forks))
    modlog = os.path.join(tmp, 'modcpu-%s-%s-%s-%d.log' % (what, kind, strategy, forks))
    wrapper = os.path.join(tmp, 'python-timed')
    with open(wrapper, 'w') as f:
        f.write('#!/bin/sh\nexec /usr/bin/time -a -o %s -f "%%U %%S" %s "$@"\n' % (modlog, sys.executable))
    os.chmod(wrapper, 0o755)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=AC, ANSIBLE_HOME=os.path.join(tmp, 'ansible-home'),
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_NOCOLOR='1', ANSIBLE_FORKS=str(forks),
               ANSIBLE_STRATEGY=strategy, ANSIBLE_HOST_KEY_CHECKING='false',
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, 'fleet', 'callback_plugins'),
               ANSIBLE_CALLBACKS_ENABLED='bench_stats', BENCH_STATS_FILE=stats,
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default',
               # --quiet: the default callback without the ok and skipped results (ansible-core has no null one)
               ANSIBLE_DISPLAY_OK_HOSTS='false' if args.quiet else 'true',
               ANSIBLE_DISPLAY_SKIPPED_HOSTS='false' if args.quiet else 'true',
               ANSIBLE_PYTHON_INTERPRETER=wrapper, ANSIBLE_LOCAL_TEMP=os.path.join(tmp, 'ansible-local'),
               ANSIBLE_REMOTE_TEMP=os.path.join(tmp, 'ansible-remote'))
    argv = (['nice', '-n', str(args.nice)] if args.nice else []) + [
        os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventories[state]]
    if kind == 'converge':
        argv.append('--check')
    argv.append(PLAYS[what])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = PssSampler()
    sampler.start()
    t0 = time.perf_counter()
    with open(os.path.join(tmp, 'log-%s-%s-%s-%d.txt' % (what, kind, strategy, forks)), 'w') as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler.root = proc.pid      # nice execs ansible-playbook: the same process
        proc.wait()
    p = proc
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    mod_cpu, mod_n = 0.0, 0
    if os.path.exists(modlog):
        with open(modlog) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    try:
                        mod_cpu += float(parts[0]) + float(parts[1])
                        mod_n += 1
                    except ValueError:
                        pass
    with open(stats) as f:
        st = json.load(f)
    per_host = st['hosts'].values()
    return {
        'what': what, 'kind': kind, 'strategy': strategy, 'forks': forks, 'hosts': hosts, 'rc': p.returncode,
        'wall_s': wall, 'cpu_s': cpu, 'module_cpu_s': mod_cpu, 'module_runs': mod_n,
        'controller_cpu_s': cpu - mod_cpu, 'peak_pss_mb': sampler.peak_kb / 1024.0, 'peak_procs': sampler.peak_procs,
        'invocations_per_host': B.median([h['invocations'] for h in per_host]),
        'failed_hosts': sum(1 for h in per_host if h['failed']),
        'changed_hosts': sum(1 for h in per_host if h['changed']),
        'hosts_seen': len(st['hosts']),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--hosts', type=int, default=100)
    ap.add_argument('--runs', default='role:converge:linear:25,role:rerun:linear:25',
                    help='comma-separated what:kind:strategy:forks (what: role|naive; kind: converge|rerun)')
    ap.add_argument('--nice', type=int, default=10)
    ap.add_argument('--quiet', action='store_true', help='no ok or skipped task results in the run logs (changed and failed ones stay)')
    ap.add_argument('--tmpdir', default='/dev/shm' if os.access('/dev/shm', os.W_OK) else None)
    ap.add_argument('--json', help='append each run\'s figures as a JSON line to this file')
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix='vfio-bench-fleet-%d-' % args.hosts, dir=args.tmpdir)
    try:
        t0 = time.perf_counter()
        inventories = build_fleet(tmp, args.hosts)
        B.log('%d hosts built in %.1f s under %s' % (args.hosts, time.perf_counter() - t0, tmp))
        rows = []
        for spec in args.runs.split(','):
            what, kind, strategy, forks = spec.split(':')
            B.log('run %s (%d hosts)' % (spec, args.hosts))
            r = run_one(args, tmp, inventories, what, kind, strategy, int(forks), args.hosts)
            B.log(json.dumps(r))
            if args.json:
                with open(args.json, 'a') as f:
                    f.write(json.dumps(r) + '\n')
            rows.append(r)
        print(B.table(['hosts', 'what', 'kind', 'strategy', 'forks', 'rc', 'wall s', 'wall s/host', 'cpu s/host',
                       'controller cpu s/host', 'module cpu s/host', 'peak PSS MB', 'invocations/host', 'failed'],
                      [[r['hosts'], r['what'], r['kind'], r['strategy'], r['forks'], r['rc'], '%.1f' % r['wall_s'],
                        '%.3f' % (r['wall_s'] / r['hosts']), '%.3f' % (r['cpu_s'] / r['hosts']),
                        '%.3f' % (r['controller_cpu_s'] / r['hosts']), '%.3f' % (r['module_cpu_s'] / r['hosts']),
                        '%.0f' % r['peak_pss_mb'], r['invocations_per_host'], r['failed_hosts']] for r in rows]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8, part 3: fleet convergence, the collection against a per-device shell loop.

    benchmarks/fleet.py [--hosts 3] [--devices 16] [--rounds 3] [--reuse] [--keep]
                        [--name fleet] [--methods role,bind,naive] [--compare REV]

Boots --hosts lab VMs at once (LAB_NAME=fleet1..N, TCG, 1 vCPU each, LAB_EXTRA_DEVICES:
--devices bindable devices per host, each behind its own root port: e1000e -> vfio-pci,
virtio-net 1af4:1041 -> virtio_vfio_pci, pci-testdev -> vfio_testdev) and converges all of
them at once (forks = hosts) with three playbooks of benchmarks/fleet/, in rotating order each
round:

  role           the role hypervisor.vfio.passthrough (runtime binding; persistence and boot
                 loader off), its defaults otherwise (verification on)
  role-noverify  the same with passthrough_verify=false
  role@REV       (--compare REV) the role of the collection at git revision REV, exported with
                 `git archive`: before and after side by side, in the same rounds
  bind           one hypervisor.vfio.vfio_bind task
  naive  one ansible.builtin.shell task looped per device doing the kernel's steps by hand

Each is run to converge, then re-run (idempotence), then the devices are given back
(bind.yml with state=host).  The bench_stats callback counts module invocations and time per
host; the guest's ftrace counts every sysfs write (kernfs_fop_write_iter) per process during
each run, so "the re-run performs no sysfs write" is measured, not assumed (the converge runs
are the positive control).  After every converge the drivers are checked on every host.
Ratios are medians of per-round ratios (same round).  --reuse takes running fleet labs as
they are; --keep leaves them up.  --name sets the labs' LAB_NAME prefix (NAME1..N).
"""

from __future__ import absolute_import, division, print_function

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench as B  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLEET = os.path.join(HERE, 'fleet')
TRACE = B.TRACE
METHODS = ('role', 'role-noverify', 'bind', 'naive')
# method: (playbook, extra vars)
PLAYBOOK = {'role': ('role.yml', {}), 'role-noverify': ('role.yml', {'passthrough_verify': False}),
            'bind': ('bind.yml', {}), 'naive': ('naive.yml', {})}
# The VFIO driver each kind of benchmark device must end on (vendor:device -> driver).
EXPECTED = {'0x8086:0x10d3': 'vfio-pci', '0x1af4:0x1041': 'virtio_vfio_pci', '0x1b36:0x0005': 'vfio_testdev'}
HOST_DRIVER = {'0x8086:0x10d3': 'e1000e', '0x1af4:0x1041': 'virtio-pci', '0x1b36:0x0005': ''}


def _bin(name):
    cand = os.path.join(os.path.dirname(sys.executable), name)
    return cand if os.path.exists(cand) else name


def lab_env(name, args):
    return dict(os.environ, LAB_NAME=name, LAB_EXTRA_DEVICES=str(args.devices), LAB_CPUS=str(args.cpus),
                LAB_MEM=str(args.mem))


def labctl(name, args, *cmd, check=True):
    return B.labctl(*cmd, env=lab_env(name, args), check=check)


def parallel(fn, items):
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as ex:
        return list(ex.map(fn, items))


def trace_start(name, args):
    labctl(name, args, 'ssh',
           'mountpoint -q %(t)s || mount -t tracefs nodev %(t)s; cd %(t)s && echo 0 > tracing_on && '
           'echo nop > current_tracer && echo kernfs_fop_write_iter > set_ftrace_filter && '
           'echo 16384 > buffer_size_kb && echo > trace && echo function > current_tracer && '
           'echo 1 > tracing_on' % {'t': TRACE})


def trace_stop(name, args):
    """sysfs writes (kernfs_fop_write_iter calls) since trace_start, per process name."""
    out = labctl(name, args, 'ssh', 'cd %(t)s && echo 0 > tracing_on && cat trace && echo nop > current_tracer && '
                 'echo > set_ftrace_filter' % {'t': TRACE})
    counts = {}
    for line in out.splitlines():
        m = re.match(r'\s*(.+?)-\d+\s+\[\d+\].*kernfs_fop_write_iter', line)
        if m:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def drivers(name, args, addrs):
    out = labctl(name, args, 'ssh', 'for a in %s; do d=/sys/bus/pci/devices/$a; '
                 'echo "$a $(cat $d/vendor):$(cat $d/device) $(basename "$(readlink $d/driver)" 2>/dev/null)"; done'
                 % ' '.join(addrs))
    res = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            res[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else '')
    return res


def check_state(names, args, inv, want):
    """Every benchmark device on its VFIO driver (want='vfio') or its host driver ('host')."""
    def one(name):
        bad = []
        for addr, (ids, drv) in drivers(name, args, inv[name]['devices']).items():
            exp = (EXPECTED if want == 'vfio' else HOST_DRIVER).get(ids)
            if exp is not None and drv != exp:
                bad.append('%s %s on %r, expected %r' % (addr, ids, drv, exp))
        return bad
    bad = sum(parallel(one, names), [])
    if bad:
        raise RuntimeError('after %s: %s' % (want, '; '.join(bad)))


def run_playbook(method, inventory, env, args, workdir, label, state='vfio'):
    stats_file = os.path.join(workdir, label + '.json')
    base, sep, rev = method.partition('@')
    if sep:  # the same playbook, the collection at REV
        env = dict(env, ANSIBLE_COLLECTIONS_PATH=args.compare_root)
    playbook, extra = PLAYBOOK[base]
    extra = dict(extra, bench_device_count=args.devices, bench_state=state)
    argv = [_bin('ansible-playbook'), '-i', inventory, os.path.join(FLEET, playbook), '-e', json.dumps(extra)]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=dict(env, BENCH_STATS_FILE=stats_file), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    with open(os.path.join(workdir, label + '.log'), 'w') as f:
        f.write(p.stdout)
    if p.returncode != 0:
        raise RuntimeError('%s (%s) failed (%d), log %s:\n%s' % (playbook, label, p.returncode,
                                                                 os.path.join(workdir, label + '.log'), p.stdout[-5000:]))
    with open(stats_file) as f:
        stats = json.load(f)
    stats['wall'] = wall
    return stats


def timed_run(method, names, args, inventory, env, workdir, label, state='vfio'):
    parallel(lambda n: trace_start(n, args), names)
    stats = run_playbook(method, inventory, env, args, workdir, label, state)
    writes = dict(zip(names, parallel(lambda n: trace_stop(n, args), names)))
    stats['writes'] = writes
    h = stats['hosts']
    B.log('%-14s wall %6.1f s; per host: invocations %s, changed %s, sysfs writes %s' % (
        label, stats['wall'], [h[n]['invocations'] for n in names], [h[n]['changed'] for n in names],
        [sum(writes[n].values()) for n in names]))
    return stats


def fleet_up(names, args):
    labctl(names[0], args, 'setup')
    t0 = time.monotonic()
    errors = [e for e in parallel(lambda n: _up(n, args), names) if e]
    if errors:
        raise RuntimeError('\n'.join(errors))
    B.log('fleet of %d up in %.0f s' % (len(names), time.monotonic() - t0))


def _up(name, args):
    try:
        if args.reuse and subprocess.run([B.LABCTL, 'status'], env=lab_env(name, args), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL).returncode == 0:
            return None
        labctl(name, args, 'up')
        return None
    except RuntimeError as e:
        return str(e)


def fleet_inventory(names, args, workdir):
    import yaml  # ansible-core's dependency, in the interpreter that runs this script
    hosts, inv = {}, {}
    for name in names:
        path = labctl(name, args, 'inventory').strip()
        with open(path) as f:
            hv = yaml.safe_load(f)['hypervisors']['hosts']['lab']
        devs = hv.get('lab_extra_devices') or []
        if len(devs) < args.devices:
            raise RuntimeError('lab %s has %d extra devices, %d asked (boot it with LAB_EXTRA_DEVICES=%d, '
                               'or without --reuse)' % (name, len(devs), args.devices, args.devices))
        hosts[name] = hv
        inv[name] = {'devices': devs[:args.devices]}
    path = os.path.join(workdir, 'fleet.yml')
    with open(path, 'w') as f:
        yaml.safe_dump({'hypervisors': {'hosts': hosts}}, f)
    return path, inv


def summarize(results, names, args):
    methods = args.method_list
    print('## fleet convergence (%d hosts x %d devices, %d rounds, medians)' % (len(names), args.devices, args.rounds))
    print()
    rows = []
    for method in methods:
        for phase in ('converge', 'rerun'):
            rs = results[method][phase]
            per_host = [B.median([r['hosts'][n]['busy_s'] for n in names]) for r in rs]
            inv_ = sorted(set(r['hosts'][n]['invocations'] for r in rs for n in names))
            chg = sorted(set(r['hosts'][n]['changed'] for r in rs for n in names))
            tasks = sorted(set(r['hosts'][n]['tasks'] for r in rs for n in names))
            mod_writes = sorted(set(sum(c for comm, c in r['writes'][n].items() if comm.startswith('python'))
                                    for r in rs for n in names))
            all_writes = sorted(set(sum(r['writes'][n].values()) for r in rs for n in names))
            rows.append([method, phase, '%.1f' % B.median([r['wall'] for r in rs]), '%.1f' % B.median(per_host),
                         '/'.join(map(str, inv_)), '/'.join(map(str, tasks)), '/'.join(map(str, chg)),
                         '/'.join(map(str, mod_writes)), '/'.join(map(str, all_writes))])
    print(B.table(['method', 'run', 'fleet wall s', 'per-host s', 'invocations/host', 'tasks/host',
                   'changed tasks/host', 'sysfs writes/host (python)', 'sysfs writes/host (all)'], rows))
    print()
    rows = []
    for method in [m for m in methods if m != 'naive']:
        for phase in ('converge', 'rerun'):
            ratios = [n['wall'] / m['wall'] for n, m in zip(results['naive'][phase], results[method][phase])]
            rows.append([method, phase, '%.2fx' % B.median(ratios), ' '.join('%.2f' % r for r in ratios)])
    print(B.table(['method', 'run', 'naive / method (median)', 'per-round ratios'], rows))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--hosts', type=int, default=3)
    ap.add_argument('--devices', type=int, default=16, help='bindable devices per host (1..16)')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--cpus', type=int, default=1, help='vCPUs per lab VM')
    ap.add_argument('--mem', type=int, default=1024, help='MiB of RAM per lab VM')
    ap.add_argument('--reuse', action='store_true', help='use fleet labs that are already running')
    ap.add_argument('--keep', action='store_true', help='leave the labs running')
    ap.add_argument('--name', default='fleet', help='LAB_NAME prefix of the labs (NAME1..N)')
    ap.add_argument('--methods', default=','.join(METHODS), help='comma-separated, naive always included')
    ap.add_argument('--compare', metavar='REV', help='also run the role of the collection at this git revision')
    args = ap.parse_args()
    if not 1 <= args.devices <= 16:
        ap.error('--devices must be 1..16')
    args.method_list = [m for m in args.methods.split(',') if m and m != 'naive']
    unknown = [m for m in args.method_list if m not in PLAYBOOK]
    if unknown:
        ap.error('unknown methods %s (of %s)' % (', '.join(unknown), ', '.join(METHODS)))
    if args.compare:
        import kernel_overhead  # noqa: E402 (its export of a revision)
        args.compare_root = kernel_overhead.collection_root(kernel_overhead.export_revision(args.compare))
        args.method_list.append('role@' + args.compare)
    args.method_list.append('naive')
    names = ['%s%d' % (args.name, i + 1) for i in range(args.hosts)]
    workdir = tempfile.mkdtemp(prefix='vfio-bench-fleet-')
    B.log('logs in %s' % workdir)
    try:
        fleet_up(names, args)
        inventory, inv = fleet_inventory(names, args, workdir)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=B.import_collection(), ANSIBLE_HOST_KEY_CHECKING='False',
                   ANSIBLE_CALLBACK_PLUGINS=os.path.join(FLEET, 'callback_plugins'),
                   ANSIBLE_CALLBACKS_ENABLED='bench_stats', ANSIBLE_FORKS=str(max(5, len(names))),
                   ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='False', ANSIBLE_DEPRECATION_WARNINGS='False',
                   ANSIBLE_LOCAL_TEMP=os.path.join(workdir, 'ansible-tmp'))
        # Start from the host drivers (a reused fleet may hold bindings of an aborted run).
        run_playbook('bind', inventory, env, args, workdir, 'reset-0', state='host')
        check_state(names, args, inv, 'host')
        methods = args.method_list
        results = {m: {'converge': [], 'rerun': [], 'reset': []} for m in methods}
        for r in range(args.rounds):
            order = methods[r % len(methods):] + methods[:r % len(methods)]
            for method in order:
                label = '%s-r%d' % (method, r + 1)
                results[method]['converge'].append(timed_run(method, names, args, inventory, env, workdir, label))
                check_state(names, args, inv, 'vfio')
                results[method]['rerun'].append(timed_run(method, names, args, inventory, env, workdir,
                                                          label + '-rerun'))
                check_state(names, args, inv, 'vfio')
                results[method]['reset'].append(timed_run('bind', names, args, inventory, env, workdir,
                                                          label + '-reset', state='host'))
                check_state(names, args, inv, 'host')
        with open(os.path.join(workdir, 'results.json'), 'w') as f:
            json.dump(results, f, indent=1)
        summarize(results, names, args)
    finally:
        if not args.keep:
            parallel(lambda n: labctl(n, args, 'down', check=False), names)
        B.log('logs in %s' % workdir)


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A/B of the facts core between two checkouts, interleaved on one fake tree.

    benchmarks/ab_core.py --a /work/main --b /tmp/scratch/main [--devices 1024] [--repeats 15] [--module [--select N]]

Builds one fake host (the facts_scale.py mix), starts one worker process per checkout (each
imports its own plugins/), then asks them in turn, round after round, to time:
context (HostContext: alias files parsed and indexed), scan (collect_facts with a prebuilt
context) and core (both), in wall time and in CPU time (``cpu``: user+sys of the worker, which
a busy neighbour inflates less).  Ratios are per-round medians, so a busy neighbour hits A and
B alike.
It also checks that both checkouts return the same facts.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

WORKER = r'''
import json, os, sys, tempfile, time
repo, params = sys.argv[1], json.loads(sys.argv[2])
root = tempfile.mkdtemp(prefix='vfio-ab-ac-')
os.makedirs(os.path.join(root, 'ansible_collections', 'hypervisor'))
os.symlink(repo, os.path.join(root, 'ansible_collections', 'hypervisor', 'vfio'))
sys.path.insert(0, root)
import atexit, shutil
atexit.register(shutil.rmtree, root, True)
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts
for line in sys.stdin:
    what = line.strip()
    if what == 'facts':
        out = collect_facts(HostContext(params))
        sys.stdout.write(json.dumps(out, sort_keys=True) + '\n')
    else:
        t0, c0 = time.perf_counter(), time.process_time()
        host = HostContext(params)
        t1, c1 = time.perf_counter(), time.process_time()
        collect_facts(host)
        t2, c2 = time.perf_counter(), time.process_time()
        sys.stdout.write(json.dumps({'context': t1 - t0, 'scan': t2 - t1, 'core': t2 - t0,
                                     'context cpu': c1 - c0, 'scan cpu': c2 - c1, 'core cpu': c2 - c0}) + '\n')
    sys.stdout.flush()
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--a', required=True, help='checkout A (the baseline)')
    ap.add_argument('--b', required=True, help='checkout B (the change)')
    ap.add_argument('--devices', type=int, default=1024)
    ap.add_argument('--repeats', type=int, default=15)
    ap.add_argument('--tmpdir', default='/dev/shm' if os.access('/dev/shm', os.W_OK) else None)
    ap.add_argument('--module', action='store_true',
                    help='also A/B the whole module process (python -m ...vfio_facts), CPU and wall, with '
                         'facts_scale.py\'s startup, floor process and bare interpreter in the same rounds')
    ap.add_argument('--select', type=int, metavar='N',
                    help='with --module: also time module B with its devices option, in the same rounds: N addresses '
                         'spread over the host, and a vendor/device selector (checks the selected records equal '
                         'the whole-host ones)')
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    import _bench as B
    from facts_scale import Tree
    modules_dir, release, origin = B.find_module_tree()
    tmp = tempfile.mkdtemp(prefix='vfio-ab-', dir=args.tmpdir)
    try:
        tree = Tree(os.path.join(tmp, 'host'), args.devices, modules_dir, release)
        params = json.dumps(tree.params())
        workers = dict((k, subprocess.Popen([sys.executable, '-c', WORKER, os.path.abspath(repo), params],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            universal_newlines=True))
                       for k, repo in (('A', args.a), ('B', args.b)))

        def ask(k, what):
            workers[k].stdin.write(what + '\n')
            workers[k].stdin.flush()
            return workers[k].stdout.readline()

        same = json.loads(ask('A', 'facts')) == json.loads(ask('B', 'facts'))
        rounds = {'A': [], 'B': []}
        for r in range(args.repeats + 1):
            for k in (('A', 'B') if r % 2 else ('B', 'A')):
                t = json.loads(ask(k, 'time'))
                if r:
                    rounds[k].append(t)
        for w in workers.values():
            w.stdin.close()
            w.wait()
        print('A = %s, B = %s, %d devices, %d rounds (alternating order), modules.alias: %s'
              % (args.a, args.b, args.devices, args.repeats, origin))
        print('same facts from A and B: %s' % same)
        print()
        rows = []
        for part in ('context', 'scan', 'core', 'context cpu', 'scan cpu', 'core cpu'):
            a = [x[part] for x in rounds['A']]
            b = [x[part] for x in rounds['B']]
            rows.append([part, B.fmt_ms(B.median(a)), B.fmt_ms(B.median(b)), '%.2f' % B.ratio_median(b, a)])
        print(B.table(['part', 'A ms', 'B ms', 'B/A'], rows))
        if args.module:
            print()
            module_ab(B, tree, tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def module_ab(B, tree, tmp, args):
    """The whole vfio_facts process of A and B, interleaved with facts_scale.py's startup,
    floor process and bare interpreter: wall and CPU (user+sys), and the goal ratios."""
    import facts_scale as F
    argsfile = os.path.join(tmp, 'args.json')
    with open(argsfile, 'w') as f:
        json.dump({'ANSIBLE_MODULE_ARGS': tree.params()}, f)
    roots = {}
    for k, repo in (('A', args.a), ('B', args.b)):
        roots[k] = os.path.join(tmp, 'ac-' + k)
        os.makedirs(os.path.join(roots[k], 'ansible_collections', 'hypervisor'))
        os.symlink(os.path.abspath(repo), os.path.join(roots[k], 'ansible_collections', 'hypervisor', 'vfio'))

    def module(k):
        argv = [sys.executable, '-m', 'ansible_collections.hypervisor.vfio.plugins.modules.vfio_facts', argsfile]
        env = dict(os.environ, PYTHONPATH=roots[k])
        return lambda: F._proc(k, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=roots[k],
                               check=True)

    out = dict((k, json.loads(module(k)()[1].stdout)['ansible_facts']) for k in ('A', 'B'))
    print('same facts from the A and B module processes: %s' % (out['A'] == out['B']))
    alias = os.path.join(tree.params()['modules_dir'], tree.host.release, 'modules.alias')
    sysfs = tree.params()['sysfs_path']
    cases = [('A', lambda: module('A')()[0]), ('B', lambda: module('B')()[0]),
             ('startup', F.run_startup), ('floor proc', lambda: F.run_floor_proc(sysfs, alias)[0]),
             ('bare', F.run_bare)]
    selections = []
    if args.select:
        every = sorted(out['B']['vfio']['devices'])
        step = max(1, len(every) // args.select)
        selections = [('B %d addresses' % args.select, every[::step][:args.select]),
                      ('B vendor/device', [{'vendor': '10de', 'device': '2204'}])]
        for name, devices in selections:
            path = os.path.join(tmp, 'args-%d.json' % len(cases))
            with open(path, 'w') as f:
                json.dump({'ANSIBLE_MODULE_ARGS': dict(tree.params(), devices=devices)}, f)
            argv = [sys.executable, '-m', 'ansible_collections.hypervisor.vfio.plugins.modules.vfio_facts', path]
            env = dict(os.environ, PYTHONPATH=roots['B'])
            run = (lambda n, a, e: lambda: F._proc(n, a, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
                                                   cwd=roots['B'], check=True))(name, argv, env)
            got = json.loads(run()[1].stdout)['ansible_facts']['vfio']
            same = all(got['devices'][a] == out['B']['vfio']['devices'][a] for a in got['devices'])
            print('%s: %d devices, %d IOMMU groups, each record equal to the whole-host one: %s'
                  % (name, len(got['devices']), len(got['iommu_groups']), same))
            cases.append((name, (lambda r: lambda: r()[0])(run)))
        print()
    F.PROC_CPU.clear()
    times = B.interleaved(cases, args.repeats)
    for k, v in F.PROC_CPU.items():
        times[k + ' cpu'] = v[len(v) - args.repeats:]
    rows = []
    for suf, what in (('', 'wall'), (' cpu', 'CPU')):
        t = dict((k, times[k + suf]) for k in ('A', 'B', 'startup', 'floor proc', 'bare'))
        floor_own = [f - b for f, b in zip(t['floor proc'], t['bare'])]
        row = [what] + [B.fmt_ms(B.median(t[k])) for k in ('A', 'B', 'startup', 'floor proc', 'bare')]
        row.append('%.2f' % B.ratio_median(t['B'], t['A']))
        for k in ('A', 'B'):
            row.append('%.2f' % B.ratio_median([m - s for m, s in zip(t[k], t['startup'])], floor_own))
            row.append('%.2f' % B.ratio_median(t[k], t['floor proc']))
        rows.append(row)
    print(B.table(['ms', 'module A', 'module B', 'startup', 'floor proc', 'bare', 'B/A',
                   'A (mod-start)/(floor-bare)', 'A mod/floor', 'B (mod-start)/(floor-bare)', 'B mod/floor'], rows))
    if selections:
        print()
        rows = []
        for name, _ in selections:
            for suf, what in (('', 'wall'), (' cpu', 'CPU')):
                t = dict((k, times[k + suf]) for k in (name, 'B', 'startup', 'floor proc', 'bare'))
                floor_own = [f - b for f, b in zip(t['floor proc'], t['bare'])]
                rows.append([name, what, B.fmt_ms(B.median(t[name])), '%.2f' % B.ratio_median(t[name], t['B']),
                             '%.2f' % B.ratio_median([m - s for m, s in zip(t[name], t['startup'])],
                                                     [m - s for m, s in zip(t['B'], t['startup'])]),
                             '%.2f' % B.ratio_median([m - s for m, s in zip(t[name], t['startup'])], floor_own),
                             '%.2f' % B.ratio_median(t[name], t['floor proc'])])
        print(B.table(['selection', 'ms', 'module', '/ whole B', '(mod-start) / whole B\'s', '(mod-start)/(floor-bare)',
                       'mod/floor'], rows))


if __name__ == '__main__':
    main()

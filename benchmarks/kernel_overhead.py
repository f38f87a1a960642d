#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8, part 4: vfio_bind's own overhead over the kernel's unbind and probe, on the lab VM.

    LAB_NAME=bench8 lab/labctl up          # a private lab instance, not the shared default one
    LAB_NAME=bench8 benchmarks/kernel_overhead.py [--rounds 3]
    LAB_NAME=bench8 lab/labctl down

For 1 device (the lab's `generic`) and for 4 (`generic`, `variant`, both functions of `group`)
it runs, each round, `ansible <lab> -m hypervisor.vfio.vfio_bind` with state=vfio, then with
state=host (which restores the lab), timing each call on the controller, while the guest's
ftrace (function_graph, depth 1) times every pci_device_remove (unbind) and pci_device_probe
(bind/probe) the kernel runs.  own = call wall time - kernel time; the per-device overhead is
(own(4) - own(1)) / 3 and the fixed overhead own(1) - per-device.  The lab is TCG-emulated:
every number (kernel, Python, SSH) is many times a real host's; the ratios are what carry over.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench as B  # noqa: E402

LABCTL = os.path.join(B.REPO, 'lab', 'labctl')
TRACE = '/sys/kernel/tracing'
ANSIBLE = os.path.join(os.path.dirname(sys.executable), 'ansible')
if not os.path.exists(ANSIBLE):
    ANSIBLE = 'ansible'


def ssh(cmd):
    return subprocess.run([LABCTL, 'ssh', cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=True).stdout


def trace_start():
    ssh('mountpoint -q %(t)s || mount -t tracefs nodev %(t)s; cd %(t)s && echo 0 > tracing_on && '
        'echo function_graph > current_tracer && echo 1 > max_graph_depth && '
        'echo "pci_device_remove pci_device_probe" > set_graph_function && echo > trace && '
        'echo 1 > tracing_on' % {'t': TRACE})


def trace_stop():
    out = ssh('cd %(t)s && echo 0 > tracing_on && cat trace | tee /tmp/vfio-bench-trace.txt && echo nop > current_tracer && '
              'echo > set_graph_function' % {'t': TRACE})
    calls = []
    for line in out.splitlines():
        # a leaf line "1234.5 us | pci_device_probe();" or, when the record was split by
        # another event, the closing line "1234.5 us | } /* pci_device_probe */"
        m = re.search(r'([\d.]+) us\s+\|\s+(?:\} /\* )?(pci_device_remove|pci_device_probe)(?:\(\);| \*/)', line)
        if m:
            calls.append((m.group(2), float(m.group(1)) / 1e6))
    return calls


def run_bind(inventory, env, devices, state):
    args = json.dumps({'devices': devices, 'state': state, 'iommu_group': 'all'})
    t0 = time.perf_counter()
    p = subprocess.run([ANSIBLE, '-i', inventory, 'all', '-m', 'hypervisor.vfio.vfio_bind', '-a', args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError('vfio_bind %s %s failed:\n%s\n%s' % (state, devices, p.stdout[-3000:], p.stderr[-2000:]))
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=3)
    args = ap.parse_args()
    inventory = subprocess.run([LABCTL, 'inventory'], stdout=subprocess.PIPE, universal_newlines=True,
                               check=True).stdout.strip()
    with open(inventory) as f:
        text = f.read()
    addr = dict(re.findall(r'^\s+(generic|variant): "([0-9a-f:.]+)"', text, re.M))
    group = re.findall(r'^\s+- "([0-9a-f:.]+)"', text, re.M)
    sets = [('1 device', [addr['generic']]), ('4 devices', [addr['generic'], addr['variant']] + group[:2])]
    root = B.import_collection()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=root, ANSIBLE_HOST_KEY_CHECKING='False',
               ANSIBLE_LOCAL_TEMP=tempfile.mkdtemp(prefix='vfio-bench-ansible-'))
    res = {}
    for label, devs in sets:
        for state in ('vfio', 'host'):
            res[(label, state)] = []
        for r in range(args.rounds):
            for state in ('vfio', 'host'):
                trace_start()
                wall = run_bind(inventory, env, devs, state)
                calls = trace_stop()
                kernel = sum(t for _, t in calls)
                res[(label, state)].append((wall, kernel, len(calls)))
                B.log('%s %s: wall %.2f s, kernel %.3f s in %d calls' % (label, state, wall, kernel, len(calls)))
    print('## kernel_overhead (lab %s, %d rounds, medians)' % (os.environ.get('LAB_NAME', 'default'), args.rounds))
    print()
    rows = []
    own = {}
    for (label, state), xs in sorted(res.items()):
        w = B.median([x[0] for x in xs])
        k = B.median([x[1] for x in xs])
        own[(label, state)] = B.median([x[0] - x[1] for x in xs])
        rows.append([label, state, '%.2f' % w, '%.3f' % k, xs[0][2], '%.2f' % own[(label, state)],
                     '%.1f%%' % (100 * k / w)])
    print(B.table(['devices', 'state', 'call wall s', 'kernel unbind+probe s', 'kernel calls', 'own s',
                   'kernel share'], rows))
    print()
    rows = []
    for state in ('vfio', 'host'):
        per = (own[('4 devices', state)] - own[('1 device', state)]) / 3
        rows.append([state, '%.3f' % per, '%.2f' % (own[('1 device', state)] - per)])
    print(B.table(['state', 'own overhead per device s', 'fixed own overhead per call s'], rows))


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8, part 4: vfio_bind's own overhead over the kernel's unbind and probe, on the lab VM.

    LAB_NAME=bench8 LAB_EXTRA_DEVICES=16 lab/labctl up     # a private lab with 16 extra devices
    LAB_NAME=bench8 benchmarks/kernel_overhead.py [--rounds 5] [--sizes 1,4,8,16]
    LAB_NAME=bench8 lab/labctl down

The module runs inside the guest as a process of its own (`python3 -m
ansible_collections.hypervisor.vfio.plugins.modules.vfio_bind args.json`, the collection and
ansible-core read from this checkout through the guest's view of the host filesystem), timed
in the guest, so SSH and AnsiballZ are out of the figure.  For n of the lab's extra devices
(e1000e, virtio-net 1041, pci-testdev: the module picks vfio-pci, virtio_vfio_pci, vfio_testdev)
it binds (state=vfio) then gives back (state=host), while the guest's ftrace
(function_graph, depth 1) times every pci_device_remove (unbind) and pci_device_probe the
kernel runs.  own = process time - kernel time; a least-squares line own(n) = fixed + n *
per-device gives the module's own cost per device.  Each round also times one call through
Ansible from the controller (n=1 and the largest n) to show what the transport adds.  The lab
is TCG-emulated: every number is many times a real host's; the shape is what carries over.
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

TRACE = B.TRACE
ANSIBLE = os.path.join(os.path.dirname(sys.executable), 'ansible')
if not os.path.exists(ANSIBLE):
    ANSIBLE = 'ansible'
MODULE = 'ansible_collections.hypervisor.vfio.plugins.modules.vfio_bind'


def ssh(cmd):
    return B.labctl('ssh', cmd)


def guest_pythonpath():
    """A directory on the host filesystem (which the virtme-ng guest sees) holding only
    ansible (from this interpreter's ansible-core) and ansible_collections/hypervisor/vfio."""
    import ansible
    root = os.path.join(B.BENCH_CACHE, 'guestpath')
    coll = os.path.join(root, 'ansible_collections', 'hypervisor')
    os.makedirs(coll, exist_ok=True)
    links = {os.path.join(root, 'ansible'): os.path.dirname(ansible.__file__),
             os.path.join(coll, 'vfio'): B.REPO}
    for link, target in links.items():
        if os.path.islink(link) and os.readlink(link) != target:
            os.unlink(link)
        if not os.path.lexists(link):
            os.symlink(target, link)
    return root


def trace_start():
    ssh('mountpoint -q %(t)s || mount -t tracefs nodev %(t)s; cd %(t)s && echo 0 > tracing_on && '
        'echo nop > current_tracer && echo function_graph > current_tracer && echo 1 > max_graph_depth && '
        'echo "pci_device_remove pci_device_probe" > set_graph_function && echo > trace && '
        'echo 1 > tracing_on' % {'t': TRACE})


def trace_stop():
    out = ssh('cd %(t)s && echo 0 > tracing_on && cat trace && echo nop > current_tracer && '
              'echo > set_graph_function' % {'t': TRACE})
    calls = []
    for line in out.splitlines():
        # a leaf line "1234.5 us | pci_device_probe();" or, when the record was split by
        # another event, the closing line "1234.5 us | } /* pci_device_probe */"
        m = re.search(r'([\d.]+) us\s+\|\s+(?:\} /\* )?(pci_device_remove|pci_device_probe)(?:\(\);| \*/)', line)
        if m:
            calls.append((m.group(2), float(m.group(1)) / 1e6))
    return calls


def in_guest(pythonpath, devices, state):
    """Run vfio_bind in the guest; (process seconds, result)."""
    args = json.dumps({'ANSIBLE_MODULE_ARGS': {'devices': devices, 'state': state}})
    out = ssh("set -e; printf '%%s' '%s' > /tmp/vfio-bench-args.json; s=$(date +%%s%%N); "
              "PYTHONPATH=%s /usr/bin/python3 -m %s /tmp/vfio-bench-args.json > /tmp/vfio-bench-out.json || true; "
              "e=$(date +%%s%%N); echo \"$((e - s))\"; cat /tmp/vfio-bench-out.json"
              % (args, pythonpath, MODULE))
    ns, _, body = out.partition('\n')
    res = json.loads(body[body.find('{'):])
    if res.get('failed'):
        raise RuntimeError('vfio_bind %s %s failed in the guest: %s' % (state, devices, res.get('msg')))
    if not res.get('changed'):
        raise RuntimeError('vfio_bind %s %s changed nothing: the lab was not in the expected state' % (state, devices))
    return int(ns) / 1e9, res


def through_ansible(inventory, env, devices, state):
    args = json.dumps({'devices': devices, 'state': state})
    t0 = time.perf_counter()
    p = subprocess.run([ANSIBLE, '-i', inventory, 'all', '-m', 'hypervisor.vfio.vfio_bind', '-a', args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env,
                       stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError('vfio_bind %s %s failed:\n%s\n%s' % (state, devices, p.stdout[-3000:], p.stderr[-2000:]))
    return dt


def fit(points):
    """Least-squares line through (n, y): (intercept, slope)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    return my - slope * mx, slope


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--sizes', default='1,4,8,16', help='numbers of devices per call')
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]
    inventory = B.labctl('inventory').strip()
    with open(inventory) as f:
        extra = re.findall(r'^\s+- "([0-9a-f:.]+)"', f.read().split('lab_extra_devices:', 1)[-1], re.M)
    if len(extra) < max(sizes):
        sys.exit('the lab has %d extra devices, %d needed: boot it with LAB_EXTRA_DEVICES=%d'
                 % (len(extra), max(sizes), max(sizes)))
    pythonpath = guest_pythonpath()
    root = B.import_collection()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=root, ANSIBLE_HOST_KEY_CHECKING='False',
               ANSIBLE_LOCAL_TEMP=tempfile.mkdtemp(prefix='vfio-bench-ansible-'))
    # Start from the host drivers (give back whatever an aborted run left bound).
    through_ansible(inventory, env, extra[:max(sizes)], 'host')
    res = {}
    ans = {}
    for r in range(args.rounds):
        order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]
        for n in order:
            devs = extra[:n]
            for state in ('vfio', 'host'):
                trace_start()
                proc, result = in_guest(pythonpath, devs, state)
                calls = trace_stop()
                kernel = sum(t for _, t in calls)
                res.setdefault((n, state), []).append((proc, kernel, len(calls)))
                B.log('round %d, %2d devices %-4s: process %.2f s, kernel %.3f s in %d calls'
                      % (r + 1, n, state, proc, kernel, len(calls)))
        for n in (sizes[0], sizes[-1]):
            for state in ('vfio', 'host'):
                ans.setdefault((n, state), []).append(through_ansible(inventory, env, extra[:n], state))
    print('## kernel_overhead (lab %s, %d rounds, medians; module process timed in the guest)'
          % (os.environ.get('LAB_NAME', 'default'), args.rounds))
    print()
    rows, own = [], {}
    for (n, state), xs in sorted(res.items()):
        p = B.median([x[0] for x in xs])
        k = B.median([x[1] for x in xs])
        own[(n, state)] = B.median([x[0] - x[1] for x in xs])
        rows.append([n, state, '%.2f' % p, '%.3f' % k, xs[0][2], '%.2f' % own[(n, state)], '%.1f%%' % (100 * k / p)])
    print(B.table(['devices', 'state', 'module process s', 'kernel unbind+probe s', 'kernel calls', 'own s',
                   'kernel share'], rows))
    print()
    rows = []
    for state in ('vfio', 'host'):
        fixed, per = fit([(n, own[(n, state)]) for n in sizes])
        kfixed, kper = fit([(n, B.median([x[1] for x in res[(n, state)]])) for n in sizes])
        rows.append([state, '%.3f' % per, '%.2f' % fixed, '%.3f' % kper])
    print(B.table(['state', 'own s per device (slope)', 'own s fixed (intercept)', 'kernel s per device (slope)'],
                  rows))
    print()
    rows = []
    for (n, state), xs in sorted(ans.items()):
        w = B.median(xs)
        p = B.median([x[0] for x in res[(n, state)]])
        rows.append([n, state, '%.2f' % w, '%.2f' % p, '%.2f' % (w - p)])
    print(B.table(['devices', 'state', 'ansible -m call s (controller)', 'module process s (guest)',
                   'transport + AnsiballZ + controller s'], rows))


if __name__ == '__main__':
    main()

#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8 part 4 / issue 17 goal 2: vfio_bind's own time over the kernel's unbind and probe, on the lab VM.

    LAB_NAME=bench8 LAB_EXTRA_DEVICES=16 LAB_CPUS=1 lab/labctl up   # a private lab with 16 extra devices
    LAB_NAME=bench8 benchmarks/kernel_overhead.py [--rounds 3] [--sizes 1,4,8,16] [--compare main]
    LAB_NAME=bench8 lab/labctl down

What is timed is the module process Ansible runs: for each number n of the lab's extra devices
(e1000e, virtio-net 1041, pci-testdev: the module picks vfio-pci, virtio_vfio_pci, vfio_testdev)
and each state (vfio, then host), one `ansible -m hypervisor.vfio.vfio_bind` call with
ANSIBLE_KEEP_REMOTE_FILES leaves its AnsiballZ payload (arguments inside) in the guest; each
round then runs that payload in the guest (`python3 AnsiballZ_vfio_bind.py`), timed in the
guest, while the guest's ftrace (function_graph, depth 1) times every pci_device_remove
(unbind) and pci_device_probe the kernel runs.  own = process time - kernel time; a
least-squares line own(n) = fixed + n * per-device gives the module's own cost per device, and
own per device / kernel per device is the ratio of the goal (<= 1).  SSH and the controller
are out of the figure; nothing is read from the host's filesystem (the payload carries the
collection), unlike a direct run of the module's .py files over 9p.

--compare REV times the collection at git revision REV of this repository (exported with `git
archive` to a temporary directory) in the same rounds, interleaved, so that before and after
are measured side by side.  The lab is TCG-emulated: every number is many times a real host's;
the ratios are what carries over.
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


def ssh(cmd):
    return B.labctl('ssh', cmd)


def export_revision(rev):
    """A temporary copy of the repository at rev (git archive), for --compare."""
    out = tempfile.mkdtemp(prefix='vfio-bench-rev-')
    archive = subprocess.run(['git', '-C', B.REPO, 'archive', '--format=tar', rev], stdout=subprocess.PIPE,
                             check=True).stdout
    subprocess.run(['tar', '-x', '-C', out], input=archive, check=True)
    return out


def collection_root(repo):
    """A temporary directory holding ansible_collections/hypervisor/vfio -> repo."""
    root = tempfile.mkdtemp(prefix='vfio-bench-ac-')
    os.makedirs(os.path.join(root, 'ansible_collections', 'hypervisor'))
    os.symlink(repo, os.path.join(root, 'ansible_collections', 'hypervisor', 'vfio'))
    return root


PAYLOADS = '/root/vfio-bench'


def make_payload(inventory, env, devices, state, tag):
    """Run vfio_bind through Ansible once, keeping its AnsiballZ payload in the guest as
    PAYLOADS/<tag>.py; the call itself binds (state=vfio) or gives back (state=host)."""
    rtmp = '/tmp/vfio-bench-rt-' + tag
    through_ansible(inventory, dict(env, ANSIBLE_KEEP_REMOTE_FILES='1'), devices, state,
                    ['-e', 'ansible_pipelining=false', '-e', 'ansible_remote_tmp=' + rtmp])
    ssh('set -e; mkdir -p %(p)s; f=$(ls %(r)s/ansible-tmp-*/AnsiballZ_vfio_bind.py | head -n1); '
        'mv "$f" %(p)s/%(t)s.py; rm -rf %(r)s' % {'p': PAYLOADS, 'r': rtmp, 't': tag})


def trace_start():
    ssh('mountpoint -q %(t)s || mount -t tracefs nodev %(t)s; cd %(t)s && echo 0 > tracing_on && '
        'echo nop > current_tracer && echo function_graph > current_tracer && echo 1 > max_graph_depth && '
        'echo funcgraph-abstime > trace_options && '
        'echo "pci_device_remove pci_device_probe" > set_graph_function && echo > trace && '
        'echo 1 > tracing_on' % {'t': TRACE})


def trace_stop():
    """[(function, start s, duration s)] of the kernel's unbinds and probes since trace_start."""
    out = ssh('cd %(t)s && echo 0 > tracing_on && cat trace && echo nofuncgraph-abstime > trace_options && '
              'echo nop > current_tracer && echo > set_graph_function' % {'t': TRACE})
    calls = []
    for line in out.splitlines():
        # "<abstime> | cpu) <duration> us | pci_device_probe();" (a leaf: stamped at its entry) or,
        # when another event split the record, the closing "... | } /* pci_device_probe */" (at its exit)
        m = re.search(r'^\s*([\d.]+)\s*\|.*?([\d.]+) us\s+\|\s+(\} /\* )?(pci_device_remove|pci_device_probe)'
                      r'(?:\(\);| \*/)', line)
        if m:
            dur = float(m.group(2)) / 1e6
            start = float(m.group(1)) - (dur if m.group(3) else 0.0)
            calls.append((m.group(4), start, dur))
    return calls


def span_own(calls):
    """The time between the first unbind/probe's start and the last one's end, minus the kernel's
    time in them: the module's own work between its first and last device write."""
    if not calls:
        return 0.0
    return max(c[1] + c[2] for c in calls) - min(c[1] for c in calls) - sum(c[2] for c in calls)


# CPU ticks (user+system, the process's and its reaped children's) of systemd-udevd and its
# "(udev-worker)" processes, summed from /proc/<pid>/stat: the guest's udev handles the uevents
# each unbind and bind emits, on the same single vCPU, inside the span between two writes.
UDEV_AWK = r"""{ if (match($0, /\(.*\)/)) { comm = substr($0, RSTART + 1, RLENGTH - 2);
  split(substr($0, RSTART + RLENGTH + 1), f, " "); if (comm ~ /udev/) t += f[12] + f[13] + f[14] + f[15] } }
END { print t + 0 }"""
UDEV_TICKS = 'awk -f %s/udev.awk /proc/[0-9]*/stat 2>/dev/null; true' % PAYLOADS  # a process may end meanwhile


def in_guest(tag, devices, state):
    """Run the kept AnsiballZ payload in the guest; (process seconds, result, udev CPU seconds)."""
    out = ssh("set -e; u0=$(%s); s=$(date +%%s%%N); /usr/bin/python3 %s/%s.py > /tmp/vfio-bench-out.json || true; "
              "e=$(date +%%s%%N); u1=$(%s); echo \"$((e - s)) $((u1 - u0)) $(getconf CLK_TCK)\"; "
              "cat /tmp/vfio-bench-out.json" % (UDEV_TICKS, PAYLOADS, tag, UDEV_TICKS))
    head, _, body = out.partition('\n')
    ns, ticks, hz = head.split()
    res = json.loads(body[body.find('{'):])
    if res.get('failed'):
        raise RuntimeError('vfio_bind %s %s failed in the guest: %s' % (state, devices, res.get('msg')))
    if not res.get('changed'):
        raise RuntimeError('vfio_bind %s %s changed nothing: the lab was not in the expected state' % (state, devices))
    return int(ns) / 1e9, res, int(ticks) / float(hz)


def through_ansible(inventory, env, devices, state, extra=()):
    args = json.dumps({'devices': devices, 'state': state})
    t0 = time.perf_counter()
    p = subprocess.run([ANSIBLE, '-i', inventory, 'all', '-m', 'hypervisor.vfio.vfio_bind', '-a', args] + list(extra),
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
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--sizes', default='1,4,8,16', help='numbers of devices per call')
    ap.add_argument('--compare', metavar='REV', help='also time the collection at this git revision')
    ap.add_argument('--reuse-payloads', action='store_true',
                    help='time the payloads an earlier run of the same sizes and --compare left in the guest')
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]
    inventory = B.labctl('inventory').strip()
    with open(inventory) as f:
        extra = re.findall(r'^\s+- "([0-9a-f:.]+)"', f.read().split('lab_extra_devices:', 1)[-1], re.M)
    if len(extra) < max(sizes):
        sys.exit('the lab has %d extra devices, %d needed: boot it with LAB_EXTRA_DEVICES=%d'
                 % (len(extra), max(sizes), max(sizes)))
    variants = [('HEAD', B.REPO)]
    if args.compare:
        variants.insert(0, (args.compare, export_revision(args.compare)))
    local_tmp = tempfile.mkdtemp(prefix='vfio-bench-ansible-')
    envs = dict((name, dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collection_root(repo),
                            ANSIBLE_HOST_KEY_CHECKING='False', ANSIBLE_LOCAL_TEMP=local_tmp))
                for name, repo in variants)
    # Start from the host drivers (give back whatever an aborted run left bound), then keep one
    # payload per variant, size and state (each made by a real call: vfio then host).
    through_ansible(inventory, envs['HEAD'], extra[:max(sizes)], 'host')
    tags = dict(((name, n, state), 'v%d-%d-%s' % (vi, n, state)) for vi, (name, dummy) in enumerate(variants)
                for n in sizes for state in ('vfio', 'host'))
    if args.reuse_payloads:
        ssh('cd %s && ls %s >/dev/null' % (PAYLOADS, ' '.join(t + '.py' for t in tags.values())))
    else:
        ssh('rm -rf %s' % PAYLOADS)
        ssh("mkdir -p %s && cat > %s/udev.awk <<'EOF'\n%s\nEOF" % (PAYLOADS, PAYLOADS, UDEV_AWK))
        for name, dummy in variants:
            for n in sizes:
                for state in ('vfio', 'host'):
                    make_payload(inventory, envs[name], extra[:n], state, tags[(name, n, state)])
            B.log('payloads of %s kept in the guest' % name)
    res = {}
    for r in range(args.rounds):
        order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]
        for n in order:
            for name, dummy in (variants if r % 2 == 0 else variants[::-1]):
                for state in ('vfio', 'host'):
                    trace_start()
                    proc, result, udev = in_guest(tags[(name, n, state)], extra[:n], state)
                    calls = trace_stop()
                    kernel = sum(c[2] for c in calls)
                    res.setdefault((name, n, state), []).append((proc, kernel, len(calls), span_own(calls), udev))
                    B.log('round %d, %-8s %2d devices %-4s: process %.2f s, kernel %.3f s in %d calls, own between '
                          'the first and last call %.3f s, udev CPU %.2f s' % (
                              r + 1, name, n, state, proc, kernel, len(calls), span_own(calls), udev))
    print('## kernel_overhead (lab %s, %d rounds, medians; the AnsiballZ process timed in the guest)'
          % (os.environ.get('LAB_NAME', 'default'), args.rounds))
    print()
    rows, own = [], {}
    for (name, n, state), xs in sorted(res.items(), key=lambda kv: ([v[0] for v in variants].index(kv[0][0]),
                                                                    kv[0][1], kv[0][2])):
        p = B.median([x[0] for x in xs])
        k = B.median([x[1] for x in xs])
        own[(name, n, state)] = B.median([x[0] - x[1] for x in xs])
        rows.append([name, n, state, '%.2f' % p, '%.3f' % k, xs[0][2], '%.2f' % own[(name, n, state)],
                     '%.1f%%' % (100 * k / p), '%.3f' % B.median([x[3] for x in xs]),
                     '%.2f' % B.median([x[4] for x in xs])])
    print(B.table(['collection', 'devices', 'state', 'module process s', 'kernel unbind+probe s', 'kernel calls',
                   'own s', 'kernel share', 'own between first and last write s', 'udev CPU s'], rows))
    print()
    rows = []
    for state in ('vfio', 'host'):
        for name, dummy in variants:
            fixed, per = fit([(n, own[(name, n, state)]) for n in sizes])
            kfixed, kper = fit([(n, B.median([x[1] for x in res[(name, n, state)]])) for n in sizes])
            sfixed, sper = fit([(n, B.median([x[3] for x in res[(name, n, state)]])) for n in sizes])
            ufixed, uper = fit([(n, B.median([x[4] for x in res[(name, n, state)]])) for n in sizes])
            rows.append([state, name, '%.3f' % per, '%.2f' % fixed, '%.3f' % kper,
                         '%.2f' % (per / kper) if kper else '-', '%.3f' % sper,
                         '%.2f' % (sper / kper) if kper else '-', '%.3f' % uper])
    print(B.table(['state', 'collection', 'own s per device (slope)', 'own s fixed (intercept)',
                   'kernel s per device (slope)', 'own / kernel per device', 'own s per device between writes',
                   'that / kernel', 'udev CPU s per device'], rows))


if __name__ == '__main__':
    main()

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
round then runs that payload in the guest (`python3 AnsiballZ_vfio_bind.py` under a small
runner that reports its pid, wall time and CPU time from wait4), while the guest's tracefs
records, as dynamic events (fprobes, entry and return):

- every kernfs_fop_write_iter (the kernel's whole handling of a write to a sysfs attribute:
  driver_override, unbind, bind, drivers_probe...; with the attribute's and its folder's names)
  of the module's processes (the payload and the bounded-write helper it forks);
- every pci_device_remove and pci_device_probe (rounds 2-3's kernel figure, kept beside);
- the scheduler's switches and forks (who was on the CPU when, which processes are the module's).

From those, per run: the kernel's time in the module's sysfs writes (entry to return); the span
from the first write's start to the last one's end; own = span - the writes (the module's wall
time between its writes, which still holds udev, kworkers and idle time); own CPU = the module's
processes on the CPU inside the span, outside their writes (what udev cannot inflate); and the
udev processes' CPU time inside the span.  Per device: least-squares slopes over n, and
own / kernel per device is the ratio of the goal (<= 1).  SSH and the controller are out of the
figure; nothing is read from the host's filesystem (the payload carries the collection).

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


# -- the guest's trace ---------------------------------------------------------------------------
# Dynamic events (fprobes: function entry and %return, BTF arguments for the file name) on the
# kernfs write every sysfs attribute write goes through, and on pci_device_remove/pci_device_probe
# (rounds 2-3's kernel figure); the scheduler's switches and forks, to know which processes are
# the module's and when each of them (and udev) ran.
GROUP = 'vfiobench'
KW_ARGS = ('attr=iocb->ki_filp->f_path.dentry->d_name.name:string '
           'dir=iocb->ki_filp->f_path.dentry->d_parent->d_name.name:string')
# (event, definitions to try in turn): an fprobe with BTF arguments, else a kprobe with them,
# else a kprobe without (the analysis then reads '?' for the attribute's name)
PROBES = (
    ('kw', ('f:{g}/kw kernfs_fop_write_iter ' + KW_ARGS, 'p:{g}/kw kernfs_fop_write_iter ' + KW_ARGS,
            'p:{g}/kw kernfs_fop_write_iter')),
    ('kw_ret', ('f:{g}/kw_ret kernfs_fop_write_iter%return ret=$retval',
                'r:{g}/kw_ret kernfs_fop_write_iter ret=$retval')),
    ('rm', ('f:{g}/rm pci_device_remove', 'p:{g}/rm pci_device_remove')),
    ('rm_ret', ('f:{g}/rm_ret pci_device_remove%return', 'r:{g}/rm_ret pci_device_remove')),
    ('pr', ('f:{g}/pr pci_device_probe', 'p:{g}/pr pci_device_probe')),
    ('pr_ret', ('f:{g}/pr_ret pci_device_probe%return ret=$retval', 'r:{g}/pr_ret pci_device_probe ret=$retval')),
)
SCHED_EVENTS = ('sched/sched_switch', 'sched/sched_process_fork')


def _drop_probes():
    return ' '.join('echo "-:%s/%s" >> dynamic_events 2>/dev/null;' % (GROUP, name) for name, dummy in PROBES)


def trace_setup():
    """Define the probe events in the guest (once per run of the script); print which definition
    each one got."""
    tries = [["echo '%s' >> dynamic_events 2>/dev/null" % d.format(g=GROUP) for d in defs] for dummy, defs in PROBES]
    define = ' && '.join('{ %s; }' % ' || '.join(t) for t in tries)
    out = ssh('mountpoint -q %(t)s || mount -t tracefs nodev %(t)s; cd %(t)s && echo 0 > tracing_on && '
              'echo nop > current_tracer && echo 0 > events/enable && { %(drop)s true; } && %(define)s && '
              'echo 16384 > buffer_size_kb && grep %(g)s/ dynamic_events'
              % {'t': TRACE, 'drop': _drop_probes(), 'define': define, 'g': GROUP})
    B.log('trace events in the guest:\n' + out.strip())


def trace_start():
    ssh('cd %(t)s && echo 0 > tracing_on && echo > trace && echo 1 > events/%(g)s/enable && %(s)s && '
        'echo 1 > tracing_on' % {'t': TRACE, 'g': GROUP,
                                 's': ' && '.join('echo 1 > events/%s/enable' % e for e in SCHED_EVENTS)})


def trace_stop():
    """The trace's text since trace_start (events off again)."""
    return ssh('cd %(t)s && echo 0 > tracing_on && echo 0 > events/enable && cat trace' % {'t': TRACE})


def trace_teardown():
    ssh('cd %(t)s && echo 0 > tracing_on && echo 0 > events/enable && echo > trace && { %(drop)s true; }'
        % {'t': TRACE, 'drop': _drop_probes()})


# "  comm-pid  [cpu] flags  12.345678: event: fields" (comm may hold '-' and spaces)
EVENT_RE = re.compile(r'^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+(?:\S+\s+)?([\d.]+):\s+(\w+):\s?(.*)$')
FIELD_RE = re.compile(r'(\w+)=(".*?"|\S+)')


def parse_trace(text):
    """[(ts, cpu, comm, pid, event, {field: value})] of the trace's events, in order."""
    out = []
    for line in text.splitlines():
        if line.startswith('#'):
            continue
        m = EVENT_RE.match(line)
        if not m:
            continue
        comm, pid, cpu, ts, event, rest = m.groups()
        fields = dict((k, v.strip('"')) for k, v in FIELD_RE.findall(rest))
        out.append((float(ts), int(cpu), comm, int(pid), event, fields))
    return out


def _pairs(events, enter, leave):
    """[(pid, start, end, entry fields)] of the calls an enter/leave pair of events brackets
    (paired per pid, innermost first; a call still open at the end is dropped)."""
    open_, calls = {}, []
    for ts, dummy, dummy2, pid, ev, fields in events:
        if ev == enter:
            open_.setdefault(pid, []).append((ts, fields))
        elif ev == leave and open_.get(pid):
            start, f = open_[pid].pop()
            calls.append((pid, start, ts, f))
    return sorted(calls, key=lambda c: c[1])


def _running(events, t_end):
    """{pid: [(start, end)]} of the time each process was on a CPU (from sched_switch)."""
    cur, out = {}, {}
    for ts, cpu, dummy, dummy2, ev, f in events:
        if ev != 'sched_switch':
            continue
        prev = int(f.get('prev_pid', -1))
        if cpu in cur and cur[cpu][0] == prev:
            out.setdefault(prev, []).append((cur[cpu][1], ts))
        cur[cpu] = (int(f['next_pid']), ts)
    for pid, since in cur.values():
        out.setdefault(pid, []).append((since, t_end))
    return out


def _overlap(intervals, lo, hi):
    return sum(max(0.0, min(b, hi) - max(a, lo)) for a, b in intervals)


def analyse(text, root_pid):
    """What one payload run's trace says.  root_pid is the module process (the AnsiballZ
    python); its descendants (the bounded-write helper) are the module's too.

    Returns a dict: pci_calls / pci_kernel / pci_own_span (rounds 2-3's figures: the kernel's
    time in pci_device_remove/probe and the time between the first and last of them minus it),
    writes [(attr, dir, seconds)] of the module's sysfs writes, write_kernel (their whole
    time in the kernel: kernfs_fop_write_iter from entry to return), span (the first write's
    start to the last one's end), own_span (span - write_kernel), own_cpu (the module's
    processes on a CPU inside the span, outside their writes), write_cpu (their time on a CPU
    inside the writes), udev_cpu / other_cpu / idle (the rest of the span, by who ran), udev_in_writes
    (udev's part of the span that falls inside the module's writes: on one vCPU, udev handles the
    uevents a write emits while the write is preempted or asleep)."""
    events = parse_trace(text)
    mine = set([root_pid])
    for dummy, dummy2, dummy3, pid, ev, f in events:
        if ev == 'sched_process_fork' and int(f.get('pid', pid)) in mine:
            mine.add(int(f['child_pid']))
    pci = _pairs(events, 'rm', 'rm_ret') + _pairs(events, 'pr', 'pr_ret')
    res = {'pci_calls': len(pci), 'pci_kernel': sum(e - s for dummy, s, e, dummy2 in pci)}
    res['pci_own_span'] = (max(e for dummy, dummy2, e, dummy3 in pci) - min(s for dummy, s, dummy2, dummy3 in pci)
                           - res['pci_kernel']) if pci else 0.0
    writes = [w for w in _pairs(events, 'kw', 'kw_ret') if w[0] in mine]
    res['writes'] = [(f.get('attr', '?'), f.get('dir', '?'), e - s) for dummy, s, e, f in writes]
    res['write_kernel'] = sum(e - s for dummy, s, e, dummy2 in writes)
    if not writes:
        res.update(span=0.0, own_span=0.0, own_cpu=0.0, write_cpu=0.0, udev_cpu=0.0, udev_in_writes=0.0,
                   other_cpu=0.0, idle=0.0)
        return res
    lo, hi = writes[0][1], max(e for dummy, dummy2, e, dummy3 in writes)
    running = _running(events, events[-1][0] if events else hi)
    comms = {}
    for dummy, dummy2, comm, pid, ev, f in events:
        comms.setdefault(pid, comm)
        if ev == 'sched_switch':
            comms[int(f['next_pid'])] = f.get('next_comm', '?')
    in_span = dict((pid, _overlap(iv, lo, hi)) for pid, iv in running.items())
    write_cpu = sum(_overlap(running.get(pid, ()), s, e) for pid, s, e, dummy in writes)
    udev = [pid for pid in running if pid not in mine and 'udev' in comms.get(pid, '')]
    res['udev_in_writes'] = sum(_overlap(running[pid], s, e) for pid in udev for dummy, s, e, dummy2 in writes)
    module_cpu = sum(t for pid, t in in_span.items() if pid in mine)
    res.update(span=hi - lo, own_span=hi - lo - res['write_kernel'], own_cpu=module_cpu - write_cpu,
               write_cpu=write_cpu, idle=in_span.get(0, 0.0),
               udev_cpu=sum(in_span[pid] for pid in udev))
    res['other_cpu'] = hi - lo - module_cpu - res['udev_cpu'] - res['idle']
    return res


# CPU ticks (user+system, the process's and its reaped children's) of systemd-udevd and its
# "(udev-worker)" processes, summed from /proc/<pid>/stat: the guest's udev handles the uevents
# each unbind and bind emits, on the same single vCPU, inside the span between two writes.
UDEV_AWK = r"""{ if (match($0, /\(.*\)/)) { comm = substr($0, RSTART + 1, RLENGTH - 2);
  split(substr($0, RSTART + RLENGTH + 1), f, " "); if (comm ~ /udev/) t += f[12] + f[13] + f[14] + f[15] } }
END { print t + 0 }"""
UDEV_TICKS = 'awk -f %s/udev.awk /proc/[0-9]*/stat 2>/dev/null; true' % PAYLOADS  # a process may end meanwhile


# Runs one payload in the guest: its pid (the trace's root of the module's processes), wall time
# and CPU time (user + system of the process and of the helper it reaps, from wait4's rusage).
RUNNER = r"""import json, os, subprocess, sys, time
with open(sys.argv[2], 'w') as out:
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, sys.argv[1]], stdout=out, stdin=subprocess.DEVNULL)
    dummy, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = status
print(json.dumps({'pid': p.pid, 'wall': wall, 'user': ru.ru_utime, 'sys': ru.ru_stime}))
"""


def in_guest(tag, devices, state):
    """Run the kept AnsiballZ payload in the guest: ({pid, wall, user, sys}, result, udev CPU seconds)."""
    out = ssh("set -e; u0=$(%s); /usr/bin/python3 %s/runner.py %s/%s.py /tmp/vfio-bench-out.json; u1=$(%s); "
              "echo \"$((u1 - u0)) $(getconf CLK_TCK)\"; cat /tmp/vfio-bench-out.json"
              % (UDEV_TICKS, PAYLOADS, PAYLOADS, tag, UDEV_TICKS))
    proc, ticks, body = out.split('\n', 2)
    ticks, hz = ticks.split()
    res = json.loads(body[body.find('{'):])
    if res.get('failed'):
        raise RuntimeError('vfio_bind %s %s failed in the guest: %s' % (state, devices, res.get('msg')))
    if not res.get('changed'):
        raise RuntimeError('vfio_bind %s %s changed nothing: the lab was not in the expected state' % (state, devices))
    return json.loads(proc), res, int(ticks) / float(hz)


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
    ap.add_argument('--report', metavar='RUNS_JSON',
                    help='print the tables of the runs.json an earlier --keep-traces run left (no lab needed)')
    ap.add_argument('--keep-traces', metavar='DIR',
                    help='keep each run\'s trace text and the figures of every run (runs.json) in DIR')
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        runs = dict(((x['collection'], x['devices'], x['state']), x['runs']) for x in saved)
        names = []
        for x in saved:
            if x['collection'] not in names:
                names.append(x['collection'])
        report(runs, [(name, None) for name in names], sorted(set(x['devices'] for x in saved)),
               len(saved[0]['runs']))
        return
    sizes = [int(s) for s in args.sizes.split(',')]
    if args.keep_traces and not os.path.isdir(args.keep_traces):
        os.makedirs(args.keep_traces)
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
    trace_setup()  # first: a guest whose tracefs lacks something fails before the payloads are made
    # Start from the host drivers (give back whatever an aborted run left bound), then keep one
    # payload per variant, size and state (each made by a real call: vfio then host).
    through_ansible(inventory, envs['HEAD'], extra[:max(sizes)], 'host')
    tags = dict(((name, n, state), 'v%d-%d-%s' % (vi, n, state)) for vi, (name, dummy) in enumerate(variants)
                for n in sizes for state in ('vfio', 'host'))
    if args.reuse_payloads:
        ssh('cd %s && ls %s >/dev/null' % (PAYLOADS, ' '.join(t + '.py' for t in tags.values())))
    else:
        ssh('rm -rf %s' % PAYLOADS)
        for name, dummy in variants:
            for n in sizes:
                for state in ('vfio', 'host'):
                    make_payload(inventory, envs[name], extra[:n], state, tags[(name, n, state)])
            B.log('payloads of %s kept in the guest' % name)
    ssh("mkdir -p %(p)s && cat > %(p)s/udev.awk <<'EOF'\n%(u)s\nEOF\ncat > %(p)s/runner.py <<'EOF'\n%(r)sEOF"
        % {'p': PAYLOADS, 'u': UDEV_AWK, 'r': RUNNER})
    runs = {}
    try:
        for r in range(args.rounds):
            order = sizes[r % len(sizes):] + sizes[:r % len(sizes)]
            for n in order:
                for name, dummy in (variants if r % 2 == 0 else variants[::-1]):
                    for state in ('vfio', 'host'):
                        load = os.getloadavg()[0]
                        trace_start()
                        proc, result, udev = in_guest(tags[(name, n, state)], extra[:n], state)
                        text = trace_stop()
                        a = analyse(text, proc['pid'])
                        if not a['writes']:
                            raise RuntimeError('the trace holds no sysfs write of the module (pid %d): %s'
                                               % (proc['pid'], text[-3000:]))
                        if args.keep_traces:
                            with open(os.path.join(args.keep_traces, 'r%d-%s-%d-%s.trace' % (
                                    r + 1, tags[(name, n, state)], n, state)), 'w') as f:
                                f.write(text)
                        a.update(pid=proc['pid'], wall=proc['wall'], cpu=proc['user'] + proc['sys'], udev_ticks=udev,
                                 load=load)
                        runs.setdefault((name, n, state), []).append(a)
                        B.log('round %d, %-8s %2d devices %-4s: process %.2f s (CPU %.2f), %d sysfs writes %.3f s in '
                              'the kernel (pci_device_remove/probe %.3f s in %d calls), span %.3f s: own %.3f s, '
                              'own CPU %.3f s, udev CPU in it %.3f s; load %.1f' % (
                                  r + 1, name, n, state, a['wall'], a['cpu'], len(a['writes']), a['write_kernel'],
                                  a['pci_kernel'], a['pci_calls'], a['span'], a['own_span'], a['own_cpu'],
                                  a['udev_cpu'], load))
    finally:
        trace_teardown()
        if args.keep_traces:
            with open(os.path.join(args.keep_traces, 'runs.json'), 'w') as f:
                json.dump([{'collection': k[0], 'devices': k[1], 'state': k[2], 'runs': v} for k, v in runs.items()],
                          f, indent=1)
    report(runs, variants, sizes, args.rounds)


def report(runs, variants, sizes, rounds):
    """The Markdown tables of the runs {(collection, n, state): [analyse() + wall, cpu, ...]}."""
    def med(xs, key):
        return B.median([x[key] for x in xs])

    def ratio(a, b):
        return '%.2f' % (a / b) if b else '-'

    names = [v[0] for v in variants]
    keys = sorted(runs, key=lambda k: (names.index(k[0]), k[1], k[2]))
    print('## kernel_overhead (lab %s, %d rounds, medians; the AnsiballZ process timed in the guest)'
          % (os.environ.get('LAB_NAME', 'default'), rounds))
    print()
    rows = []
    for k in keys:
        xs = runs[k]
        rows.append(list(k) + ['%.2f' % med(xs, 'wall'), '%.2f' % med(xs, 'cpu'), '%.3f' % med(xs, 'pci_kernel'),
                               xs[0]['pci_calls'], '%.3f' % med(xs, 'pci_own_span'), len(xs[0]['writes']),
                               '%.3f' % med(xs, 'write_kernel'), '%.3f' % med(xs, 'write_cpu'),
                               '%.3f' % med(xs, 'span'),
                               '%.3f' % med(xs, 'own_span'), '%.3f' % med(xs, 'own_cpu'),
                               '%.3f' % med(xs, 'udev_cpu'), '%.3f' % med(xs, 'idle'), '%.2f' % med(xs, 'udev_ticks'),
                               '%.1f-%.1f' % (min(x['load'] for x in xs), max(x['load'] for x in xs))])
    print(B.table(['collection', 'devices', 'state', 'process s', 'process CPU s', 'pci remove+probe s', 'calls',
                   'own between first and last call s', 'sysfs writes', 'kernel in the writes s', 'their CPU s',
                   'span of the writes s', 'own in span s', 'own CPU in span s', 'udev CPU in span s',
                   'idle in span s', 'udev CPU (ticks) s', 'host load'], rows))
    print()
    print('Per device (least-squares slope over the sizes; own / kernel of the same definition):')
    print()
    rows = []
    for state in ('vfio', 'host'):
        for name in names:
            def per(key):
                return fit([(n, med(runs[(name, n, state)], key)) for n in sizes])[1]
            own_proc = fit([(n, B.median([x['cpu'] - x['write_cpu'] for x in runs[(name, n, state)]]))
                            for n in sizes])[1]
            kp, kw = per('pci_kernel'), per('write_kernel')
            kc = per('write_cpu')
            rows.append([state, name, '%.3f' % kp, '%.3f' % per('pci_own_span'), ratio(per('pci_own_span'), kp),
                         '%.3f' % kw, '%.3f' % per('own_span'), ratio(per('own_span'), kw),
                         '%.3f' % per('own_cpu'), ratio(per('own_cpu'), kw), '%.3f' % own_proc, ratio(own_proc, kw),
                         '%.3f' % kc, ratio(per('own_cpu'), kc), '%.3f' % per('udev_cpu'),
                         '%.3f' % per('udev_in_writes')])
    print(B.table(['state', 'collection', 'kernel: pci remove+probe', 'own between calls', '**A** own / kernel',
                   'kernel: whole sysfs writes', 'own in span', '**B** own / kernel', 'own CPU in span',
                   '**C** own CPU / kernel', 'process CPU - write CPU', '**D** that / kernel',
                   'kernel CPU in the writes', '**E** own CPU / kernel CPU', 'udev CPU in span',
                   'udev CPU inside the writes'], rows))
    print()
    big = max(sizes)
    print('Per round, %d devices, own / kernel in the same run (A: pci remove+probe, B: whole writes, C: own CPU '
          'over whole writes, E: own CPU over the writes\' CPU):' % big)
    print()
    rows = []
    for state in ('vfio', 'host'):
        for name in names:
            xs = runs[(name, big, state)]
            rows.append([state, name] + [' / '.join(ratio(x[a], x[b]) for x in xs) for a, b in (
                ('pci_own_span', 'pci_kernel'), ('own_span', 'write_kernel'), ('own_cpu', 'write_kernel'),
                ('own_cpu', 'write_cpu'))])
    print(B.table(['state', 'collection', 'A', 'B', 'C', 'E'], rows))
    print()
    print('The kernel\'s time per sysfs attribute, %d devices (medians over the rounds of the sum per run):' % big)
    print()
    rows = []
    for name in names:
        for state in ('vfio', 'host'):
            xs = runs[(name, big, state)]
            attrs = sorted(set(w[0] for x in xs for w in x['writes']))
            for attr in attrs:
                per_run = [[w[2] for w in x['writes'] if w[0] == attr] for x in xs]
                total = B.median([sum(p) for p in per_run])
                count = B.median([len(p) for p in per_run])
                rows.append([name, state, attr, '%g' % count, '%.3f' % total, '%.1f' % (1e3 * total / count)])
    print(B.table(['collection', 'state', 'attribute', 'writes', 'kernel s', 'ms per write'], rows))


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/kernel_overhead.py's reading of the lab guest's trace (BENCHMARKS.md part 4): the
kernel's time in the module's sysfs writes, the span between them, the module's own wall and CPU
time in that span, and who else ran in it. The trace is written here in tracefs's text format;
nothing touches a kernel."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import sys

import pytest


@pytest.fixture(scope='module')
def ko(benchmark_script):
    return benchmark_script('kernel_overhead')


def switch(ts, prev, prev_pid, nxt, next_pid, state='S'):
    return ('%16s-%-7d [000] d..2. %.6f: sched_switch: prev_comm=%s prev_pid=%d prev_prio=120 prev_state=%s ==> '
            'next_comm=%s next_pid=%d next_prio=120' % (prev, prev_pid, ts, prev, prev_pid, state, nxt, next_pid))


def probe(ts, comm, pid, event, rest=''):
    return '%16s-%-7d [000] ..... %.6f: %s: %s' % (comm, pid, ts, event, rest)


# One vCPU.  The module's python (pid 500) forks its write helper (501), which writes
# driver_override, unbind (the kernel sleeps in it while a udev worker runs) and drivers_probe;
# between the writes the module runs, a kworker runs, the CPU idles; a udev worker's own sysfs
# write is not the module's.
TRACE = '\n'.join([
    '# tracer: nop',
    '#',
    '#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION',
    switch(10.000, 'sshd', 400, 'python3', 500),
    probe(10.100, 'python3', 500, 'sched_process_fork', 'comm=python3 pid=500 child_comm=python3 child_pid=501'),
    switch(10.200, 'python3', 500, 'python3', 501),
    probe(10.200, 'python3', 501, 'kw', '(kernfs_fop_write_iter+0x4/0x1d0) attr="driver_override" dir="0000:01:00.0"'),
    probe(10.210, 'python3', 501, 'kw_ret', '(vfs_write+0x25e/0x450 <- kernfs_fop_write_iter) ret=0xd'),
    switch(10.210, 'python3', 501, 'python3', 500),
    switch(10.250, 'python3', 500, 'python3', 501),
    probe(10.250, 'python3', 501, 'kw', '(kernfs_fop_write_iter+0x4/0x1d0) attr="unbind" dir="e1000e"'),
    probe(10.260, 'python3', 501, 'rm', '(pci_device_remove+0x4/0xb0)'),
    switch(10.300, 'python3', 501, '(udev-worker)', 600, state='D'),
    probe(10.310, '(udev-worker)', 600, 'kw', '(kernfs_fop_write_iter+0x4/0x1d0) attr="uevent" dir="net"'),
    probe(10.320, '(udev-worker)', 600, 'kw_ret', '(vfs_write+0x25e/0x450 <- kernfs_fop_write_iter) ret=0x6'),
    switch(10.350, '(udev-worker)', 600, 'python3', 501),
    probe(10.360, 'python3', 501, 'rm_ret', '(device_remove+0x3e/0x80 <- pci_device_remove)'),
    probe(10.370, 'python3', 501, 'kw_ret', '(vfs_write+0x25e/0x450 <- kernfs_fop_write_iter) ret=0xc'),
    switch(10.370, 'python3', 501, 'python3', 500),
    switch(10.400, 'python3', 500, 'kworker/0:1', 30),
    switch(10.410, 'kworker/0:1', 30, 'swapper/0', 0),
    switch(10.420, 'swapper/0', 0, 'python3', 501, state='R'),
    probe(10.420, 'python3', 501, 'kw', '(kernfs_fop_write_iter+0x4/0x1d0) attr="drivers_probe" dir="pci"'),
    probe(10.430, 'python3', 501, 'pr', '(pci_device_probe+0x4/0x230)'),
    probe(10.480, 'python3', 501, 'pr_ret', '(really_probe+0xdb/0x3a0 <- pci_device_probe) ret=0x0'),
    probe(10.500, 'python3', 501, 'kw_ret', '(vfs_write+0x25e/0x450 <- kernfs_fop_write_iter) ret=0xc'),
    switch(10.500, 'python3', 501, 'python3', 500),
    switch(10.600, 'python3', 500, 'sshd', 400),
]) + '\n'


def test_parse_trace(ko):
    events = ko.parse_trace(TRACE)
    assert len(events) == len(TRACE.splitlines()) - 3  # the header's comment lines are not events
    ts, cpu, comm, pid, event, fields = events[7]
    assert (ts, cpu, comm, pid, event) == (10.250, 0, 'python3', 501, 'kw')
    assert fields == {'attr': 'unbind', 'dir': 'e1000e'}
    ts, cpu, comm, pid, event, fields = events[9]
    assert (comm, pid, event, fields['next_comm'], fields['next_pid']) == (
        'python3', 501, 'sched_switch', '(udev-worker)', '600')


def test_analyse(ko):
    a = ko.analyse(TRACE, 500)
    # rounds 2-3's figure: pci_device_remove 0.100 + pci_device_probe 0.050, 0.220 apart
    assert a['pci_calls'] == 2
    assert a['pci_kernel'] == pytest.approx(0.150)
    assert a['pci_own_span'] == pytest.approx(0.070)
    # the module's three writes (not the udev worker's), their whole time in the kernel
    assert [(w[0], w[1]) for w in a['writes']] == [
        ('driver_override', '0000:01:00.0'), ('unbind', 'e1000e'), ('drivers_probe', 'pci')]
    assert [w[2] for w in a['writes']] == pytest.approx([0.010, 0.120, 0.080])
    assert a['write_kernel'] == pytest.approx(0.210)
    assert a['span'] == pytest.approx(0.300)
    assert a['own_span'] == pytest.approx(0.090)
    # on the CPU in the span: the helper 0.16 s, all of it inside its writes; the module 0.07 s
    # between them; the udev worker 0.05 s (inside the unbind), the kworker 0.01, idle 0.01
    assert a['write_cpu'] == pytest.approx(0.160)
    assert a['own_cpu'] == pytest.approx(0.070)
    assert a['udev_cpu'] == pytest.approx(0.050)
    assert a['udev_in_writes'] == pytest.approx(0.050)  # all of it while the unbind slept
    assert a['idle'] == pytest.approx(0.010)
    assert a['other_cpu'] == pytest.approx(0.010)


def test_analyse_without_writes(ko):
    a = ko.analyse('\n'.join(TRACE.splitlines()[:5]), 500)
    assert a['writes'] == [] and a['write_kernel'] == 0.0 and a['own_cpu'] == 0.0 and a['pci_calls'] == 0


def test_report_from_saved_runs(ko, tmp_path, capsys):
    """--report re-prints the tables of a kept runs.json: per device (slope over the sizes) the
    three readings over their kernel figures, per round, per attribute."""
    one = ko.analyse(TRACE, 500)
    one.update(wall=5.0, cpu=3.0, udev_ticks=0.1, load=2.0)
    scaled = dict((k, v * 16 if isinstance(v, float) else v) for k, v in one.items())
    scaled.update(writes=one['writes'] * 16, pci_calls=32, wall=5.0 + 15 * 0.3, cpu=3.0 + 15 * 0.23, load=3.0)
    saved = [{'collection': 'HEAD', 'devices': n, 'state': state, 'runs': [run, run]}
             for n, run in ((1, one), (16, scaled)) for state in ('vfio', 'host')]
    path = tmp_path / 'runs.json'
    path.write_text(ko.json.dumps(saved))
    sys.argv = ['kernel_overhead.py', '--report', str(path)]
    ko.main()
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.split('|')[1:-1]] for line in out.splitlines() if line.startswith('|')]
    # A: 0.070 / 0.150; B: 0.090 / 0.210; C: 0.070 / 0.210; D: (0.23 - 0.16) / 0.210; E: 0.070 / 0.160
    assert ['host', 'HEAD', '0.150', '0.070', '0.47', '0.210', '0.090', '0.43', '0.070', '0.33', '0.070', '0.33',
            '0.160', '0.44', '0.050', '0.050'] in rows
    assert ['host', 'HEAD', '0.47 / 0.47', '0.43 / 0.43', '0.33 / 0.33', '0.44 / 0.44'] in rows  # per round
    assert ['HEAD', 'host', 'unbind', '16', '1.920', '120.0'] in rows  # per attribute, 16 devices
    assert ['HEAD', '16', 'host', '9.50', '6.45', '2.400', '32', '1.120', '48', '3.360', '2.560', '4.800', '1.440',
            '1.120', '0.800', '0.160', '1.60', '3.0-3.0'] in rows

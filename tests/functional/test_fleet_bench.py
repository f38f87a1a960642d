# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/fleet_local.py's helpers for ``--connection ssh`` (BENCHMARKS.md part 5): the run
specs, the per-host addresses, sshd and sudoers configuration, the inventory, and the subreaper
that collects the CPU of the processes SSH orphans. Nothing here starts sshd or touches /etc."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import ansible_collections.hypervisor.vfio as collection

BENCH = os.path.join(list(collection.__path__)[0], 'benchmarks')


@pytest.fixture(scope='module')
def fl(benchmark_script):
    return benchmark_script('fleet_local')


def test_run_specs(fl):
    assert fl.parse_run('role:rerun:linear:25', True) == dict(what='role', kind='rerun', strategy='linear', forks=25,
                                                              pipelining=True)
    assert fl.parse_run('naive:rerun:free:10:nopipe', True)['pipelining'] is False
    assert fl.parse_run('role:converge:linear:50:pipe', False)['pipelining'] is True
    for bad in ('role:rerun:linear', 'role:rerun:linear:25:maybe', 'shell:rerun:linear:25', 'role:rerun:random:25',
                'role:rerun:linear:x'):
        with pytest.raises(ValueError):
            fl.parse_run(bad, True)


def test_addresses_are_distinct_loopback_hosts(fl):
    addrs = [fl.ssh_address(i) for i in range(1000)]
    assert len(set(addrs)) == 1000
    assert addrs[0] == '127.77.0.1' and addrs[249] == '127.77.0.250' and addrs[250] == '127.77.1.1'
    assert all(a.startswith('127.77.') and not a.endswith(('.0', '.255')) for a in addrs)
    with pytest.raises(ValueError):
        fl.ssh_address(-1)


def test_sshd_config_logs_in_one_user_by_key_only(fl):
    cfg = fl.sshd_config('127.77.0.3', 2222, '/t/ssh/h0002/key', '/t/ssh/h0002/sshd.pid', '/t/ssh/authorized_keys',
                         'vfio-bench')
    lines = cfg.splitlines()
    for want in ('ListenAddress 127.77.0.3:2222', 'HostKey /t/ssh/h0002/key', 'PidFile /t/ssh/h0002/sshd.pid',
                 'AuthorizedKeysFile /t/ssh/authorized_keys', 'AllowUsers vfio-bench', 'PermitRootLogin no',
                 'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM yes'):
        assert want in lines, cfg


def test_sudoers_line(fl, tmp_path):
    line = fl.sudoers_line('vfio-bench')
    assert line == 'vfio-bench ALL=(ALL:ALL) NOPASSWD: ALL\n'
    for bad in ('', 'root ALL', 'a,b', 'x\nALL ALL=(ALL) ALL'):
        with pytest.raises(ValueError):
            fl.sudoers_line(bad)
    visudo = shutil.which('visudo') or ('/usr/sbin/visudo' if os.path.exists('/usr/sbin/visudo') else None)
    if visudo:      # the syntax sudo itself accepts (check mode: reads only the given file)
        f = tmp_path / 'dropin'
        f.write_text(line)
        f.chmod(0o440)
        p = subprocess.run([visudo, '-cqf', str(f)], capture_output=True, text=True, check=False)
        assert p.returncode == 0, p.stdout + p.stderr


def test_known_hosts_line(fl):
    pub = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake h0001\n'
    assert fl.known_hosts_line('127.77.0.2', 2222, pub) == '[127.77.0.2]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake\n'
    assert fl.known_hosts_line('127.77.0.2', 22, pub) == '127.77.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake\n'


def test_inventory_reaches_each_host_by_ssh_with_become(fl, tmp_path):
    def conn(i):
        return fl.connection_vars(i, 'ssh', 'vfio-bench', 2222, '/t/id', '/t/known_hosts')
    paths = fl.build_fleet(str(tmp_path), 2, conn)
    with open(paths['vfio']) as f:
        hosts = json.load(f)['hypervisors']['hosts']
    assert sorted(hosts) == ['h0000', 'h0001']
    h1 = hosts['h0001']
    assert h1['ansible_connection'] == 'ssh' and h1['ansible_host'] == '127.77.0.2' and h1['ansible_port'] == 2222
    assert h1['ansible_user'] == 'vfio-bench' and h1['ansible_become'] is True and h1['ansible_become_user'] == 'root'
    assert 'UserKnownHostsFile=/t/known_hosts' in h1['ansible_ssh_common_args']
    # each host keeps its own tree, lock and journal
    assert h1['passthrough_sysfs_path'].startswith(str(tmp_path / 'h0001' / 'vfio'))
    assert h1['passthrough_lock_file'] != hosts['h0000']['passthrough_lock_file']
    assert len(h1['passthrough_devices']) == 16
    with open(paths['host']) as f:
        assert json.load(f)['hypervisors']['hosts']['h0000']['ansible_host'] == '127.77.0.1'
    local = fl.build_fleet(str(tmp_path / 'local'), 1)
    with open(local['vfio']) as f:
        h = json.load(f)['hypervisors']['hosts']['h0000']
    assert h['ansible_connection'] == 'local' and 'ansible_user' not in h


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_CHILD_SUBREAPER is Linux only')
def test_subreaper_collects_the_cpu_of_an_orphan(fl):
    """A grandchild whose parent exits without reaping it (as sshd's monitor leaves the session
    child, as ssh daemonizes its master) comes back to the subreaper with its CPU time."""
    script = textwrap.dedent('''
        import os, sys, time
        sys.path.insert(0, %r)
        import fleet_local as fl
        fl.become_subreaper()
        if os.fork() == 0:                 # the parent that does not reap
            if os.fork() == 0:             # the orphan: burns CPU, then exits
                t = time.process_time()
                while time.process_time() - t < 0.3:
                    pass
                os._exit(0)
            os._exit(0)
        time.sleep(0.05)
        got = []
        deadline = time.time() + 30
        while len(got) < 2 and time.time() < deadline:
            got += fl.reap_orphans()
            time.sleep(0.05)
        print(sum(cpu for _, cpu in got), len(got))
    ''' % BENCH)
    p = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, check=False, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    cpu, n = p.stdout.split()[-2:]
    assert int(n) == 2 and float(cpu) >= 0.25, p.stdout

#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 17, goal 4: a fleet of simulated hypervisors from one controller.

    benchmarks/fleet_local.py --hosts 100 --runs role:converge:linear:25,role:rerun:linear:25
    benchmarks/fleet_local.py --connection ssh --hosts 10 --runs role:rerun:linear:25:pipe,naive:rerun:linear:25:nopipe

Each simulated host is an inventory host with ``ansible_connection: local`` and its own fake tree
written by tools/fakehost.py (16 passthrough candidates by default: 2 GPUs with their audio
function, 4 e1000e NICs, 2 NVMe drives, 4 SR-IOV VFs of an X710 PF, 2 virtio-net NICs on the
virtio_vfio_pci variant), its own root, lock file and journal file. Two trees per host:
``host/`` (every device on its host driver) and ``vfio/`` (the candidates on their VFIO driver,
as a converge leaves them).

A run is ``what:kind:strategy:forks[:pipe|:nopipe]`` (the last field: SSH pipelining, ``--connection
ssh`` only; ``--pipelining`` when absent):

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

``--connection ssh`` reaches each simulated host over real SSH, as operators do: an unprivileged
login (``--ssh-user``, created only if absent and removed at the end if this script created it)
and ``become: true`` through sudo (a NOPASSWD drop-in under /etc/sudoers.d written for the run and
removed at the end). Each host has its own sshd (OpenSSH's ``sshd -D``, its own host key, config,
pid and log file under --tmpdir) listening on its own loopback address 127.77.X.Y:--ssh-port
(Linux's lo answers all of 127/8 without configuration; no network namespace, no veth: a
namespace without a veth pair is unreachable from the controller, and creating veth pairs loads
a kernel module). ssh uses ansible-core's defaults (ControlMaster=auto, ControlPersist=60s,
control sockets under --tmpdir) and a known_hosts file of the hosts' keys (host key checking on).
sshd needs /run/sshd (its privilege separation directory): created if absent, removed at the end.
Extra figures with SSH: this script makes itself the subreaper of its descendants, so that the
processes both ends orphan come back to it: the ssh ControlPersist masters (daemonized by ssh)
and sshd's session user children (the parents of the login shells, sudo and the module
processes; sshd's privileged monitor exits without reaping them). After each run it closes the
masters (``ssh -O exit``), waits until every session has ended and reaps them with wait4: the
masters' CPU counts as controller CPU, the sessions' as managed-host side CPU, with each sshd
listener's own and reaped children's time (/proc/PID/stat): the module processes, sudo, the
shells and sshd itself. Peak PSS of the ssh clients and of the sshd side beside the controller's.
Everything (sshd processes, ssh masters, the sudoers drop-in, the user, /run/sshd) is undone on
error and on SIGTERM/SIGINT too.
"""

from __future__ import absolute_import, division, print_function

import argparse
import ctypes
import glob
import json
import os
import pwd
import resource
import shutil
import signal
import socket
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
SUDOERS_DIR = '/etc/sudoers.d'
PRIVSEP_DIR = '/run/sshd'      # OpenSSH's compiled-in privilege separation directory
CLK_TCK = os.sysconf('SC_CLK_TCK')


def parse_run(spec, pipelining):
    """``what:kind:strategy:forks[:pipe|:nopipe]`` -> dict (ValueError on a bad spec)."""
    parts = spec.split(':')
    if len(parts) not in (4, 5):
        raise ValueError('run %r: expected what:kind:strategy:forks[:pipe|:nopipe]' % spec)
    what, kind, strategy, forks = parts[:4]
    if what not in PLAYS or kind not in ('converge', 'rerun') or strategy not in ('linear', 'free'):
        raise ValueError('run %r: what is role|naive, kind converge|rerun, strategy linear|free' % spec)
    if len(parts) == 5:
        if parts[4] not in ('pipe', 'nopipe'):
            raise ValueError('run %r: the fifth field is pipe or nopipe' % spec)
        pipelining = parts[4] == 'pipe'
    return dict(what=what, kind=kind, strategy=strategy, forks=int(forks), pipelining=pipelining)


def ssh_address(i):
    """Loopback address of simulated host i: 127.77.X.Y, Y in 1..250 (no .0, no broadcast-looking .255)."""
    if not 0 <= i < 250 * 256:
        raise ValueError('host index %d out of range' % i)
    return '127.77.%d.%d' % (i // 250, i % 250 + 1)


def sshd_config(address, port, host_key, pid_file, authorized_keys, user):
    """The sshd_config of one simulated host: key-only login of one user, root refused, PAM as
    Debian's default. StrictModes no: the run's files live under a world-writable /tmp or
    /dev/shm, which StrictModes rejects on the path of AuthorizedKeysFile."""
    return '\n'.join([
        'ListenAddress %s:%d' % (address, port),
        'HostKey %s' % host_key,
        'PidFile %s' % pid_file,
        'AuthorizedKeysFile %s' % authorized_keys,
        'AllowUsers %s' % user,
        'PermitRootLogin no',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM yes',
        'StrictModes no',
        'PrintMotd no',
        'MaxSessions 64',
        'MaxStartups 200:30:400',
        'Subsystem sftp /usr/lib/openssh/sftp-server',
        '',
    ])


def sudoers_line(user):
    """The NOPASSWD drop-in for the login user (what the lab's operator account has)."""
    if not user or not all(c.isalnum() or c in '-_' for c in user):
        raise ValueError('unexpected user name %r' % user)
    return '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' % user


def known_hosts_line(address, port, pubkey):
    """known_hosts entry of one host's key ('[addr]:port' form unless port 22)."""
    host = address if port == 22 else '[%s]:%d' % (address, port)
    return '%s %s\n' % (host, ' '.join(pubkey.split()[:2]))


def connection_vars(i, connection, user=None, port=None, key=None, known_hosts=None):
    """The inventory variables that reach simulated host i."""
    if connection == 'local':
        return dict(ansible_connection='local')
    return dict(ansible_connection='ssh', ansible_host=ssh_address(i), ansible_port=port, ansible_user=user,
                ansible_become=True, ansible_become_method='sudo', ansible_become_user='root',
                ansible_ssh_private_key_file=key,
                ansible_ssh_common_args='-o UserKnownHostsFile=%s -o IdentitiesOnly=yes' % known_hosts)


def build_fleet(base, hosts, conn=None):
    """hNNNN/{host,vfio}/ for each host; the inventories of both states. conn(i): the host's
    connection variables (a local connection when None)."""
    inv = {'host': {}, 'vfio': {}}
    for i in range(hosts):
        name = 'h%04d' % i
        for state in ('host', 'vfio'):
            info = generate(os.path.join(base, name, state), state=state, **MIX)
            hv = dict(info['role_vars'], **(conn(i) if conn else connection_vars(i, 'local')))
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


def _cpu_ticks(pid, children=True):
    """utime+stime (+cutime+cstime: the reaped children's) of a process, in seconds."""
    with open('/proc/%s/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    # after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    n = int(fields[11]) + int(fields[12])
    if children:
        n += int(fields[13]) + int(fields[14])
    return n / float(CLK_TCK)


def _descends(pid, roots):
    try:
        while pid > 1:
            if pid in roots:
                return True
            pid = _ppid(pid)
    except (IOError, OSError, ValueError, IndexError):
        return False
    return False


def _descendants(roots):
    out = []
    for pid in os.listdir('/proc'):
        if pid.isdigit() and int(pid) not in roots and _descends(int(pid), roots):
            out.append(int(pid))
    return out


def _pss_kb(pid):
    with open('/proc/%s/smaps_rollup' % pid) as f:
        for line in f:
            if line.startswith('Pss:'):
                return int(line.split()[1])
    return 0


def become_subreaper():
    """Make this process the reaper of its orphaned descendants (prctl PR_SET_CHILD_SUBREAPER).
    Both ends of an SSH connection orphan the processes that hold the CPU: ssh daemonizes its
    ControlPersist master, and sshd's privileged monitor exits without reaping the session's user
    child (the parent of the login shells, sudo and the module processes), so a listener's cutime
    misses them. As their reaper, wait4 gives each one's rusage, its reaped children's included."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:     # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), 'prctl(PR_SET_CHILD_SUBREAPER)')


def reap_orphans(keep=()):
    """wait4 every exited child of this process that is not in keep (the Popen children, whose
    Popen reaps them): [(comm, cpu seconds incl. its reaped children)]. Only call it while no
    other subprocess of this process may be exiting (between runs)."""
    out = []
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None or info.si_pid in keep:
            break
        try:
            with open('/proc/%d/comm' % info.si_pid) as f:
                comm = f.read().strip()
        except (IOError, OSError):
            comm = '?'
        dummy, dummy, ru = os.wait4(info.si_pid, 0)
        out.append((comm, ru.ru_utime + ru.ru_stime))
    return out


def _children(pid):
    out = []
    for p in os.listdir('/proc'):
        if p.isdigit():
            try:
                if _ppid(p) == pid:
                    out.append(int(p))
            except (IOError, OSError, ValueError, IndexError):
                continue
    return out


class PssSampler(threading.Thread):
    """Peak of the summed PSS of this run's controller: the processes named ansible-playbook
    that descend from the process started (its forked workers), not other users' runs. With SSH
    also the peaks of this run's ssh clients (their command line names the run's control path
    directory: the ControlPersist masters are not descendants) and of the sshd side
    (the listeners and everything below them)."""

    def __init__(self, cp_dir=None, sshd_pids=()):
        super(PssSampler, self).__init__()
        self.daemon = True
        self.stop = threading.Event()
        self.root = None
        self.cp_dir = cp_dir
        self.sshd_pids = set(sshd_pids)
        self.peak_kb = 0
        self.peak_procs = 0
        self.peak_ssh_kb = 0
        self.peak_sshd_kb = 0

    def _side(self, pid):
        """Below a listener, or below an sshd session child orphaned to this process (subreaper)."""
        me = os.getpid()
        while pid > 1:
            if pid in self.sshd_pids:
                return True
            ppid = _ppid(pid)
            if ppid == me:
                with open('/proc/%d/comm' % pid) as f:
                    return f.read().strip() == 'sshd'
            pid = ppid
        return False

    def run(self):
        while not self.stop.wait(0.5):
            if self.root is None:
                continue
            total, n, ssh_kb, sshd_kb = 0, 0, 0, 0
            for pid in os.listdir('/proc'):
                if not pid.isdigit():
                    continue
                try:
                    with open('/proc/%s/comm' % pid) as f:
                        comm = f.read().strip()
                    if comm.startswith('ansible-playboo'):
                        if _descends(int(pid), (self.root,)):
                            total += _pss_kb(pid)
                            n += 1
                    elif self.cp_dir and comm == 'ssh':
                        with open('/proc/%s/cmdline' % pid, 'rb') as f:
                            if self.cp_dir.encode() in f.read():
                                ssh_kb += _pss_kb(pid)
                    elif self.sshd_pids and self._side(int(pid)):
                        sshd_kb += _pss_kb(pid)
                except (IOError, OSError, ValueError):
                    continue
            if total > self.peak_kb:
                self.peak_kb, self.peak_procs = total, n
            self.peak_ssh_kb = max(self.peak_ssh_kb, ssh_kb)
            self.peak_sshd_kb = max(self.peak_sshd_kb, sshd_kb)


class SshFleet(object):
    """One sshd per simulated host on the loopback, an unprivileged login with passwordless sudo.
    Every change is undone by close(), which is safe to call after a partial start."""

    def __init__(self, tmp, hosts, user, port):
        self.tmp, self.hosts, self.user, self.port = tmp, hosts, user, port
        self.dir = os.path.join(tmp, 'ssh')
        self.key = os.path.join(self.dir, 'id_ed25519')
        self.known_hosts = os.path.join(self.dir, 'known_hosts')
        self.authorized_keys = os.path.join(self.dir, 'authorized_keys')
        self.sudoers = os.path.join(SUDOERS_DIR, 'zz-vfio-bench-fleet-%d' % os.getpid())
        self.created_user = False
        self.created_privsep = False
        self.procs = []          # the sshd listeners (Popen)
        self.remote_tmp = os.path.join(tmp, 'ansible-remote')

    def vars(self, i):
        return connection_vars(i, 'ssh', self.user, self.port, self.key, self.known_hosts)

    def _user(self):
        try:
            pw = pwd.getpwnam(self.user)
            B.log('login user %s exists (uid %d): reused, left in place' % (self.user, pw.pw_uid))
        except KeyError:
            subprocess.check_call(['useradd', '--system', '--no-create-home', '--home-dir', self.dir,
                                   '--shell', '/bin/sh', self.user])
            self.created_user = True
            pw = pwd.getpwnam(self.user)
            B.log('login user %s did not exist: created it (uid %d); it is removed at the end' % (self.user, pw.pw_uid))
        if pw.pw_uid == 0:
            raise SystemExit('--ssh-user %s is root: the run logs in as an unprivileged user' % self.user)
        return pw

    def start(self):
        if os.geteuid() != 0:
            raise SystemExit('--connection ssh needs root (it starts sshd, adds a sudoers drop-in)')
        for tool in ('/usr/sbin/sshd', 'ssh', 'ssh-keygen', 'sudo', 'visudo'):
            if not shutil.which(tool):
                raise SystemExit('--connection ssh needs %s' % tool)
        os.chmod(self.tmp, 0o711)         # the login user reaches its remote tmp and home below it
        os.mkdir(self.dir, 0o755)
        pw = self._user()
        os.mkdir(self.remote_tmp, 0o700)
        os.chown(self.remote_tmp, pw.pw_uid, pw.pw_gid)
        subprocess.check_call(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'vfio-bench-fleet', '-f', self.key])
        shutil.copyfile(self.key + '.pub', self.authorized_keys)
        os.chmod(self.authorized_keys, 0o644)
        fd, tmp_sudoers = tempfile.mkstemp(dir=self.dir)
        with os.fdopen(fd, 'w') as f:
            f.write(sudoers_line(self.user))
        os.chmod(tmp_sudoers, 0o440)
        subprocess.check_call(['visudo', '-cqf', tmp_sudoers])
        shutil.copyfile(tmp_sudoers, self.sudoers)    # copy, not move: the drop-in gets /etc's context
        os.chmod(self.sudoers, 0o440)
        B.log('sudoers drop-in %s written (NOPASSWD for %s); removed at the end' % (self.sudoers, self.user))
        if not os.path.isdir(PRIVSEP_DIR):
            os.mkdir(PRIVSEP_DIR, 0o755)
            self.created_privsep = True
            B.log('%s did not exist (sshd needs it): created; removed at the end' % PRIVSEP_DIR)
        with open(self.known_hosts, 'w') as kh:
            for i in range(self.hosts):
                d = os.path.join(self.dir, 'h%04d' % i)
                os.mkdir(d)
                hk = os.path.join(d, 'ssh_host_ed25519_key')
                subprocess.check_call(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'h%04d' % i, '-f', hk])
                with open(hk + '.pub') as f:
                    kh.write(known_hosts_line(ssh_address(i), self.port, f.read()))
                cfg = os.path.join(d, 'sshd_config')
                with open(cfg, 'w') as f:
                    f.write(sshd_config(ssh_address(i), self.port, hk, os.path.join(d, 'sshd.pid'),
                                        self.authorized_keys, self.user))
                subprocess.check_call(['/usr/sbin/sshd', '-t', '-f', cfg])
                self.procs.append(subprocess.Popen(['/usr/sbin/sshd', '-D', '-f', cfg, '-E', os.path.join(d, 'sshd.log')],
                                                   stdin=subprocess.DEVNULL))
        for i, p in enumerate(self.procs):
            self._wait_listening(i, p)
        B.log('%d sshd listening on 127.77.*:%d' % (len(self.procs), self.port))

    def _wait_listening(self, i, proc, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit('sshd of h%04d exited (rc %s): see %s' % (
                    i, proc.returncode, os.path.join(self.dir, 'h%04d' % i, 'sshd.log')))
            try:
                socket.create_connection((ssh_address(i), self.port), timeout=1).close()
                return
            except (OSError, socket.error):
                if time.monotonic() > deadline:
                    raise SystemExit('sshd of h%04d does not listen on %s:%d' % (i, ssh_address(i), self.port))
                time.sleep(0.1)

    def pids(self):
        return [p.pid for p in self.procs]

    def side_cpu(self):
        """CPU seconds of the sshd side: each listener's own and its reaped children's."""
        return sum(_cpu_ticks(p.pid) for p in self.procs if p.poll() is None)

    def close_masters(self, cp_dir):
        """Close the run's ControlPersist masters (ssh -O exit on each control socket)."""
        n = 0
        for sock in sorted(glob.glob(os.path.join(cp_dir, '*'))):
            rc = subprocess.call(['ssh', '-o', 'ControlPath=%s' % sock, '-O', 'exit', 'vfio-bench'],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            n += rc == 0
        return n

    def collect(self, timeout=60):
        """After close_masters: reap every orphan of the run (the masters, sshd's user children)
        until none is left and no listener has a session left. -> (ssh client CPU s, ssh clients,
        sshd-side orphans' CPU s, sshd-side orphans, all closed?)"""
        listeners = set(self.pids())
        ssh_cpu, ssh_n, side_cpu, side_n = 0.0, 0, 0.0, 0
        deadline = time.monotonic() + timeout
        while True:
            for comm, cpu in reap_orphans(listeners):
                if comm == 'ssh':
                    ssh_cpu, ssh_n = ssh_cpu + cpu, ssh_n + 1
                else:
                    side_cpu, side_n = side_cpu + cpu, side_n + 1
            left = [p for p in _children(os.getpid()) if p not in listeners] + _descendants(listeners)
            if not left or time.monotonic() > deadline:
                return ssh_cpu, ssh_n, side_cpu, side_n, not left
            time.sleep(0.1)

    def close(self):
        roots = set(p.pid for p in self.procs if p.poll() is None)
        left = _descendants(roots) if roots else []       # sessions left behind (an error path)
        for pid in _children(os.getpid()):                 # sshd user children and ssh masters orphaned to us
            try:
                with open('/proc/%d/comm' % pid) as f:
                    if pid not in roots and f.read().strip() in ('sshd', 'ssh'):
                        left.append(pid)
            except (IOError, OSError):
                continue
        for pid in left:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if os.path.exists(self.sudoers):
            os.unlink(self.sudoers)
            B.log('sudoers drop-in %s removed' % self.sudoers)
        if self.created_privsep:
            try:
                os.rmdir(PRIVSEP_DIR)
                B.log('%s removed' % PRIVSEP_DIR)
            except OSError as e:
                B.log('%s left in place: %s' % (PRIVSEP_DIR, e))
        if self.created_user:
            rc = subprocess.call(['userdel', self.user])
            B.log('login user %s %s' % (self.user, 'removed' if rc == 0 else 'NOT removed (userdel rc %d)' % rc))


def run_one(args, tmp, inventories, run, hosts, fleet=None):
    what, kind, strategy, forks, pipelining = run['what'], run['kind'], run['strategy'], run['forks'], run['pipelining']
    state = 'host' if kind == 'converge' else 'vfio'
    tag = '%s-%s-%s-%d%s' % (what, kind, strategy, forks, ('-pipe' if pipelining else '-nopipe') if fleet else '')
    stats = os.path.join(tmp, 'stats-%s.json' % tag)
    modlog = os.path.join(tmp, 'modcpu-%s.log' % tag)
    wrapper = os.path.join(tmp, 'python-timed')
    with open(wrapper, 'w') as f:
        f.write('#!/bin/sh\nexec /usr/bin/time -a -o %s -f "%%U %%S" %s "$@"\n' % (modlog, sys.executable))
    os.chmod(wrapper, 0o755)
    home = os.path.join(tmp, 'ansible-home')
    cp_dir = os.path.join(home, 'cp')
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=AC, ANSIBLE_HOME=home,
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_NOCOLOR='1', ANSIBLE_FORKS=str(forks),
               ANSIBLE_STRATEGY=strategy, ANSIBLE_HOST_KEY_CHECKING='true' if fleet else 'false',
               ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, 'fleet', 'callback_plugins'),
               ANSIBLE_CALLBACKS_ENABLED='bench_stats', BENCH_STATS_FILE=stats,
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default',
               # --quiet: the default callback without the ok and skipped results (ansible-core has no null one)
               ANSIBLE_DISPLAY_OK_HOSTS='false' if args.quiet else 'true',
               ANSIBLE_DISPLAY_SKIPPED_HOSTS='false' if args.quiet else 'true',
               ANSIBLE_PYTHON_INTERPRETER=wrapper, ANSIBLE_LOCAL_TEMP=os.path.join(tmp, 'ansible-local'),
               ANSIBLE_REMOTE_TEMP=os.path.join(tmp, 'ansible-remote'),
               ANSIBLE_PIPELINING='true' if pipelining else 'false',
               # the control sockets under the run's directory (ansible-core's default: ~/.ansible/cp)
               ANSIBLE_SSH_CONTROL_PATH_DIR=cp_dir)
    for k in ('ANSIBLE_SSH_ARGS', 'ANSIBLE_SSH_CONTROL_PATH', 'ANSIBLE_CONFIG'):
        env.pop(k, None)      # ansible-core's defaults: -C -o ControlMaster=auto -o ControlPersist=60s
    argv = (['nice', '-n', str(args.nice)] if args.nice else []) + [
        os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventories[state]]
    if kind == 'converge':
        argv.append('--check')
    argv.append(PLAYS[what])
    load = os.getloadavg()
    side0 = fleet.side_cpu() if fleet else 0.0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler = PssSampler(cp_dir if fleet else None, fleet.pids() if fleet else ())
    sampler.start()
    t0 = time.perf_counter()
    with open(os.path.join(tmp, 'log-%s.txt' % tag), 'w') as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler.root = proc.pid      # nice execs ansible-playbook: the same process
        try:
            proc.wait()
        except BaseException:        # SIGTERM/SIGINT of this script: end the run, then clean up
            proc.terminate()
            proc.wait()
            raise
    p = proc
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    masters_cpu, masters, side, side_orphans = 0.0, 0, None, 0   # masters: ssh client processes reaped
    if fleet:
        fleet.close_masters(cp_dir)
        masters_cpu, masters, orphans_cpu, side_orphans, closed = fleet.collect()
        if not closed:
            B.log('warning: processes of the run still alive after 60 s: their CPU is not counted')
        side = fleet.side_cpu() - side0 + orphans_cpu
        cpu += masters_cpu
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
    r = {
        'what': what, 'kind': kind, 'strategy': strategy, 'forks': forks, 'hosts': hosts, 'rc': p.returncode,
        'connection': 'ssh' if fleet else 'local', 'wall_s': wall, 'cpu_s': cpu, 'module_cpu_s': mod_cpu,
        'module_runs': mod_n, 'peak_pss_mb': sampler.peak_kb / 1024.0, 'peak_procs': sampler.peak_procs,
        'invocations_per_host': B.median([h['invocations'] for h in per_host]),
        'failed_hosts': sum(1 for h in per_host if h['failed']),
        'changed_hosts': sum(1 for h in per_host if h['changed']),
        'hosts_seen': len(st['hosts']), 'loadavg_start': load, 'loadavg_end': os.getloadavg(),
    }
    if fleet:
        # with SSH the module processes run under the sshd side, not below ansible-playbook
        r.update(pipelining=pipelining, controller_cpu_s=cpu, ssh_client_orphans=masters, ssh_clients_cpu_s=masters_cpu,
                 sshd_side_orphans=side_orphans,
                 sshd_side_cpu_s=side, peak_ssh_pss_mb=sampler.peak_ssh_kb / 1024.0,
                 peak_sshd_side_pss_mb=sampler.peak_sshd_kb / 1024.0)
    else:
        r.update(controller_cpu_s=cpu - mod_cpu)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0], epilog=__doc__.split('\n', 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--hosts', type=int, default=100)
    ap.add_argument('--runs', default='role:converge:linear:25,role:rerun:linear:25',
                    help='comma-separated what:kind:strategy:forks[:pipe|:nopipe] (what: role|naive; kind: '
                         'converge|rerun; strategy: linear|free; pipe/nopipe: SSH pipelining, --connection ssh only)')
    ap.add_argument('--connection', choices=('local', 'ssh'), default='local',
                    help='local: ansible_connection=local (default); ssh: one sshd per host on 127.77.X.Y, '
                         'an unprivileged login and become (sudo)')
    ap.add_argument('--pipelining', choices=('on', 'off'), default='on',
                    help='SSH pipelining of the runs that do not say pipe/nopipe (default on, the usual '
                         'production setting; ansible-core\'s own default is off)')
    ap.add_argument('--ssh-user', default='vfio-bench',
                    help='the unprivileged login (default vfio-bench): created if absent and then removed at the end')
    ap.add_argument('--ssh-port', type=int, default=2222, help='the port of every sshd (default 2222)')
    ap.add_argument('--nice', type=int, default=10)
    ap.add_argument('--quiet', action='store_true', help='no ok or skipped task results in the run logs (changed and failed ones stay)')
    ap.add_argument('--tmpdir', default='/dev/shm' if os.access('/dev/shm', os.W_OK) else None)
    ap.add_argument('--keep', action='store_true', help='keep the temporary directory (logs, sshd logs) at the end')
    ap.add_argument('--json', help='append each run\'s figures as a JSON line to this file')
    args = ap.parse_args()
    try:
        runs = [parse_run(spec, args.pipelining == 'on') for spec in args.runs.split(',')]
    except ValueError as e:
        ap.error(str(e))

    def _terminate(signum, frame):
        raise SystemExit('signal %d: cleaning up' % signum)
    signal.signal(signal.SIGTERM, _terminate)
    tmp = tempfile.mkdtemp(prefix='vfio-bench-fleet-%s-%d-' % (args.connection, args.hosts), dir=args.tmpdir)
    fleet = None
    try:
        t0 = time.perf_counter()
        if args.connection == 'ssh':
            become_subreaper()
            fleet = SshFleet(tmp, args.hosts, args.ssh_user, args.ssh_port)
            fleet.start()
        inventories = build_fleet(tmp, args.hosts, fleet.vars if fleet else None)
        B.log('%d hosts built in %.1f s under %s' % (args.hosts, time.perf_counter() - t0, tmp))
        rows = []
        for run, spec in zip(runs, args.runs.split(',')):
            B.log('run %s (%d hosts, %s; load %.2f %.2f %.2f)' % ((spec, args.hosts, args.connection) + os.getloadavg()))
            r = run_one(args, tmp, inventories, run, args.hosts, fleet)
            B.log(json.dumps(r))
            if args.json:
                with open(args.json, 'a') as f:
                    f.write(json.dumps(r) + '\n')
            rows.append(r)
        headers = ['hosts', 'conn', 'what', 'kind', 'strategy', 'forks', 'rc', 'wall s', 'wall s/host', 'cpu s/host',
                   'controller cpu s/host', 'module cpu s/host', 'peak PSS MB', 'invocations/host', 'failed']
        if fleet:
            headers += ['pipelining', 'sshd-side cpu s/host', 'ssh PSS MB', 'sshd-side PSS MB']
        table = []
        for r in rows:
            row = [r['hosts'], r['connection'], r['what'], r['kind'], r['strategy'], r['forks'], r['rc'],
                   '%.1f' % r['wall_s'], '%.3f' % (r['wall_s'] / r['hosts']), '%.3f' % (r['cpu_s'] / r['hosts']),
                   '%.3f' % (r['controller_cpu_s'] / r['hosts']), '%.3f' % (r['module_cpu_s'] / r['hosts']),
                   '%.0f' % r['peak_pss_mb'], r['invocations_per_host'], r['failed_hosts']]
            if fleet:
                row += ['on' if r['pipelining'] else 'off', '%.3f' % (r['sshd_side_cpu_s'] / r['hosts']),
                        '%.0f' % r['peak_ssh_pss_mb'], '%.0f' % r['peak_sshd_side_pss_mb']]
            table.append(row)
        print(B.table(headers, table))
    finally:
        if fleet:
            try:
                fleet.close_masters(os.path.join(tmp, 'ansible-home', 'cp'))
            finally:
                fleet.close()
                reap_orphans()
        if args.keep:
            B.log('kept %s' % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab is reached as fleets are (an operator account, passwordless sudo, no root login),
and through that become path the SSH guard still holds: the management NIC, which carries
the live SSH session, is refused even with force: true, and nothing is written."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import subprocess

import pytest

from conftest import _bin

pytestmark = pytest.mark.lab


def remote_shell(lab, command):
    """Run a shell command as an Ansible module on the lab host, the way lab.module runs
    vfio_bind (the inventory's user and become); return its stdout lines."""
    argv = [_bin('ansible'), lab.name, '-i', lab.inventory, '-m', 'ansible.builtin.shell', '-a', command]
    p = lab.run(argv, 'ansible.builtin.shell', 600, env=lab.env)
    head = '%s | CHANGED | rc=0 >>\n' % lab.name   # the minimal callback's shape of a command result
    assert p.returncode == 0 and p.stdout.startswith(head), (p.returncode, p.stdout, p.stderr)
    return p.stdout[len(head):].splitlines()


def test_root_cannot_log_in_and_the_operator_becomes_root(lab):
    v = lab.vars
    assert v['ansible_user'] != 'root' and v['ansible_become'] is True
    p = subprocess.run(['ssh', '-p', str(v['ansible_port']), '-i', v['ansible_ssh_private_key_file'],
                        '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
                        '-o', 'LogLevel=ERROR', 'root@%s' % v['ansible_host'], 'true'],
                       capture_output=True, text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert p.returncode == 255 and 'Permission denied' in p.stderr, (p.returncode, p.stderr)
    effective = lab.ssh('sshd -T -f /run/lab-sshd/sshd_config -C user=%s,host=x,addr=10.0.2.2' % v['ansible_user'])
    assert 'permitrootlogin no' in effective.splitlines()
    assert lab.ssh('id -u').strip() == '0'   # Lab.ssh runs as root through sudo -n


def test_modules_run_as_root_through_sudo_without_ssh_connection(lab):
    """What every module of the lab tests walks: logged in as the operator, sudo to root, and
    sudo's env_reset has dropped SSH_CONNECTION (what the old guard relied on)."""
    out = remote_shell(lab, 'echo "uid=$(id -u) sudo_user=${SUDO_USER:-none} ssh=${SSH_CONNECTION:-absent}"; '
                            'tr "\\0" "\\n" </proc/$$/environ | grep -c ^SSH_CONNECTION= || true')
    assert out == ['uid=0 sudo_user=%s ssh=absent' % lab.vars['ansible_user'], '0'], out


def test_ssh_nic_refused_even_with_force(lab, clean):
    mgmt = lab.devices['mgmt']
    before = lab.state(mgmt)
    assert before[0] == 'virtio-pci', before
    for check in (True, False):
        ok, res = lab.module('vfio_bind', {'devices': [mgmt], 'force': True}, check=check)
        assert not ok, res
        msg = res['msg']
        print('\nvfio_bind force: true on %s (check=%s):\n%s' % (mgmt, check, msg))
        m = re.search(r'network interface (\S+) carries the live SSH session '
                      r'10\.0\.2\.2:(\d+) -> 10\.0\.2\.15:22 \((sshd(?:-session)?) pid (\d+)\)', msg)
        assert m, msg
        assert 'force: true does not override this' in msg and 'from the console' in msg
        iface, dummy_port, comm, pid = m.groups()
        # the session named is real: that process is sshd and the interface is the mgmt NIC's
        assert lab.ssh('cat /proc/%s/comm' % pid).strip() == comm
        assert lab.ssh('ls /sys/bus/pci/devices/%s/virtio*/net/' % mgmt).split() == [iface]
        assert not res['devices'][0]['forced'] and res['devices'][0]['guards'], res
        # nothing written: the NIC keeps its driver and has no driver_override
        assert lab.state(mgmt) == before
    # and the host is still reachable over that NIC
    assert lab.ssh('echo alive').strip() == 'alive'
    assert lab.facts()['devices'][mgmt]['driver'] == 'virtio-pci'

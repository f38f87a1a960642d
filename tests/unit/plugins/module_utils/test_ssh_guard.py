# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SSH guard: live SSH sessions are read from the kernel (sockets held by sshd processes,
/proc/net/tcp{,6}), not from the module's environment, and the NIC that carries one (or
anything stacked on it) is refused even with force: true."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.guards import HostUsage
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import MGMT, FakeHost, add_mgmt, refused
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import bind_on as bind

NIC = '0000:00:04.0'    # eth2, 10.0.2.0/24
OTHER = '0000:00:03.0'  # eth1, 192.168.7.0/24

NET_10_0_2 = dict(dest='0002000A', mask='00FFFFFF', gateway='00000000')
NET_192_168_7 = dict(dest='0007A8C0', mask='00FFFFFF', gateway='00000000')
SERVER = ('10.0.2.15', 22)
CLIENT = ('10.0.2.2', 50000)


@pytest.fixture
def host(tmp_path):
    h = FakeHost(tmp_path)
    h.add_modules('vfio_pci', 'virtio_pci', 'e1000e')
    add_mgmt(h)  # eth0, default route
    h.add_device(OTHER, '8086', '10d3', driver='e1000e', net=['eth1'])
    h.add_device(NIC, '8086', '10d3', driver='e1000e', net=['eth2'])
    h.add_route('eth1', **NET_192_168_7)
    return h


def add_inet6(host, iface, hexaddr, scope='00'):
    with open(os.path.join(host.proc, 'net', 'if_inet6'), 'a') as f:
        f.write('%s 03 40 %s 80 %8s\n' % (hexaddr, scope, iface))


def test_session_found_in_the_kernel_is_refused_even_with_force(host, kernel):
    host.add_route('eth2', **NET_10_0_2)
    host.add_ssh_session(812, SERVER, CLIENT)
    msg, result = refused(host, kernel, devices=[NIC], force=True)
    assert 'network interface eth2 carries the live SSH session 10.0.2.2:50000 -> 10.0.2.15:22 (sshd pid 812)' in msg
    assert 'force: true does not override this' in msg and 'from the console' in msg
    assert 'refusing to unbind %s from e1000e' % NIC in msg
    (dev,) = result['devices']
    assert dev['guards'][0].startswith('network interface eth2 carries the live SSH session')
    assert not dev['forced']
    assert kernel._driver_of(NIC) == 'e1000e' and kernel._override(NIC) is None


def test_session_refused_in_check_mode_too(host, kernel):
    host.add_route('eth2', **NET_10_0_2)
    host.add_ssh_session(812, SERVER, CLIENT)
    msg, dummy = refused(host, kernel, check_mode=True, devices=[NIC], force=True)
    assert 'carries the live SSH session' in msg


def test_session_on_a_bridge_stacked_on_the_nic_is_refused(host, kernel):
    host.add_upper('eth2', 'bond0')
    host.add_upper('bond0', 'br0')
    host.add_route('br0', **NET_10_0_2)
    host.add_ssh_session(812, SERVER, CLIENT)
    msg, dummy = refused(host, kernel, devices=[NIC], force=True)
    assert 'network interface br0 (stacked on eth2) carries the live SSH session 10.0.2.2:50000 -> 10.0.2.15:22' in msg
    assert 'br0 (stacked on eth2) has an IPv4 address' in msg


@pytest.mark.parametrize('ipv6, pid, server, client, comm, expected', [
    # matched to the interface that holds the IPv6 address
    (True, 900, ('fd00::15', 22), ('fd00::2', 41000), 'sshd',
     'eth2 carries the live SSH session [fd00::2]:41000 -> [fd00::15]:22 (sshd pid 900)'),
    # sshd listening on :: takes IPv4 connections on a tcp6 socket (::ffff:a.b.c.d)
    (False, 901, ('::ffff:10.0.2.15', 22), ('::ffff:10.0.2.2', 50001), 'sshd',
     'eth2 carries the live SSH session 10.0.2.2:50001 -> 10.0.2.15:22 (sshd pid 901)'),
    # OpenSSH 9.8 runs each session in a process of its own
    (False, 902, SERVER, CLIENT, 'sshd-session', '(sshd-session pid 902)'),
], ids=['ipv6', 'ipv4-mapped-in-tcp6', 'openssh-9.8-sshd-session'])
def test_session_forms_are_recognised(host, kernel, ipv6, pid, server, client, comm, expected):
    if ipv6:
        add_inet6(host, 'eth2', 'fd000000000000000000000000000015')
    else:
        host.add_route('eth2', **NET_10_0_2)
    host.add_ssh_session(pid, server, client, comm=comm)
    msg, dummy = refused(host, kernel, devices=[NIC], force=True)
    assert expected in msg


def test_one_socket_held_by_monitor_and_child_is_one_session(host, kernel):
    host.add_route('eth2', **NET_10_0_2)
    inode = host.add_ssh_session(812, SERVER, CLIENT)
    fd = os.path.join(host.proc, '813', 'fd')
    os.makedirs(fd)
    with open(os.path.join(host.proc, '813', 'comm'), 'w') as f:
        f.write('sshd\n')
    os.symlink('socket:[%d]' % inode, os.path.join(fd, '4'))
    msg, dummy = refused(host, kernel, devices=[NIC], force=True)
    assert msg.count('carries the live SSH session') == 1


def test_not_sessions_listener_other_daemons_loopback_and_other_nics(host, kernel):
    """Only established sockets that sshd holds count, and only on the NIC they arrive on:
    force then proceeds past the ordinary guards (with a warning)."""
    host.add_route('eth2', **NET_10_0_2)
    host.add_ssh_session(700, ('0.0.0.0', 22), ('0.0.0.0', 0), state='0A')       # the listener
    host.add_ssh_session(701, ('10.0.2.15', 443), ('10.0.2.2', 50002), comm='nginx')
    host.add_ssh_session(702, ('127.0.0.1', 22), ('127.0.0.1', 50003))           # a local session
    host.add_ssh_session(703, ('192.168.7.5', 22), ('192.168.7.1', 50004))       # on eth1
    usage = HostUsage(kernel)
    assert usage.ssh_session_reasons(['eth2']) == []
    assert usage.ssh_session_reasons(['eth1']) == [
        'network interface eth1 carries the live SSH session 192.168.7.1:50004 -> 192.168.7.5:22 (sshd pid 703)']
    r = bind(host, kernel, devices=[NIC], force=True)
    (dev,) = r['devices']
    assert dev['forced'] and dev['guards'] == ['network interface eth2 has an IPv4 address (it has routes)']
    assert kernel._driver_of(NIC) == 'vfio-pci'


def test_without_force_the_session_message_still_says_console(host, kernel):
    host.add_ssh_session(812, ('10.9.9.9', 22), CLIENT)   # only the default route covers it: eth0
    msg, dummy = refused(host, kernel, devices=[MGMT])
    assert 'eth0 carries the live SSH session 10.0.2.2:50000 -> 10.9.9.9:22 (sshd pid 812)' in msg
    assert 'eth0 carries the default route' in msg
    assert 'force: true does not override this' in msg

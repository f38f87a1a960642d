# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is a device in use by the host?  Reasons to refuse taking it away (unless forced).

Everything is read through the KernelFS object: network state from procfs and the
``net/`` class of sysfs, live SSH sessions from the sockets sshd holds, block usage from
mountinfo, swaps and ``holders/``, VFIO users from the open file descriptors of processes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import socket
import struct

from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import unique


def _ipv4_from_hex(word):
    """/proc/net/route stores addresses as host-order hex words."""
    return socket.inet_ntoa(struct.pack('=I', int(word, 16)))


def _ipv4_int(addr):
    return struct.unpack('!I', socket.inet_aton(addr))[0]


# The processes of OpenSSH's server: the listener and, per connection, the privileged
# monitor and the user's process ("sshd" up to 9.7, "sshd-session" from 9.8).
SSHD_COMMS = ('sshd', 'sshd-session')
TCP_ESTABLISHED = '01'


def _tcp_endpoint(word):
    """(address, port) of a /proc/net/tcp{,6} endpoint: the address as host-order 32-bit
    hex words (one for IPv4, four for IPv6), the port as big-endian hex; an IPv4-mapped
    IPv6 address is given as IPv4."""
    addr, port = word.split(':')
    packed = b''.join(struct.pack('=I', int(addr[i:i + 8], 16)) for i in range(0, len(addr), 8))
    if len(packed) == 4:
        return socket.inet_ntoa(packed), int(port, 16)
    if packed[:12] == b'\0' * 10 + b'\xff\xff':
        return socket.inet_ntoa(packed[12:]), int(port, 16)
    return socket.inet_ntop(socket.AF_INET6, packed), int(port, 16)


def _endpoint_text(addr, port):
    return ('[%s]:%d' if ':' in addr else '%s:%d') % (addr, port)


class HostUsage:
    """What the host is using, read once per run and queried per device."""

    def __init__(self, fs):
        self.fs = fs
        self._net = None
        self._ssh = None
        self._block = None
        self._vfio_users = None

    # -- network -------------------------------------------------------------
    def _read_net(self):
        routes = []  # (iface, dest int, mask int, is default)
        for line in (self.fs.read_proc('net/route') or '').split('\n')[1:]:
            cols = line.split()
            if len(cols) < 8:
                continue
            try:
                dest = _ipv4_int(_ipv4_from_hex(cols[1]))
                mask = _ipv4_int(_ipv4_from_hex(cols[7]))
            except (ValueError, OSError, struct.error):
                continue
            routes.append((cols[0], dest, mask, dest == 0 and mask == 0))
        v6 = []  # (iface, address hex, scope)
        for line in (self.fs.read_proc('net/if_inet6') or '').split('\n'):
            cols = line.split()
            if len(cols) >= 6:
                v6.append((cols[5], cols[0].lower(), int(cols[3], 16)))
        v6_default = set()
        for line in (self.fs.read_proc('net/ipv6_route') or '').split('\n'):
            cols = line.split()
            if len(cols) >= 10 and cols[0] == '0' * 32 and cols[1] == '00' and cols[9] != 'lo':
                v6_default.add(cols[9])
        self._net = (routes, v6, v6_default)
        return self._net

    def _iface_of(self, addr):
        """The interface a local address of this host sits on: for IPv6 the interface that
        holds it, for IPv4 the one whose route covers it most narrowly (procfs lists no IPv4
        addresses per interface)."""
        routes, v6, dummy = self._net or self._read_net()
        if ':' in addr:
            packed = socket.inet_pton(socket.AF_INET6, addr)
            want = ''.join('%02x' % c for c in bytearray(packed))
            for iface, held, dummy_scope in v6:
                if held == want:
                    return iface
            return None
        ip = _ipv4_int(addr)
        best = None
        for iface, dest, mask, dummy_default in routes:
            if ip & mask == dest and (best is None or mask > best[1]):
                best = (iface, mask)
        return best[0] if best else None

    # -- live SSH sessions ------------------------------------------------------
    def _read_ssh_sessions(self):
        """Established TCP connections whose socket an sshd process holds, from the kernel's
        own tables (/proc/PID/fd and /proc/net/tcp{,6}): whoever runs the module, through
        sudo or not, and whatever its environment.  -> [session dict]"""
        holders = {}  # socket inode -> (pid, comm)
        for pid in sorted(self.fs.listdir_proc(''), key=lambda p: int(p) if p.isdigit() else -1):
            if not pid.isdigit():
                continue
            comm = (self.fs.read_proc('%s/comm' % pid) or '').strip()
            if comm not in SSHD_COMMS:
                continue
            for fd in self.fs.listdir_proc('%s/fd' % pid):
                target = self.fs.readlink_proc('%s/fd/%s' % (pid, fd)) or ''
                if target.startswith('socket:[') and target.endswith(']'):
                    holders.setdefault(target[len('socket:['):-1], (int(pid), comm))
        sessions = []
        if holders:
            for table in ('net/tcp', 'net/tcp6'):
                for line in (self.fs.read_proc(table) or '').split('\n')[1:]:
                    cols = line.split()
                    if len(cols) < 10 or cols[3] != TCP_ESTABLISHED or cols[9] not in holders:
                        continue
                    try:
                        local, remote = _tcp_endpoint(cols[1]), _tcp_endpoint(cols[2])
                        iface = self._iface_of(local[0])
                    except (ValueError, OSError, struct.error):
                        continue
                    pid, comm = holders[cols[9]]
                    sessions.append({'local': _endpoint_text(*local), 'remote': _endpoint_text(*remote),
                                     'pid': pid, 'comm': comm, 'iface': iface})
        self._ssh = sessions
        return sessions

    def ssh_session_reasons(self, ifaces):
        """The live SSH sessions that arrive through these interfaces or anything stacked on
        them: taking the device would cut them off, so not even force allows it."""
        if not ifaces:
            return []
        sessions = self._ssh if self._ssh is not None else self._read_ssh_sessions()
        reasons = []
        for iface in ifaces:
            for dev in self._uppers(iface):
                via = '' if dev == iface else ' (stacked on %s)' % iface
                for s in sessions:
                    if s['iface'] == dev:
                        reasons.append('network interface %s%s carries the live SSH session %s -> %s (%s pid %d)'
                                       % (dev, via, s['remote'], s['local'], s['comm'], s['pid']))
        return unique(reasons)

    def _uppers(self, iface, seen=None):
        """The interface and every bond, bridge, VLAN or macvlan stacked on it."""
        seen = seen if seen is not None else []
        if iface in seen:
            return seen
        seen.append(iface)
        base = 'class/net/%s' % iface
        uppers = [n[len('upper_'):] for n in self.fs.listdir(base) if n.startswith('upper_')]
        master = self.fs.link_name(base + '/master')
        if master:
            uppers.append(master)
        for up in uppers:
            self._uppers(up, seen)
        return seen

    def nic_reasons(self, ifaces):
        if not ifaces:
            return []
        routes, v6, v6_default = self._net or self._read_net()
        reasons = []
        for iface in ifaces:
            for dev in self._uppers(iface):
                via = '' if dev == iface else ' (stacked on %s)' % iface
                if any(r[0] == dev and r[3] for r in routes) or dev in v6_default:
                    reasons.append('network interface %s%s carries the default route' % (dev, via))
                if any(r[0] == dev and not r[3] for r in routes):
                    reasons.append('network interface %s%s has an IPv4 address (it has routes)' % (dev, via))
                # scope 0x20 is link-local: every up interface has one; not "configured"
                if any(a[0] == dev and a[2] not in (0x10, 0x20) for a in v6):
                    reasons.append('network interface %s%s has an IPv6 address' % (dev, via))
        return unique(reasons)

    # -- block ---------------------------------------------------------------
    def _read_block(self):
        mounts = {}
        shared = {}  # source tag of 9p/virtiofs mounts -> mount point
        for line in (self.fs.read_proc('self/mountinfo') or '').split('\n'):
            cols = line.split()
            if len(cols) >= 5:
                mounts.setdefault(cols[2], cols[4])
            tail = line.split(' - ', 1)[1].split() if ' - ' in line else []
            if len(tail) >= 2 and tail[0] in ('9p', 'virtiofs'):
                shared.setdefault(tail[1], cols[4])
        swaps = set()
        for line in (self.fs.read_proc('swaps') or '').split('\n')[1:]:
            cols = line.split()
            if cols:
                swaps.add(os.path.basename(cols[0]))
        self._block = (mounts, swaps, self.fs.class_index('block'), shared)
        return self._block

    def block_reasons(self, device_rel):
        """Mounted filesystems, swap, and LVM/md/dm holders of the device's disks; mounted
        virtio-9p shares."""
        mounts, swaps, blocks, shared = self._block or self._read_block()
        reasons = []
        for child in self.fs.listdir(device_rel):
            # a virtio-9p device has no block device: its mount tag names the filesystem
            tag = self.fs.read_optional('%s/%s/mount_tag' % (device_rel, child)) if child.startswith('virtio') else None
            tag = tag.strip('\0 \n') if tag else None
            if tag and tag in shared:
                reasons.append('its 9p filesystem %s is mounted on %s' % (tag, shared[tag]))
        for name in blocks.get(self.fs.link_path(device_rel), ()):
            majmin = self.fs.read_optional('class/block/%s/dev' % name)
            if majmin and majmin in mounts:
                reasons.append('block device %s is mounted on %s' % (name, mounts[majmin]))
            if name in swaps:
                reasons.append('block device %s is in use as swap' % name)
            holders = self.fs.listdir('class/block/%s/holders' % name)
            if holders:
                reasons.append('block device %s is held by %s (LVM, md or device-mapper)'
                               % (name, ', '.join(holders)))
        return reasons

    # -- VFIO users ----------------------------------------------------------
    def _read_vfio_users(self):
        users = {}  # '/dev/vfio/N' or '/dev/vfio/devices/vfioX' -> [(pid, comm)]
        for pid in self.fs.listdir_proc(''):
            if not pid.isdigit():
                continue
            for fd in self.fs.listdir_proc('%s/fd' % pid):
                target = self.fs.readlink_proc('%s/fd/%s' % (pid, fd))
                if target and target.startswith('/dev/vfio/') and target != '/dev/vfio/vfio':
                    comm = (self.fs.read_proc('%s/comm' % pid) or '?').strip()
                    users.setdefault(target, []).append((int(pid), comm))
        self._vfio_users = users
        return users

    def vfio_reasons(self, rec):
        users = self._vfio_users if self._vfio_users is not None else self._read_vfio_users()
        paths = []
        if rec.get('iommu_group') is not None:
            paths.append('/dev/vfio/%s' % rec['iommu_group'])
            paths.append('/dev/vfio/noiommu-%s' % rec['iommu_group'])
        paths.extend('/dev/vfio/devices/%s' % d for d in rec.get('vfio_dev') or ())
        reasons = []
        for path in paths:
            for pid, comm in users.get(path, ()):
                reasons.append('%s is open by pid %d (%s), a VM or another VFIO user' % (path, pid, comm))
        return unique(reasons)

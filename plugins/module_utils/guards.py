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
        for dev, via in self._stacked(ifaces):
            for s in sessions:
                if s['iface'] == dev:
                    reasons.append('network interface %s%s carries the live SSH session %s -> %s (%s pid %d)'
                                   % (dev, via, s['remote'], s['local'], s['comm'], s['pid']))
        return unique(reasons)

    def _stacked(self, ifaces):
        """(interface, how it is reached) for these interfaces and everything stacked on them."""
        for iface in ifaces:
            for dev in self._uppers(iface):
                yield dev, '' if dev == iface else ' (stacked on %s)' % iface

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
        for dev, via in self._stacked(ifaces):
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
    # Device files whose holders are reasons: VFIO groups and cdevs, DRM card/render nodes, NVIDIA nodes.
    HELD_PREFIXES = ('/dev/vfio/', '/dev/dri/', '/dev/nvidia')

    def _read_vfio_users(self):
        """{device file: [(pid, comm)]} for every process holding one of HELD_PREFIXES open."""
        users = {}  # '/dev/vfio/N', '/dev/vfio/devices/vfioX', '/dev/dri/card0', '/dev/nvidia0' -> [(pid, comm)]
        for pid in self.fs.listdir_proc(''):
            if not pid.isdigit():
                continue
            for fd in self.fs.listdir_proc('%s/fd' % pid):
                target = self.fs.readlink_proc('%s/fd/%s' % (pid, fd))
                if target and target.startswith(self.HELD_PREFIXES) and target != '/dev/vfio/vfio':
                    comm = (self.fs.read_proc('%s/comm' % pid) or '?').strip()
                    if (int(pid), comm) not in users.get(target, ()):
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
        return unique(_held_open(users, paths, '%s is open by pid %d (%s), a VM or another VFIO user'))

    # -- GPUs the host uses ------------------------------------------------------
    def gpu_reasons(self, rec, device_rel):
        """A GPU the host is using: its DRM or NVIDIA device nodes held open, or, for the boot
        VGA device, a firmware framebuffer (efifb, vesafb, simpledrm) living in its BARs.

        Unbinding the first hangs or kills the holder (a compositor, a CUDA job); binding
        vfio-pci to the second removes the framebuffer the host console runs on.
        """
        base = device_rel
        nodes = ['/dev/dri/' + n for n in self.fs.listdir(base + '/drm')
                 if n.startswith('card') or n.startswith('renderD')]
        nvidia = (rec.get('driver_module') or rec.get('driver')) == 'nvidia'
        users = {}
        if nodes or nvidia:  # the scan of every process's descriptors only when there is a node to look for
            users = self._vfio_users if self._vfio_users is not None else self._read_vfio_users()
        if nvidia:
            nodes += self._nvidia_nodes(rec['address'], users)
        reasons = _held_open(users, nodes, 'GPU device node %s is open by pid %d (%s)')
        reasons += self._boot_framebuffer_reasons(base)
        return unique(reasons)

    def _nvidia_nodes(self, address, users):
        """/dev/nvidia<minor> of this GPU (from /proc/driver/nvidia), and the control nodes every
        NVIDIA GPU shares; every /dev/nvidia<N> when the minor is not published."""
        info = self.fs.read_proc('driver/nvidia/gpus/%s/information' % address) or ''
        minor = None
        for line in info.split('\n'):
            key, sep, value = line.partition(':')
            if sep and key.strip() == 'Device Minor' and value.strip().isdigit():
                minor = value.strip()
        if minor is not None:
            own = ['/dev/nvidia' + minor]
        else:
            own = sorted(n for n in users if n[len('/dev/nvidia'):].isdigit())
        return own + ['/dev/nvidiactl', '/dev/nvidia-modeset']

    FIRMWARE_FB_RESOURCES = ('BOOTFB', 'efifb', 'vesafb', 'simple-framebuffer', 'simplefb')

    def _firmware_framebuffers(self):
        """[(start, end, name)] of the firmware framebuffers in /proc/iomem (read once)."""
        if getattr(self, '_fbs', None) is None:
            fbs = []
            for line in (self.fs.read_proc('iomem') or '').split('\n'):
                span, sep, name = line.strip().partition(' : ')
                start, dash, end = span.partition('-')
                if sep and dash and name.strip() in self.FIRMWARE_FB_RESOURCES:
                    try:
                        fbs.append((int(start, 16), int(end, 16), name.strip()))
                    except ValueError:
                        continue
            self._fbs = [fb for fb in fbs if fb[1] > 0]  # all zeros: read without the right to see addresses
        return self._fbs

    def _boot_framebuffer_reasons(self, base):
        if self.fs.read_optional(base + '/boot_vga') != '1':
            return []
        bars = []
        for i, line in enumerate((self.fs.read_optional(base + '/resource') or '').split('\n')[:7]):
            cols = line.split()
            try:
                start, end = int(cols[0], 16), int(cols[1], 16)
            except (IndexError, ValueError):
                continue
            if end > start:
                bars.append((i, start, end))
        # The framebuffer devices fbN (class/graphics also holds fbcon, the console's own device).
        consoles = ['%s (%s)' % (fb, self.fs.read_optional('class/graphics/%s/name' % fb) or '?')
                    for fb in self.fs.listdir('class/graphics') if fb.startswith('fb') and fb[2:].isdigit()]
        reasons = []
        for start, end, name in self._firmware_framebuffers():
            for i, bstart, bend in bars:
                if bstart <= start and end <= bend:
                    reasons.append('it is the boot VGA device and the firmware framebuffer %s (%x-%x in /proc/iomem) '
                                   'lives in its %s%s: the host console runs on it, and taking the device blanks '
                                   'or hangs it (boot with video=efifb:off or initcall_blacklist=sysfb_init to '
                                   'free it)' % (name, start, end, 'ROM' if i == 6 else 'BAR %d' % i,
                                                 '; framebuffers: ' + ', '.join(consoles) if consoles else ''))
        return reasons


def _held_open(users, paths, text):
    """text % (path, pid, comm) for each process (users: path -> [(pid, comm)]) holding one of paths."""
    return [text % (path, pid, comm) for path in paths for pid, comm in users.get(path, ())]

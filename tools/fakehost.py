# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fake hypervisors: a sysfs/procfs/modules tree to try the collection without hardware.

    python3 tools/fakehost.py ROOT [--nic N] [--gpu N] [--nvme N] [--sriov-pf N --vfs K]
                                   [--virtio N] [--state host|vfio] [--force]

writes, under ROOT, what vfio_facts, vfio_bind and the passthrough role read on a real host:
``sys/`` (PCI devices with their IDs, modalias, driver links, IOMMU groups, SR-IOV links, network
interfaces and block devices), ``proc/`` (cmdline, osrelease), ``lib/modules/<release>/``
(modules.alias with the vfio_pci: aliases of the VFIO variant drivers, modules.dep) and
``etc/modprobe.d/``. Device kinds:

- ``nic``: an Intel 82574L (e1000e) with a network interface; its VFIO driver is vfio-pci;
- ``gpu``: an NVIDIA GPU (nouveau) and its HDMI audio function (snd_hda_intel), both in one
  IOMMU group, as on a real card: they go to vfio-pci together;
- ``nvme``: a Samsung NVMe drive (nvme) with its block device;
- ``sriov-pf``: an Intel X710 PF (i40e, sriov_totalvfs 64) with ``--vfs`` VFs (iavf), each VF
  in its own IOMMU group; the VFs are the passthrough candidates, the PF stays on the host;
- ``virtio``: a modern virtio-net NIC (virtio-pci) whose best VFIO driver is the variant
  virtio_vfio_pci (an override-only driver, as in the kernel).

``--state host`` (default) leaves every device on its host driver; ``--state vfio`` puts the
passthrough candidates on their VFIO driver with ``driver_override`` set, as vfio_bind leaves
them. It writes ``ROOT/inventory.json`` (one host in the group ``hypervisors`` with
``ansible_connection: local``, no privilege escalation, and the role's variables: the collection's
playbooks run on it as they are) and ``ROOT/fakehost.json``: ``module_options`` (the path options
of vfio_facts/vfio_bind), ``role_vars`` (the passthrough role's variables pointing at the tree, a
lock and journal file under ROOT, no boot loader or persistence changes) and ``devices`` (the
passthrough candidates); it prints ``role_vars`` (for ``-e @file`` in a play of your own).

What a fake tree cannot do: no kernel runs behind it. A write to ``driver_override`` changes the
file, but a write to ``unbind``, ``bind`` or ``drivers_probe`` only creates a file: no driver
lets go of a device or probes it. So facts, check mode, plans, guards and the idempotent re-run
(devices already on their target: nothing to write) work; a real bind on it does not (the
module waits for the driver link to change, then rolls back and fails). Modules are never
loaded against a fake tree: vfio_bind refuses to run modprobe when ``sysfs_path`` is not /sys.

The tree builder (``FakeHost``) is the one the collection's unit tests use (tests/unit/fakesys.py
adds a fake kernel with the kernel's write semantics, in-process only).
Standard library only; nothing is written outside ROOT.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import shutil
import socket
import struct
import sys

RELEASE = '6.12.48+deb12-amd64'

GENERIC_VFIO_ALIAS = 'alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci'


def modalias(vendor, device, subvendor, subdevice, cls):
    return 'pci:v0000%sd0000%ssv0000%ssd0000%sbc%ssc%si%s' % (
        vendor.upper(), device.upper(), subvendor.upper(), subdevice.upper(),
        cls[0:2].upper(), cls[2:4].upper(), cls[4:6].upper())


def _link(src, dst):
    """Relative symlink src -> dst (both absolute), as sysfs has them."""
    if os.path.lexists(src):
        os.unlink(src)
    os.symlink(os.path.relpath(dst, os.path.dirname(src)), src)


def _write(path, text):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path, 'w') as f:
        f.write(text)


def _tcp_word(addr, port):
    """An endpoint as /proc/net/tcp{,6} writes it: host-order 32-bit hex words, hex port."""
    if ':' in addr:
        packed = socket.inet_pton(socket.AF_INET6, addr)
    else:
        packed = socket.inet_aton(addr)
    words = struct.unpack('=%dI' % (len(packed) // 4), packed)
    return '%s:%04X' % (''.join('%08X' % w for w in words), port)


# The kernel modules the fake hosts use, as the Debian kernel ships them: add_module's arguments.
MODULES = {
    'vfio_pci': dict(driver='vfio-pci'),
    'virtio_vfio_pci': dict(ids=[('1af4', '1041')], override_only=True),
    'vfio_testdev': dict(ids=[('1b36', '0005')], override_only=True),
    'virtio_pci': dict(driver='virtio-pci', ids=[('1af4', '1041'), ('1af4', '1042')], loaded=True),
    'e1000e': dict(ids=[('8086', '10d3')], loaded=True),
    'igb': dict(ids=[('8086', '10c9')], loaded=True),
    'igbvf': dict(ids=[('8086', '10ca')], loaded=True),
    'snd_hda_intel': dict(ids=[('10de', '10f0')], loaded=True),
    'mlx5_core': dict(ids=[('15b3', '101e')], loaded=True),
    'mlx5_vfio_pci': dict(ids=[('15b3', '101e')], override_only=True),
}


class FakeHost:
    """A host tree under root: sys/, proc/, lib/modules/<release>/, etc/modprobe.d/."""

    def __init__(self, root, release=RELEASE, aliases=(GENERIC_VFIO_ALIAS,)):
        self.root = str(root)
        self.sys = os.path.join(self.root, 'sys')
        self.proc = os.path.join(self.root, 'proc')
        self.release = release
        self.moddir = os.path.join(self.root, 'lib', 'modules')
        self.confdir = os.path.join(self.root, 'etc', 'modprobe.d')
        for d in ('bus/pci/devices', 'bus/pci/drivers', 'devices/pci0000:00', 'kernel/iommu_groups',
                  'module', 'class/net', 'class/block', 'class/iommu'):
            os.makedirs(os.path.join(self.sys, d))
        os.makedirs(self.confdir)
        os.makedirs(os.path.join(self.moddir, release))
        _write(os.path.join(self.proc, 'sys/kernel/osrelease'), release + '\n')
        _write(os.path.join(self.proc, 'cmdline'), 'BOOT_IMAGE=/vmlinuz root=/dev/vda1 intel_iommu=on iommu=pt\n')
        _write(os.path.join(self.proc, 'net/route'),
               'Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n')
        _write(os.path.join(self.proc, 'self/mountinfo'), '')
        _write(os.path.join(self.proc, 'swaps'), 'Filename\tType\tSize\tUsed\tPriority\n')
        self.aliases = list(aliases)
        self.modules = {}      # module -> {'driver': name, 'ids': [(v, d)], 'override_only': bool}
        self.dep = []
        self.write_aliases()

    def write(self, path, text):
        """A file of the tree (path relative to root, its folders made), with text as its content."""
        _write(os.path.join(self.root, path), text)

    # -- module files ----------------------------------------------------------
    def write_aliases(self):
        _write(os.path.join(self.moddir, self.release, 'modules.alias'),
               '# Aliases extracted from modules themselves.\n' + '\n'.join(self.aliases) + '\n')
        _write(os.path.join(self.moddir, self.release, 'modules.dep'),
               ''.join('kernel/drivers/%s.ko.xz:%s\n' % (m, self._dep_line(m)) for m in self.dep))

    def _dep_line(self, module):
        """VFIO drivers (vfio_pci and the override-only variants) depend on vfio_pci_core, as in
        a real modules.dep; a module may also name its own (``deps``)."""
        info = self.modules.get(module, {})
        deps = list(info.get('deps') or ())
        if module == 'vfio_pci' or info.get('override_only'):
            deps = ['vfio/pci/vfio-pci-core', 'vfio/vfio'] + deps
        return ''.join(' kernel/drivers/%s.ko.xz' % d for d in deps)

    def add_module(self, module, driver=None, ids=(), override_only=False, loaded=False, alias=True,
                   installed=True, deps=()):
        """A kernel module providing a pci driver.  VFIO variants get vfio_pci: aliases."""
        driver = driver or module
        self.modules[module] = {'driver': driver, 'ids': list(ids), 'override_only': override_only,
                                'deps': list(deps)}
        if installed:
            self.dep.append(module)
        if alias:
            prefix = 'vfio_pci' if override_only else 'pci'
            for v, d in ids:
                self.aliases.append('alias %s:v0000%sd0000%ssv*sd*bc*sc*i* %s' % (prefix, v.upper(), d.upper(), module))
        self.write_aliases()
        if loaded:
            self.load(module)

    def add_modules(self, *names, **kw):
        """add_module for each of the MODULES named; ``kw`` overrides their arguments (loaded=True)."""
        for name in names:
            self.add_module(name, **dict(MODULES[name], **kw))

    def load(self, module):
        info = self.modules[module]
        mdir = os.path.join(self.sys, 'module', module)
        ddir = os.path.join(self.sys, 'bus/pci/drivers', info['driver'])
        for d in (os.path.join(mdir, 'drivers'), ddir):
            if not os.path.isdir(d):
                os.makedirs(d)
        _link(os.path.join(mdir, 'drivers', 'pci:' + info['driver']), ddir)
        _link(os.path.join(ddir, 'module'), mdir)

    def blacklist(self, module, how='blacklist'):
        line = 'blacklist %s\n' % module if how == 'blacklist' else 'install %s /bin/false\n' % module
        with open(os.path.join(self.confdir, 'blacklist-test.conf'), 'a') as f:
            f.write(line)

    # -- devices -----------------------------------------------------------------
    def dev_dir(self, addr):
        return os.path.join(self.sys, 'devices/pci0000:00', addr)

    def add_device(self, addr, vendor='8086', device='10d3', cls='020000', subvendor=None, subdevice='0000',
                   driver=None, override=None, group='auto', numa=0, net=(), block=(), physfn=None,
                   sriov_totalvfs=None, modalias_attr=True, reset_method='flr'):
        d = self.dev_dir(addr)
        os.makedirs(d)
        subvendor = subvendor or vendor
        attrs = {'vendor': '0x' + vendor, 'device': '0x' + device, 'subsystem_vendor': '0x' + subvendor,
                 'subsystem_device': '0x' + subdevice, 'class': '0x' + cls, 'numa_node': str(numa),
                 'driver_override': (override or '(null)')}
        if modalias_attr:
            attrs['modalias'] = modalias(vendor, device, subvendor, subdevice, cls)
        if reset_method is not None:    # most PCIe functions have FLR; the kernel adds 'reset' with it
            attrs.update(reset_method=reset_method, reset='')
        if sriov_totalvfs is not None:
            attrs.update(sriov_totalvfs=str(sriov_totalvfs), sriov_numvfs='0', sriov_drivers_autoprobe='1')
        for k, v in attrs.items():
            _write(os.path.join(d, k), v + '\n')
        _link(os.path.join(self.sys, 'bus/pci/devices', addr), d)
        if group == 'auto':
            group = len(os.listdir(os.path.join(self.sys, 'kernel/iommu_groups')))
        if group is not None:
            gdir = os.path.join(self.sys, 'kernel/iommu_groups', str(group), 'devices')
            if not os.path.isdir(gdir):
                os.makedirs(gdir)
            _link(os.path.join(gdir, addr), d)
            _link(os.path.join(d, 'iommu_group'), os.path.dirname(gdir))
        if physfn:
            _link(os.path.join(d, 'physfn'), self.dev_dir(physfn))
            pf = self.dev_dir(physfn)
            n = len([x for x in os.listdir(pf) if x.startswith('virtfn')])
            _link(os.path.join(pf, 'virtfn%d' % n), d)
        for ifname in net:
            # virtio NICs hang their interface under the virtio child device, others directly
            ndir = os.path.join(d, 'virtio%d' % len(net), 'net', ifname) if vendor == '1af4' \
                else os.path.join(d, 'net', ifname)
            os.makedirs(ndir)
            _link(os.path.join(self.sys, 'class/net', ifname), ndir)
        for i, disk in enumerate(block):
            bdir = os.path.join(d, 'virtio%d' % i, 'block', disk)
            os.makedirs(os.path.join(bdir, 'holders'))
            _write(os.path.join(bdir, 'dev'), '253:%d\n' % (i * 16))
            _link(os.path.join(self.sys, 'class/block', disk), bdir)
        if driver:
            self.attach(addr, driver)
        return addr

    def attach(self, addr, driver):
        ddir = os.path.join(self.sys, 'bus/pci/drivers', driver)
        if not os.path.isdir(ddir):
            os.makedirs(ddir)
        _link(os.path.join(self.dev_dir(addr), 'driver'), ddir)
        _link(os.path.join(ddir, addr), self.dev_dir(addr))

    def detach(self, addr):
        link = os.path.join(self.dev_dir(addr), 'driver')
        drv = os.path.basename(os.readlink(link))
        os.unlink(link)
        os.unlink(os.path.join(self.sys, 'bus/pci/drivers', drv, addr))

    def unplug(self, addr):
        """The device disappears, as after a hot-unplug (device_del)."""
        import shutil
        os.unlink(os.path.join(self.sys, 'bus/pci/devices', addr))
        shutil.rmtree(self.dev_dir(addr))

    # -- host usage ------------------------------------------------------------------
    def add_route(self, iface, dest='00000000', mask='00000000', gateway='0102000A'):
        with open(os.path.join(self.proc, 'net/route'), 'a') as f:
            f.write('%s\t%s\t%s\t0003\t0\t0\t100\t%s\t0\t0\t0\n' % (iface, dest, gateway, mask))

    def add_mount(self, majmin, mountpoint):
        with open(os.path.join(self.proc, 'self/mountinfo'), 'a') as f:
            f.write('29 1 %s / %s rw,relatime shared:1 - ext4 /dev/x rw\n' % (majmin, mountpoint))

    def add_upper(self, lower, upper):
        udir = os.path.join(self.sys, 'devices/virtual/net', upper)
        if not os.path.isdir(udir):
            os.makedirs(udir)
            _link(os.path.join(self.sys, 'class/net', upper), udir)
        _link(os.path.join(self.sys, 'class/net', lower, 'upper_' + upper), udir)

    def hold_vfio(self, pid, group, comm='qemu-system-x86'):
        fd = os.path.join(self.proc, str(pid), 'fd')
        os.makedirs(fd)
        os.symlink('/dev/vfio/%s' % group, os.path.join(fd, '7'))
        _write(os.path.join(self.proc, str(pid), 'comm'), comm + '\n')

    def add_ssh_session(self, pid, local, remote, comm='sshd', inode=None, state='01'):
        """An sshd process holding a TCP socket from remote to local (('10.0.2.15', 22) or
        ('fd00::15', 22)): /proc/PID/comm, /proc/PID/fd/N -> socket:[inode] and the socket's
        line in /proc/net/tcp (IPv4) or tcp6 (IPv6), in the kernel's format.  state '01' is
        ESTABLISHED, '0A' LISTEN.  Returns the inode."""
        inode = inode if inode is not None else 40000 + pid
        fd = os.path.join(self.proc, str(pid), 'fd')
        if not os.path.isdir(fd):
            os.makedirs(fd)
            _write(os.path.join(self.proc, str(pid), 'comm'), comm + '\n')
        os.symlink('socket:[%d]' % inode, os.path.join(fd, str(3 + len(os.listdir(fd)))))
        self.add_tcp_socket(local, remote, inode, state)
        return inode

    def add_tcp_socket(self, local, remote, inode, state='01'):
        """A line of /proc/net/tcp or tcp6 (by the local address's family)."""
        v6 = ':' in local[0]
        path = os.path.join(self.proc, 'net', 'tcp6' if v6 else 'tcp')
        if not os.path.exists(path):
            _write(path, '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt'
                         '   uid  timeout inode\n')
        with open(path) as f:
            n = len(f.read().splitlines()) - 1
        with open(path, 'a') as f:
            f.write('%4d: %s %s %s 00000000:00000000 02:000A8B2B 00000000     0        0 %d 4 '
                    '0000000000000000 20 4 29 10 -1\n' % (n, _tcp_word(*local), _tcp_word(*remote), state, inode))

    # -- module parameters -----------------------------------------------------------
    def params(self, **kw):
        p = dict(sysfs_path=self.sys, procfs_path=self.proc, modules_dir=self.moddir, rootfs_path=self.root,
                 kernel_release=None, modprobe_config_dirs=[self.confdir],
                 lock_file=os.path.join(self.root, 'vfio.lock'), lock_timeout=5, timeout=5,
                 journal_file=os.path.join(self.root, 'run', 'hypervisor-vfio', 'journal.json'),
                 state='vfio', driver=None, iommu_group='strict', force=False)
        p.update(kw)
        return p


# -- the generator: a hypervisor of chosen device kinds -------------------------------------------
# kind: (vendor, device, class, subvendor, subdevice, host driver module, driver name)
KINDS = {
    'nic': ('8086', '10d3', '020000', '8086', 'a01f', 'e1000e', 'e1000e'),
    'gpu': ('10de', '1eb8', '030000', '10de', '12a2', 'nouveau', 'nouveau'),
    'gpu-audio': ('10de', '10f0', '040300', '10de', '12a2', 'snd_hda_intel', 'snd_hda_intel'),
    'nvme': ('144d', 'a80a', '010802', '144d', 'a801', 'nvme', 'nvme'),
    'sriov-pf': ('8086', '1572', '020000', '8086', '0007', 'i40e', 'i40e'),
    'sriov-vf': ('8086', '154c', '020000', '8086', '0000', 'iavf', 'iavf'),
    'virtio': ('1af4', '1041', '020000', '1af4', '1100', 'virtio_pci', 'virtio-pci'),
}
# The VFIO variant drivers of the fake kernel (override-only, vfio_pci: aliases), by device IDs.
VARIANTS = {('1af4', '1041'): 'virtio_vfio_pci'}


class Generator:
    """Fills a FakeHost with devices of the KINDS, one PCIe slot (bus) each."""

    def __init__(self, root, release=RELEASE):
        self.host = FakeHost(root, release=release)
        h = self.host
        h.add_module('vfio_pci', driver='vfio-pci', loaded=True)
        for (vendor, device), module in sorted(VARIANTS.items()):
            h.add_module(module, ids=[(vendor, device)], override_only=True, loaded=True)
        for kind, (vendor, device, _c, _sv, _sd, module, driver) in sorted(KINDS.items()):
            if module not in h.modules:
                h.add_module(module, driver=driver, ids=[(vendor, device)], loaded=True)
            else:
                h.modules[module]['ids'].append((vendor, device))
        for name in ('vfio', 'vfio_iommu_type1', 'vfio_pci_core'):
            os.makedirs(os.path.join(h.sys, 'module', name))
        os.makedirs(os.path.join(h.sys, 'class', 'iommu', 'dmar0'))
        self.slot = 0
        self.group = 0
        self.ifindex = 0
        self.disks = 0
        self.vfio_dev = 0
        self.candidates = []       # addresses a VM may get, in creation order
        self.targets = {}          # address -> its VFIO driver

    def _bus(self):
        self.slot += 1
        return '%04x:%02x' % (self.slot // 256, self.slot % 256)

    def _next_group(self):
        self.group += 1
        return self.group - 1

    def _add(self, kind, addr, group, candidate=True, **kw):
        vendor, device, cls, subvendor, subdevice, _module, driver = KINDS[kind]
        self.host.add_device(addr, vendor, device, cls, subvendor=subvendor, subdevice=subdevice,
                             driver=driver, group=group, numa=self.slot % 2, **kw)
        if candidate:
            self.candidates.append(addr)
            self.targets[addr] = self.host.modules[VARIANTS.get((vendor, device), 'vfio_pci')]['driver']
        return addr

    def _ifname(self):
        self.ifindex += 1
        return 'enp%ds0' % self.ifindex

    def nic(self):
        self._add('nic', self._bus() + ':00.0', self._next_group(), net=[self._ifname()])

    def virtio(self):
        self._add('virtio', self._bus() + ':00.0', self._next_group(), net=[self._ifname()])

    def nvme(self):
        self.disks += 1
        self._add('nvme', self._bus() + ':00.0', self._next_group(), block=['nvme%dn1' % self.disks])

    def gpu(self):
        bus, group = self._bus(), self._next_group()
        self._add('gpu', bus + ':00.0', group)
        self._add('gpu-audio', bus + ':00.1', group)

    def sriov_pf(self, vfs):
        bus = self._bus()
        pf = self._add('sriov-pf', bus + ':00.0', self._next_group(), candidate=False,
                       net=[self._ifname()], sriov_totalvfs=64)
        for i in range(vfs):
            self._add('sriov-vf', '%s:%02x.%d' % (bus, 2 + i // 8, i % 8), self._next_group(), physfn=pf,
                      net=[self._ifname()])
        with open(os.path.join(self.host.dev_dir(pf), 'sriov_numvfs'), 'w') as f:
            f.write('%d\n' % vfs)

    def to_vfio(self):
        """Every candidate on its VFIO driver with driver_override set, as vfio_bind leaves it."""
        for addr in self.candidates:
            target = self.targets[addr]
            d = self.host.dev_dir(addr)
            self.host.detach(addr)
            for sub in ('net', 'virtio1'):      # the host driver's interface goes with it
                if os.path.isdir(os.path.join(d, sub)):
                    for ifname in os.listdir(os.path.join(d, sub, 'net') if sub == 'virtio1' else
                                             os.path.join(d, sub)):
                        os.unlink(os.path.join(self.host.sys, 'class/net', ifname))
                    shutil.rmtree(os.path.join(d, sub))
            self.host.attach(addr, target)
            with open(os.path.join(d, 'driver_override'), 'w') as f:
                f.write(target + '\n')
            os.makedirs(os.path.join(d, 'vfio-dev', 'vfio%d' % self.vfio_dev))
            self.vfio_dev += 1

    def describe(self):
        h = self.host
        module_options = {'sysfs_path': h.sys, 'procfs_path': h.proc, 'modules_dir': h.moddir,
                          'rootfs_path': h.root, 'modprobe_config_dirs': [h.confdir]}
        role_vars = dict(('passthrough_' + k, v) for k, v in module_options.items())
        role_vars.update(passthrough_devices=list(self.candidates),
                         passthrough_lock_file=os.path.join(h.root, 'run', 'hypervisor-vfio.lock'),
                         passthrough_journal_file=os.path.join(h.root, 'run', 'hypervisor-vfio', 'journal.json'),
                         # nothing outside the tree: no boot loader, no files under /etc
                         passthrough_iommu_cmdline=False, passthrough_persistent=False)
        return {'root': h.root, 'release': h.release, 'module_options': module_options, 'role_vars': role_vars,
                'devices': list(self.candidates),
                'vfio_drivers': dict((a, self.targets[a]) for a in self.candidates)}


def generate(root, nic=0, gpu=0, nvme=0, sriov_pf=0, vfs=4, virtio=0, state='host', release=RELEASE, name=None):
    """Build the fake host under root (which must not exist or be empty); its description."""
    g = Generator(root, release=release)
    for dummy in range(gpu):
        g.gpu()
    for dummy in range(nic):
        g.nic()
    for dummy in range(nvme):
        g.nvme()
    for dummy in range(sriov_pf):
        g.sriov_pf(vfs)
    for dummy in range(virtio):
        g.virtio()
    if state == 'vfio':
        g.to_vfio()
    info = g.describe()
    os.makedirs(os.path.join(root, 'run'))
    # an inventory of one host in the group the collection's playbooks target: the local
    # connection, no privilege escalation (converge.yml asks for it; nothing here needs root)
    hostvars = dict(info['role_vars'], ansible_connection='local', ansible_become=False,
                    ansible_python_interpreter='{{ ansible_playbook_python }}')
    info['inventory'] = os.path.join(root, 'inventory.json')
    with open(info['inventory'], 'w') as f:
        json.dump({'hypervisors': {'hosts': {name or os.path.basename(root.rstrip(os.sep)): hostvars}}}, f,
                  indent=2, sort_keys=True)
        f.write('\n')
    with open(os.path.join(root, 'fakehost.json'), 'w') as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write('\n')
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description='Write a fake hypervisor (sysfs, procfs, module files) under ROOT.')
    ap.add_argument('root', help='the folder to create (never a real /)')
    ap.add_argument('--nic', type=int, default=2, help='Intel e1000e NICs (default 2)')
    ap.add_argument('--gpu', type=int, default=1, help='GPUs with their HDMI audio function (default 1)')
    ap.add_argument('--nvme', type=int, default=1, help='NVMe drives (default 1)')
    ap.add_argument('--sriov-pf', type=int, default=1, help='SR-IOV PFs (default 1)')
    ap.add_argument('--vfs', type=int, default=4, help='VFs per PF (default 4)')
    ap.add_argument('--virtio', type=int, default=1, help='virtio-net NICs (VFIO variant driver; default 1)')
    ap.add_argument('--state', choices=('host', 'vfio'), default='host',
                    help='host: every device on its host driver; vfio: the candidates on their VFIO driver')
    ap.add_argument('--release', default=RELEASE, help='kernel release of the fake host')
    ap.add_argument('--name', help='inventory host name in ROOT/inventory.json (default: the name of ROOT)')
    ap.add_argument('--force', action='store_true', help='replace ROOT if it holds an earlier fake host')
    args = ap.parse_args(argv)
    root = os.path.abspath(args.root)
    if os.path.realpath(root) == '/':
        ap.error('ROOT must not be /')
    if os.path.exists(root) and os.listdir(root):
        if not (args.force and os.path.exists(os.path.join(root, 'fakehost.json'))):
            ap.error('%s exists and is not empty (--force replaces an earlier fake host, and only one)' % root)
        shutil.rmtree(root)
    counts = dict(nic=args.nic, gpu=args.gpu, nvme=args.nvme, sriov_pf=args.sriov_pf, virtio=args.virtio)
    if any(n < 0 for n in counts.values()) or args.vfs < 0 or args.vfs > 64:
        ap.error('counts must be >= 0 and --vfs at most 64')
    info = generate(root, vfs=args.vfs, state=args.state, release=args.release, name=args.name, **counts)
    json.dump(info['role_vars'], sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write('\n')
    sys.stderr.write('%s: %d devices to pass through (%s); inventory %s, description %s\n' % (
        root, len(info['devices']), args.state, info['inventory'], os.path.join(root, 'fakehost.json')))
    return 0


if __name__ == '__main__':
    sys.exit(main())

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fake hosts for unit tests: a sysfs/procfs/modules tree built from declarative device specs,
and a fake kernel that gives sysfs writes their real semantics and records every write."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import socket
import struct

from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import run_bind
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import KernelError, KernelFS, WriteTimeout

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


class FakeKernel(KernelFS):
    """KernelFS over a FakeHost whose writes behave like the kernel's (and are recorded)."""

    def __init__(self, host):
        super(FakeKernel, self).__init__(host.sys, host.proc, kmsg_path=os.path.join(host.root, 'nokmsg'))
        self.host = host
        self.log = []          # every write: (relative path, value)
        self.fail_probe = set()    # drivers whose probe fails with EIO
        self.hang_unbind = set()   # drivers whose unbind blocks past the timeout
        self.fail_write = {}       # relative path -> errno
        self.kmsg = []
        self.blacklisted = set()   # modules modprobe "loads" without loading (blacklisted alias)
        self.unplug_on_unbind = set()  # devices hot-unplugged while being unbound

    def _dev(self, addr):
        return os.path.join(self.host.dev_dir(addr))

    def _driver_of(self, addr):
        try:
            return os.path.basename(os.readlink(os.path.join(self._dev(addr), 'driver')))
        except OSError:
            return None

    def _override(self, addr):
        with open(os.path.join(self._dev(addr), 'driver_override')) as f:
            v = f.read().strip()
        return None if v == '(null)' else v

    def _ids(self, addr):
        def read(attr):
            with open(os.path.join(self._dev(addr), attr)) as f:
                return f.read().strip()[2:]
        return read('vendor'), read('device')

    def _module_of_driver(self, driver):
        for m, info in self.host.modules.items():
            if info['driver'] == driver:
                return m, info
        return None, None

    def _matches(self, addr, driver):
        override = self._override(addr)
        if override is not None:
            return override == driver
        physfn = os.path.join(self._dev(addr), 'physfn')
        if os.path.lexists(physfn):
            # the kernel's pci_device_can_probe: a VF of a PF with sriov_drivers_autoprobe 0 is
            # probed only for its driver_override (by drivers_probe as by bind)
            with open(os.path.join(os.path.realpath(physfn), 'sriov_drivers_autoprobe')) as f:
                if f.read().strip() == '0':
                    return False
        dummy, info = self._module_of_driver(driver)
        if info is None or info['override_only']:
            return False
        return self._ids(addr) in [(v.lower(), d.lower()) for v, d in info['ids']]

    def _probe(self, addr, driver):
        if driver in self.fail_probe:
            self.kmsg.append('%s %s: probe with driver %s failed with error -5' % (driver, addr, driver))
            raise KernelError('probe failed', None, errno.EIO)
        self.host.attach(addr, driver)

    def write(self, rel, value, timeout=None):
        self.log.append((rel, value))
        if rel in self.fail_write:
            raise KernelError('injected failure writing %s' % rel, self.sys(rel), self.fail_write[rel])
        parts = rel.split('/')
        if not os.path.exists(self.sys(rel)) and parts[-1] not in ('bind', 'unbind', 'drivers_probe'):
            raise KernelError('no such attribute %s' % rel, self.sys(rel), errno.ENOENT)
        if parts[-1] == 'driver_override':
            addr = parts[-2]
            text = value.strip('\n')
            with open(os.path.join(self._dev(addr), 'driver_override'), 'w') as f:
                f.write((text or '(null)') + '\n')
        elif parts[-1] == 'unbind':
            driver, addr = parts[-2], value
            if self._driver_of(addr) != driver:
                raise KernelError('not bound', self.sys(rel), errno.ENODEV)
            if driver in self.hang_unbind:
                raise WriteTimeout(self.sys(rel), timeout, 4242)
            self.host.detach(addr)
            if addr in self.unplug_on_unbind:
                self.host.unplug(addr)
        elif parts[-1] == 'sriov_numvfs':
            self.write_sriov_numvfs(parts[-2], value, timeout)
        elif parts[-1] in ('bind', 'drivers_probe') and not os.path.isdir(self._dev(value)):
            raise KernelError('no such device %s' % value, self.sys(rel), errno.ENODEV)
        elif parts[-1] == 'bind':
            driver, addr = parts[-2], value
            if not os.path.isdir(self.sys('bus/pci/drivers/' + driver)):
                raise KernelError('no driver', self.sys(rel), errno.ENOENT)
            if self._driver_of(addr):
                raise KernelError('busy', self.sys(rel), errno.EBUSY)
            if not self._matches(addr, driver):
                raise KernelError('no match', self.sys(rel), errno.ENODEV)
            self._probe(addr, driver)
        elif parts[-1] == 'drivers_probe':
            addr = value
            if self._driver_of(addr):
                return
            for driver in sorted(os.listdir(self.sys('bus/pci/drivers'))):
                if self._matches(addr, driver):
                    try:
                        self._probe(addr, driver)
                    except KernelError:
                        continue  # drivers_probe reports success whatever happened
                    return
        else:
            with open(self.sys(rel), 'w') as f:
                f.write(value)

    def kernel_log_cursor(self):
        return len(self.kmsg)

    def kernel_log_since(self, cursor, needle=None):
        return [m for m in self.kmsg[cursor:] if needle is None or needle in m]

    def close_cursor(self, cursor):
        pass

    def modprobe(self, argv):
        """A modprobe runner for the executor: loads a module of the fake host by name."""
        self.log.append(('modprobe', ' '.join(argv)))
        module = argv[-1]
        if module not in self.host.modules or module not in self.host.dep:
            return 1, '', 'modprobe: FATAL: Module %s not found in directory /lib/modules/%s' % (
                module, self.host.release)
        if module in self.blacklisted:
            return 0, '', ''
        self.host.load(module)
        return 0, '', ''

    def device_writes(self):
        return [w for w in self.log if w[0] != 'modprobe']


# -- a small standard host, and vfio_bind run on it -----------------------------------------------
VIRTIO = '0000:00:03.0'   # modern virtio-net: virtio_vfio_pci is its best VFIO variant
NIC = '0000:00:04.0'      # e1000e: only the generic vfio-pci matches it
TESTDEV = '0000:00:05.0'  # unbound, its override-only variant vfio_testdev


def vfio_host(root):
    """A FakeHost with vfio_pci, two VFIO variants, two host drivers and the three devices above."""
    h = FakeHost(root)
    h.add_module('vfio_pci', driver='vfio-pci')
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True)
    h.add_module('vfio_testdev', ids=[('1b36', '0005')], override_only=True)
    h.add_module('virtio_pci', driver='virtio-pci', ids=[('1af4', '1041')], loaded=True)
    h.add_module('e1000e', ids=[('8086', '10d3')], loaded=True)
    h.add_device(VIRTIO, '1af4', '1041', driver='virtio-pci')
    h.add_device(NIC, '8086', '10d3', driver='e1000e')
    h.add_device(TESTDEV, '1b36', '0005', cls='00ff00')
    return h


def bind_on(host, kernel, check_mode=False, **params):
    """vfio_bind's whole job (bind.run_bind) on a FakeHost through its FakeKernel."""
    p = host.params(**params)
    return run_bind(p, HostContext(p, fs=kernel), kernel.modprobe, check_mode=check_mode,
                    may_load_modules=True)


class FakeSriov:
    """SR-IOV semantics for a FakeKernel: ``FakeKernel.write_sriov_numvfs`` (mixed in below).

    As the kernel's sriov_numvfs_store: a count that is not a number is EINVAL, above
    sriov_totalvfs ERANGE, a nonzero count while VFs exist EBUSY; 0 removes the VFs; N creates
    them as new devices with a ``physfn`` link and ``virtfn<i>`` links on the PF, and with
    sriov_drivers_autoprobe=1 a loaded host driver that matches a VF's IDs binds it.
    """

    def sriov_setup(self, pf, vf_device='10ca', hang=False, no_vfs=False):
        """VF IDs of a PF (vendor: the PF's); hang: the count write blocks past its bound;
        no_vfs: the write succeeds but no VF ever appears (firmware without room)."""
        if not hasattr(self, 'sriov'):
            self.sriov = {}
        self.sriov[pf] = {'vf_device': vf_device, 'hang': hang, 'no_vfs': no_vfs}

    @staticmethod
    def vf_address(pf, index):
        domain, bus, rest = pf.split(':')
        return '%s:%02x:%02x.%d' % (domain, int(bus, 16) + 1, 0x10 + index // 8, index % 8)

    def _sriov_attr(self, pf, name, value=None):
        path = os.path.join(self._dev(pf), name)
        if value is None:
            with open(path) as f:
                return f.read().strip()
        with open(path, 'w') as f:
            f.write(value + '\n')

    def write_sriov_numvfs(self, pf, value, timeout=None):
        conf = getattr(self, 'sriov', {}).get(pf, {'vf_device': '10ca', 'hang': False, 'no_vfs': False})
        rel = 'bus/pci/devices/%s/sriov_numvfs' % pf
        text = value.strip()
        if not text.isdigit():
            raise KernelError('not a number', self.sys(rel), errno.EINVAL)
        want = int(text)
        cur = int(self._sriov_attr(pf, 'sriov_numvfs'))
        if want > int(self._sriov_attr(pf, 'sriov_totalvfs')):
            raise KernelError('too many', self.sys(rel), errno.ERANGE)
        if want == cur:
            return
        if want and cur:
            self.kmsg.append('pci %s: %d VFs already enabled. Disable before enabling %d VFs' % (pf, cur, want))
            raise KernelError('busy', self.sys(rel), errno.EBUSY)
        if conf['hang']:
            raise WriteTimeout(self.sys(rel), timeout, 4343)
        if want == 0:
            pfdir = self._dev(pf)
            for link in sorted(x for x in os.listdir(pfdir) if x.startswith('virtfn')):
                vf = os.path.basename(os.readlink(os.path.join(pfdir, link)))
                if self._driver_of(vf):
                    self.host.detach(vf)
                group = os.path.join(self._dev(vf), 'iommu_group')
                if os.path.lexists(group):
                    os.unlink(os.path.join(os.path.realpath(group), 'devices', vf))
                self.host.unplug(vf)
                os.unlink(os.path.join(pfdir, link))
            self._sriov_attr(pf, 'sriov_numvfs', '0')
            return
        vendor = self._ids(pf)[0]
        autoprobe = self._sriov_attr(pf, 'sriov_drivers_autoprobe') == '1'
        if not conf['no_vfs']:
            for i in range(want):
                vf = self.host.add_device(self.vf_address(pf, i), vendor, conf['vf_device'], physfn=pf)
                if autoprobe:
                    for driver in sorted(os.listdir(self.sys('bus/pci/drivers'))):
                        if self._matches(vf, driver):
                            self._probe(vf, driver)
                            break
        self._sriov_attr(pf, 'sriov_numvfs', str(want))


# Mixed in here rather than by inheritance, so this block stays apart from FakeKernel's own code.
FakeKernel.sriov_setup = FakeSriov.sriov_setup
FakeKernel.vf_address = staticmethod(FakeSriov.vf_address)
FakeKernel._sriov_attr = FakeSriov._sriov_attr
FakeKernel.write_sriov_numvfs = FakeSriov.write_sriov_numvfs

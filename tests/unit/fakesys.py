# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fake hosts for unit tests: the sysfs/procfs/modules tree of tools/fakehost.py (FakeHost, the
tool users run to try the collection without hardware), and a fake kernel that gives sysfs writes
their real semantics and records every write."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import io
import json
import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils import cli
from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed, run_bind
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import KernelError, KernelFS, WriteTimeout
from ansible_collections.hypervisor.vfio.tools.fakehost import FakeHost


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
MGMT = '0000:00:02.0'     # virtio-net eth0, the default route: the management NIC
VIRTIO = '0000:00:03.0'   # modern virtio-net: virtio_vfio_pci is its best VFIO variant
NIC = '0000:00:04.0'      # e1000e: only the generic vfio-pci matches it
TESTDEV = '0000:00:05.0'  # unbound, its override-only variant vfio_testdev


def vfio_host(root):
    """A FakeHost with vfio_pci, two VFIO variants, two host drivers and the three devices above."""
    h = FakeHost(root)
    h.add_modules('vfio_pci', 'virtio_vfio_pci', 'vfio_testdev', 'virtio_pci', 'e1000e')
    h.add_device(VIRTIO, '1af4', '1041', driver='virtio-pci')
    h.add_device(NIC, '8086', '10d3', driver='e1000e')
    h.add_device(TESTDEV, '1b36', '0005', cls='00ff00')
    return h


def add_mgmt(h):
    """The management NIC MGMT: virtio-net eth0, carrying the default route."""
    h.add_device(MGMT, '1af4', '1041', driver='virtio-pci', net=['eth0'])
    h.add_route('eth0')


def nic_host(root, *modules):
    """A FakeHost with the MODULES named, MGMT, VIRTIO (virtio-net eth1) and NIC (e1000e eth2)."""
    h = FakeHost(root)
    h.add_modules(*modules)
    add_mgmt(h)
    h.add_device(VIRTIO, '1af4', '1041', driver='virtio-pci', net=['eth1'])
    h.add_device(NIC, '8086', '10d3', driver='e1000e', net=['eth2'])
    return h


def bind_on(host, kernel, check_mode=False, **params):
    """vfio_bind's whole job (bind.run_bind) on a FakeHost through its FakeKernel."""
    p = host.params(**params)
    return run_bind(p, HostContext(p, fs=kernel), kernel.modprobe, check_mode=check_mode,
                    may_load_modules=True)


def refused(host, kernel, **params):
    """vfio_bind refused on a FakeHost: (its message, its result), and nothing was written."""
    with pytest.raises(BindFailed) as e:
        bind_on(host, kernel, **params)
    assert kernel.log == [], 'refused, yet something was written'
    return str(e.value), e.value.result


def write_state(host, devices=(), sriov=(), **kw):
    """The desired state file of vfio-passthrough (format 1, short bounds), at host.root/state.json."""
    doc = {'format': 1, 'devices': list(devices), 'sriov': list(sriov), 'timeout': 2, 'lock_timeout': 1}
    doc.update(kw)
    path = os.path.join(host.root, 'state.json')
    with open(path, 'w') as f:
        json.dump(doc, f)
    return path


def run_cli(host, kernel, *argv):
    """vfio-passthrough ``argv`` on a FakeHost through its FakeKernel: (exit code, output)."""
    out = io.StringIO()
    args = list(argv) + ['--state', os.path.join(host.root, 'state.json'), '--sysfs', host.sys,
                         '--procfs', host.proc, '--modules-dir', host.moddir, '--modprobe-config-dir', host.confdir,
                         '--lock-file', os.path.join(host.root, 'vfio.lock'),
                         '--journal-file', os.path.join(host.root, 'journal.json')]
    code = cli.main(args, stdout=out, fs=kernel, run=kernel.modprobe)
    return code, out.getvalue()


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

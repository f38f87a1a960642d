#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8, part 1: vfio_facts at scale on fake sysfs trees, against the floor and lspci.

For each size (default 64, 256, 1024, 4096 PCI devices) a fake host is built under a
temporary directory with tests/unit/fakesys.FakeHost plus the attributes a real device
directory has (config space, resource, irq, link speeds...).  The mix repeats a server-like
pattern: PCIe root ports (pcieport), Intel X710 PFs (i40e) with iavf VFs, ConnectX-6 Dx PFs
(mlx5_core) with VFs (mlx5_core / vfio-pci / unbound), NVMe drives with block devices, GPUs with
their HDMI audio function in one IOMMU group (half on nouveau + snd_hda_intel, half on
vfio-pci), virtio-net NICs, unbound devices and SMBus controllers.  The module files are those of
a genuine Debian kernel (modules.alias of ~27k lines, with vfio_pci: variant aliases).

Timed per size, interleaved round by round, medians reported:

  core     collect_facts(HostContext(params)) in-process (resolver build + scan + resolve)
  scan     collect_facts(host) with HostContext built beforehand (per-device part only)
  floor    a bare Python loop doing the same reads, readlinks and listdirs of sysfs/procfs
           (reads with os.open/os.read/os.close, no decoding or interpretation)
  floor+m  floor plus reading the module files the core parses (modules.alias, .dep, .builtin*)
  module   the whole module: python -m ...plugins.modules.vfio_facts <args.json> (new process,
           AnsibleModule, JSON on stdout)
  startup  python -c 'from ansible.module_utils.basic import AnsibleModule' (module-run floor)
  floor proc  python benchmarks/_floor.py: a bare process making the floor's reads, matching the
           vfio_pci: aliases (fnmatch, once per distinct modalias) and printing JSON
  bare     python -c pass (the floor process's fixed part)
  lspci    lspci -vmmk -A linux-sysfs -O sysfs.path=<tree>/sys/bus/pci (a new process too);
           with kernel-module lookup ("Module:" lines) against the same Debian modules when a
           private mount namespace can overlay /lib/modules/$(uname -r), else without it.

Nothing is written outside the temporary directory; the real /sys is never touched.
"""

from __future__ import absolute_import, division, print_function

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench as B  # noqa: E402
from _floor import floor  # noqa: E402

AC = B.import_collection()

from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext  # noqa: E402
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts  # noqa: E402
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost  # noqa: E402

# module -> driver name
MODULES = {'i40e': 'i40e', 'iavf': 'iavf', 'mlx5_core': 'mlx5_core', 'nvme': 'nvme', 'nouveau': 'nouveau',
           'snd_hda_intel': 'snd_hda_intel', 'virtio_pci': 'virtio-pci', 'i2c_i801': 'i801_smbus',
           'vfio_pci': 'vfio-pci'}

# The repeating pattern: (kind, devices it adds)
PATTERN = ('bridge', 'x710', 'bridge', 'cx6', 'bridge', 'nvme', 'nvme', 'gpu', 'bridge', 'virtio',
           'unbound', 'smbus')
SIZE = {'bridge': 1, 'x710': 5, 'cx6': 5, 'nvme': 1, 'gpu': 2, 'virtio': 1, 'unbound': 1, 'smbus': 1}


def config_space(vendor, device, cls, subvendor, subdevice, rev=1, bridge=False):
    """256 bytes of PCI config space (header type 0, or 1 for a bridge)."""
    c = bytearray(256)
    klass = int(cls, 16)
    struct.pack_into('<HHHHB', c, 0, int(vendor, 16), int(device, 16), 0x0406, 0x0010, rev)
    c[9], c[10], c[11] = klass & 0xff, (klass >> 8) & 0xff, (klass >> 16) & 0xff
    c[0x0e] = 1 if bridge else 0
    if not bridge:
        struct.pack_into('<HH', c, 0x2c, int(subvendor, 16), int(subdevice, 16))
        struct.pack_into('<I', c, 0x10, 0xfb000000)
    c[0x3c], c[0x3d] = 0x10, 1
    return bytes(c)


EXTRA_ATTRS = {
    'enable': '1', 'irq': '16', 'local_cpus': 'ff', 'local_cpulist': '0-7', 'msi_bus': '1',
    'd3cold_allowed': '1', 'broken_parity_status': '0', 'consistent_dma_mask_bits': '64',
    'dma_mask_bits': '64', 'current_link_speed': '16.0 GT/s PCIe', 'current_link_width': '8',
    'max_link_speed': '16.0 GT/s PCIe', 'max_link_width': '16', 'ari_enabled': '0',
    'power_state': 'D0', 'reset_method': 'flr bus', 'resource': '\n'.join(
        ['0x00000000fb000000 0x00000000fbffffff 0x0000000000140204'] + ['0x0000000000000000 0x0000000000000000 '
                                                                          '0x0000000000000000'] * 12),
}


def decorate(host, addr, vendor, device, cls, subvendor, subdevice, bridge=False):
    """The attributes a real device directory has besides those FakeHost writes."""
    d = host.dev_dir(addr)
    with open(os.path.join(d, 'config'), 'wb') as f:
        f.write(config_space(vendor, device, cls, subvendor, subdevice, bridge=bridge))
    attrs = dict(EXTRA_ATTRS, revision='0x01', uevent='PCI_CLASS=%s\nPCI_ID=%s:%s\nPCI_SLOT_NAME=%s\n' % (
        cls.upper(), vendor.upper(), device.upper(), addr))
    for k, v in attrs.items():
        with open(os.path.join(d, k), 'w') as f:
            f.write(v + '\n')
    for sub in ('power', 'msi_irqs'):
        os.mkdir(os.path.join(d, sub))
    with open(os.path.join(d, 'power', 'control'), 'w') as f:
        f.write('on\n')


class Tree:
    def __init__(self, root, n, modules_dir, release):
        self.n = n
        self.host = h = FakeHost(root, release=release, aliases=())
        for module, driver in MODULES.items():
            h.add_module(module, driver=driver, loaded=True, alias=False)
        for m in ('vfio', 'vfio_iommu_type1', 'vfio_pci_core'):
            os.makedirs(os.path.join(h.sys, 'module', m))
        os.makedirs(os.path.join(h.sys, 'module', 'vfio', 'parameters'))
        with open(os.path.join(h.sys, 'module', 'vfio', 'parameters', 'enable_unsafe_noiommu_mode'), 'w') as f:
            f.write('N\n')
        for i in range(4):
            os.makedirs(os.path.join(h.sys, 'class', 'iommu', 'dmar%d' % i))
        # the genuine module files replace FakeHost's stubs (copies: the tree is self-contained)
        src = os.path.join(modules_dir, release)
        dst = os.path.join(h.moddir, release)
        for name in os.listdir(src):
            if name.startswith('modules.') and not name.endswith('.bin'):
                shutil.copy(os.path.join(src, name), os.path.join(dst, name))
        self.slot = 0
        self.group = 0
        self.counts = {}
        self.vfio_dev = 0
        self.ifindex = 0
        self.disk = 0
        self._fill()

    # -- allocation ---------------------------------------------------------------------------
    def _next_slot(self):
        bus, dev = 1 + self.slot // 32, self.slot % 32
        self.slot += 1
        return '0000:%02x:%02x' % (bus, dev)

    def _group(self):
        self.group += 1
        return self.group - 1

    def _ifname(self):
        self.ifindex += 1
        return 'ens%d' % self.ifindex

    def _dev(self, addr, vendor, device, cls, driver, subvendor=None, subdevice='0000', group=None, **kw):
        subvendor = subvendor or vendor
        if group is None:
            group = self._group()
        self.host.add_device(addr, vendor, device, cls, subvendor=subvendor, subdevice=subdevice,
                             driver=driver, group=group, numa=int(addr[5:7], 16) % 2, **kw)
        decorate(self.host, addr, vendor, device, cls, subvendor, subdevice, bridge=cls.startswith('0604'))
        if driver == 'vfio-pci':
            os.makedirs(os.path.join(self.host.dev_dir(addr), 'vfio-dev', 'vfio%d' % self.vfio_dev))
            self.vfio_dev += 1
        key = (driver or 'unbound')
        self.counts[key] = self.counts.get(key, 0) + 1
        return addr

    # -- the pattern --------------------------------------------------------------------------
    def _fill(self):
        made = 0
        i = 0
        while made < self.n:
            kind = PATTERN[i % len(PATTERN)]
            i += 1
            if SIZE[kind] > self.n - made:
                kind = 'unbound'
            getattr(self, '_add_' + kind)(i)
            made += SIZE[kind]
        assert made == self.n, made

    def _add_bridge(self, i):
        self._dev(self._next_slot() + '.0', '8086', '2030', '060400', 'pcieport')

    def _add_pf(self, vendor, device, driver, subdevice, totalvfs, vf_device, vf_subdevice, vf_drivers, vf_host_driver):
        """An SR-IOV PF with its netdev and one VF per vf_drivers entry (those on vf_host_driver with a netdev)."""
        pf = self._dev(self._next_slot() + '.0', vendor, device, '020000', driver, subdevice=subdevice,
                       net=[self._ifname()], sriov_totalvfs=totalvfs)
        vslot = self._next_slot()
        for fn, drv in enumerate(vf_drivers):
            self._dev('%s.%d' % (vslot, fn), vendor, vf_device, '020000', drv, subdevice=vf_subdevice, physfn=pf,
                      net=[self._ifname()] if drv == vf_host_driver else ())

    def _add_x710(self, i):
        self._add_pf('8086', '1572', 'i40e', '0007', 64, '154c', '0000', ('iavf', 'iavf', 'vfio-pci', 'vfio-pci'), 'iavf')

    def _add_cx6(self, i):
        self._add_pf('15b3', '101d', 'mlx5_core', '0016', 8, '101e', '0016',
                     ('mlx5_core', 'mlx5_core', 'vfio-pci', None), 'mlx5_core')

    def _add_nvme(self, i):
        self.disk += 1
        self._dev(self._next_slot() + '.0', '144d', 'a80a', '010802', 'nvme', subdevice='a801',
                  block=['nvme%dn1' % self.disk])

    def _add_gpu(self, i):
        slot = self._next_slot()
        group = self._group()
        passthrough = (i // len(PATTERN)) % 2 == 1
        self._dev(slot + '.0', '10de', '2204', '030000', 'vfio-pci' if passthrough else 'nouveau',
                  subvendor='1458', subdevice='403b', group=group)
        self._dev(slot + '.1', '10de', '1aef', '040300', 'vfio-pci' if passthrough else 'snd_hda_intel',
                  subvendor='1458', subdevice='403b', group=group)

    def _add_virtio(self, i):
        self._dev(self._next_slot() + '.0', '1af4', '1041', '020000', 'virtio-pci', subdevice='1100',
                  net=[self._ifname()])

    def _add_unbound(self, i):
        self._dev(self._next_slot() + '.0', '8086', '09a2', '088000', None, subdevice='0000')

    def _add_smbus(self, i):
        self._dev(self._next_slot() + '.0', '8086', 'a123', '0c0500', 'i801_smbus', subdevice='7270')

    def params(self):
        p = self.host.params()
        return dict((k, p[k]) for k in ('sysfs_path', 'procfs_path', 'modules_dir', 'kernel_release',
                                        'modprobe_config_dirs'))


# -- the floor: benchmarks/_floor.py (standard library only: the floor process imports it too) ----
FLOOR_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '_floor.py')


# CPU time (user+sys) of the last process each kind ran: {name: [seconds...]}
PROC_CPU = {}


def _proc(name, argv, **kw):
    """subprocess.run(argv) timed: (wall seconds, completed process); its CPU time goes to PROC_CPU."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(argv, **kw)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    PROC_CPU.setdefault(name, []).append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    return dt, p


def run_floor_proc(sysfs, alias_file):
    return _proc('floor proc', [sys.executable, FLOOR_SCRIPT, sysfs, alias_file], stdout=subprocess.PIPE, check=True)


def run_bare():
    """A new interpreter doing nothing: the floor process's fixed part."""
    return _proc('bare', [sys.executable, '-c', 'pass'], check=True)[0]


# -- lspci -------------------------------------------------------------------------------------
# Runs commands on request and reports their wall time; started inside a private mount
# namespace when /lib/modules/$(uname -r) has to be overlaid for lspci's module lookup.
RUNNER = r'''
import json, subprocess, sys, time
for line in sys.stdin:
    argv = json.loads(line)
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    out = p.stdout.decode('utf-8', 'replace')
    sys.stdout.write(json.dumps({'t': dt, 'rc': p.returncode, 'slots': out.count('Slot:'),
                                 'modules': out.count('\nModule:'), 'drivers': out.count('\nDriver:'),
                                 'err': p.stderr.decode('utf-8', 'replace')[-300:]}) + '\n')
    sys.stdout.flush()
'''


class Lspci:
    def __init__(self, tmp, modules_dir, release):
        self.lspci = shutil.which('lspci') or '/usr/bin/lspci'
        self.mode = 'without module lookup (no /lib/modules/%s)' % os.uname()[2]
        running = os.path.join('/lib/modules', os.uname()[2])
        argv = [sys.executable, '-c', RUNNER]
        if os.path.isdir(running):
            self.mode = 'module lookup in the host\'s own /lib/modules/%s' % os.uname()[2]
        elif os.geteuid() == 0 and shutil.which('unshare') and os.path.isdir('/usr/lib'):
            up = os.path.join(tmp, 'ovl', 'up')
            work = os.path.join(tmp, 'ovl', 'work')
            os.makedirs(os.path.join(up, 'modules'))
            os.makedirs(work)
            os.symlink(os.path.join(modules_dir, release), os.path.join(up, 'modules', os.uname()[2]))
            script = ('mount --make-rprivate / && mount -t overlay overlay -o lowerdir=/usr/lib,upperdir=%s,'
                      'workdir=%s /usr/lib && exec "$0" -c "$1"' % (up, work))
            probe = subprocess.run(['unshare', '-m', 'sh', '-c', script, sys.executable,
                                    'import os,sys; sys.exit(not os.path.isdir(%r))' % running])
            if probe.returncode == 0:
                argv = ['unshare', '-m', 'sh', '-c', script, sys.executable, RUNNER]
                self.mode = ('module lookup against the same Debian modules (%s overlaid on '
                             '/lib/modules/%s in a private mount namespace)' % (release, os.uname()[2]))
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)

    def run(self, sysfs):
        argv = [self.lspci, '-vmmk', '-A', 'linux-sysfs', '-O', 'sysfs.path=%s/bus/pci' % sysfs]
        self.proc.stdin.write(json.dumps(argv) + '\n')
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


# -- one size ----------------------------------------------------------------------------------
def module_files(params, release):
    base = os.path.join(params['modules_dir'], release)
    return [os.path.join(base, n) for n in ('modules.alias', 'modules.builtin.modinfo', 'modules.dep',
                                             'modules.builtin')]


def run_module(params, argsfile):
    env = dict(os.environ, PYTHONPATH=AC, ANSIBLE_LOCAL_TEMP=os.path.dirname(argsfile))
    return _proc('module', [sys.executable, '-m', 'ansible_collections.hypervisor.vfio.plugins.modules.vfio_facts',
                            argsfile], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=AC)


def run_startup():
    """A new interpreter importing AnsibleModule: the part of a module run no code change removes."""
    return _proc('startup', [sys.executable, '-c', 'from ansible.module_utils.basic import AnsibleModule'],
                 check=True)[0]


def bench_size(n, tmp, modules_dir, release, repeats, lspci, with_module=True):
    root = os.path.join(tmp, 'host-%d' % n)
    t0 = time.perf_counter()
    tree = Tree(root, n, modules_dir, release)
    build = time.perf_counter() - t0
    params = tree.params()
    files = module_files(params, release)
    sysfs, procfs = params['sysfs_path'], params['procfs_path']

    # sanity: every case sees every device
    facts = collect_facts(HostContext(params))
    assert len(facts['devices']) == n, len(facts['devices'])
    assert len(floor(sysfs, procfs)[0]) == n
    vfio_resolved = sum(1 for d in facts['devices'].values() if d['vfio_module'] not in (None, 'vfio_pci'))
    argsfile = os.path.join(root, 'args.json')
    with open(argsfile, 'w') as f:
        json.dump({'ANSIBLE_MODULE_ARGS': params}, f)
    if with_module:
        dt, p = run_module(params, argsfile)
        out = json.loads(p.stdout.decode('utf-8'))
        assert len(out['ansible_facts']['vfio']['devices']) == n, p.stderr[-2000:]
        module_json_bytes = len(p.stdout)
        dt, fp = run_floor_proc(sysfs, files[0])
        fout = json.loads(fp.stdout.decode('utf-8'))
        assert len(fout['devices']) == n
        mine = dict((a, d['vfio_module']) for a, d in out['ansible_facts']['vfio']['devices'].items())
        assert mine == dict((a, d['vfio_module']) for a, d in fout['devices'].items()), 'floor and facts disagree'
    r = lspci.run(sysfs)
    assert r['slots'] == n and r['rc'] == 0, r
    lspci_modules = r['modules']

    cpu = {'core': [], 'scan': [], 'floor': []}   # CPU time (user+sys) of the same runs

    def timed(work, cpu_of=None, prepare=lambda: None):
        """A case: the wall time of work(prepare()) (prepare is not timed); its CPU time goes to cpu[cpu_of]."""
        def case():
            arg = prepare()
            c, t = time.process_time(), time.perf_counter()
            work(arg)
            t, c = time.perf_counter() - t, time.process_time() - c
            if cpu_of:
                cpu[cpu_of].append(c)
            return t
        return case

    core = timed(lambda dummy: collect_facts(HostContext(params)), 'core')
    scan = timed(collect_facts, 'scan', prepare=lambda: HostContext(params))
    ctx = timed(lambda dummy: HostContext(params))
    flr = timed(lambda dummy: floor(sysfs, procfs), 'floor')
    flrm = timed(lambda dummy: floor(sysfs, procfs, files))

    cases = [('core', core), ('scan', scan), ('context', ctx), ('floor', flr), ('floor+m', flrm),
             ('lspci', lambda: lspci.run(sysfs)['t'])]
    if with_module:
        cases.append(('module', lambda: run_module(params, argsfile)[0]))
        cases.append(('startup', run_startup))
        cases.append(('floor proc', lambda: run_floor_proc(sysfs, files[0])[0]))
        cases.append(('bare', run_bare))
    PROC_CPU.clear()
    times = B.interleaved(cases, repeats)
    for k, v in PROC_CPU.items():   # the processes of the timed rounds only (the warm-up round dropped)
        times[k + ' cpu'] = v[len(v) - repeats:]
    for k, v in cpu.items():   # drop the warm-up round, as interleaved() does
        times[k + ' cpu'] = v[len(v) - repeats:]
    info = {'n': n, 'build_s': build, 'groups': facts['iommu']['group_count'], 'drivers': tree.counts,
            'variant_resolved': vfio_resolved, 'lspci_module_lines': lspci_modules,
            'module_json_bytes': module_json_bytes if with_module else None}
    shutil.rmtree(root)
    return times, info


def profile_core(n, tmp, modules_dir, release, top=25):
    root = os.path.join(tmp, 'prof-%d' % n)
    tree = Tree(root, n, modules_dir, release)
    params = tree.params()
    collect_facts(HostContext(params))
    pr = cProfile.Profile()
    pr.enable()
    for _ in range(3):
        collect_facts(HostContext(params))
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats('tottime').print_stats(top)
    shutil.rmtree(root)
    return s.getvalue()


def process_ratios(t, kind=''):
    """Of the wall ('') or CPU (' cpu') times t: (module - startup) / (floor proc - bare), and
    module / floor proc, as ratios of medians."""
    def times(name):
        return t[name + kind]
    net = B.ratio_median([m - s for m, s in zip(times('module'), times('startup'))],
                         [f - b for f, b in zip(times('floor proc'), times('bare'))])
    return net, B.ratio_median(times('module'), times('floor proc'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='64,256,1024,4096')
    ap.add_argument('--repeats', type=int, default=7)
    ap.add_argument('--no-module', action='store_true', help='skip the whole-module runs')
    ap.add_argument('--tmpdir', default='/dev/shm' if os.access('/dev/shm', os.W_OK) else None,
                    help='where the fake trees go (default /dev/shm: memory-backed like sysfs)')
    ap.add_argument('--profile', type=int, metavar='N', help='also print a cProfile of the core at N devices')
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]

    modules_dir, release, origin = B.find_module_tree()
    with open(os.path.join(modules_dir, release, 'modules.alias')) as f:
        alias_lines = sum(1 for line in f if line.startswith('alias '))
    tmp = tempfile.mkdtemp(prefix='vfio-bench-facts-', dir=args.tmpdir)
    lspci = Lspci(tmp, modules_dir, release)
    try:
        print('## facts_scale: %s' % ' '.join(sys.argv))
        print()
        print(B.table(['machine', 'value'], B.machine_facts(tmp) + [
            ('modules.alias', '%s: %d alias lines, kernel %s' % (origin, alias_lines, release)),
            ('lspci', '%s, %s' % (subprocess.run(['lspci', '--version'], stdout=subprocess.PIPE,
                                                  universal_newlines=True).stdout.strip(), lspci.mode)),
            ('repeats', '%d interleaved rounds per size after 1 warm-up round; medians' % args.repeats)]))
        print()
        results = []
        for n in sizes:
            B.log('size %d: building the tree, then %d rounds' % (n, args.repeats))
            times, info = bench_size(n, tmp, modules_dir, release, args.repeats, lspci,
                                     with_module=not args.no_module)
            results.append((n, times, info))
            B.log('size %d done: core %s ms, floor %s ms' % (n, B.fmt_ms(B.median(times['core'])),
                                                             B.fmt_ms(B.median(times['floor']))))
        names = ['core', 'scan', 'context', 'floor', 'floor+m', 'lspci'] + (
            [] if args.no_module else ['module', 'startup', 'floor proc', 'bare'])
        print('### Median wall time (ms)')
        print()
        print(B.table(['devices'] + names,
                      [[n] + [B.fmt_ms(B.median(t[k])) for k in names] for n, t, _ in results]))
        print()
        print('### Ratios (median of per-round ratios, same rounds)')
        print()
        hdr = ['devices', 'core/floor', 'core/floor (cpu)', 'core/floor+m', 'scan/floor', 'core/lspci']
        if not args.no_module:
            hdr.append('module/lspci')
        rows = []
        for n, t, _ in results:
            row = [n, '%.2f' % B.ratio_median(t['core'], t['floor']),
                   '%.2f' % B.ratio_median(t['core cpu'], t['floor cpu']),
                   '%.2f' % B.ratio_median(t['core'], t['floor+m']),
                   '%.2f' % B.ratio_median(t['scan'], t['floor']),
                   '%.2f' % B.ratio_median(t['core'], t['lspci'])]
            if not args.no_module:
                row.append('%.2f' % B.ratio_median(t['module'], t['lspci']))
            rows.append(row)
        print(B.table(hdr, rows))
        print()
        print('### Growth: CPU time (user+sys) of the in-process cases, per device and per 4x step')
        print()
        print('CPU time, not wall time: it does not count the time the neighbours hold the CPUs.')
        print()
        rows = []
        prev = None
        gk = ('core cpu', 'scan cpu', 'floor cpu')
        for n, t, _ in results:
            med = dict((k, B.median(t[k])) for k in gk + ('lspci',))
            row = [n] + ['%.1f' % (med[k] * 1e3) for k in gk] + ['%.1f' % (med[k] / n * 1e6) for k in gk]
            if prev:
                pn, pmed = prev
                row += ['%.2f (x%d)' % (med[k] / pmed[k], n // pn) for k in gk + ('lspci',)]
            else:
                row += ['-'] * 4
            rows.append(row)
            prev = (n, med)
        print(B.table(['devices', 'core cpu ms', 'scan cpu ms', 'floor cpu ms', 'core us/dev', 'scan us/dev',
                       'floor us/dev', 'core step', 'scan step', 'floor step', 'lspci step (wall)'], rows))
        print()
        print('### Trees')
        print()
        print(B.table(['devices', 'IOMMU groups', 'resolved to a variant', 'lspci Module: lines', 'module JSON bytes',
                       'tree build s', 'drivers'],
                      [[n, i['groups'], i['variant_resolved'], i['lspci_module_lines'], i['module_json_bytes'],
                        '%.1f' % i['build_s'],
                        ', '.join('%s %d' % kv for kv in sorted(i['drivers'].items()))] for n, _, i in results]))
        print()
        by_n = dict((n, t) for n, t, _ in results)
        if 1024 in by_n:
            t = by_n[1024]
            r_floor = B.ratio_median(t['core'], t['floor'])
            r_lspci = B.ratio_median(t['core'], t['lspci'])
            print('### Goals at 1,024 devices')
            print()
            print('- core within 1.5x of the floor: %s (core/floor = %.2f; CPU time: %.2f; core/floor+module-files = %.2f)'
                  % ('MET' if r_floor <= 1.5 else 'MISSED', r_floor, B.ratio_median(t['core cpu'], t['floor cpu']),
                     B.ratio_median(t['core'], t['floor+m'])))
            print('- core faster than lspci: %s (core/lspci = %.2f)' % ('MET' if r_lspci < 1 else 'MISSED', r_lspci))
            if not args.no_module:
                net, whole = process_ratios(t)
                print('- module process minus startup within 1.5x of the floor process minus a bare interpreter: %s '
                      '((module - startup) / (floor proc - bare) = %.2f)' % ('MET' if net <= 1.5 else 'MISSED', net))
                print('- whole module process within 2x of the whole floor process: %s (module / floor proc = %.2f)'
                      % ('MET' if whole <= 2 else 'MISSED', whole))
                net_c, whole_c = process_ratios(t, ' cpu')
                print('- the same in CPU time (user+sys of each process): net %.2f, whole %.2f (module %.0f ms, '
                      'startup %.0f, floor proc %.0f, bare %.0f)' % (
                          net_c, whole_c, 1e3 * B.median(t['module cpu']), 1e3 * B.median(t['startup cpu']),
                          1e3 * B.median(t['floor proc cpu']), 1e3 * B.median(t['bare cpu'])))
                print('- whole module faster than lspci: %s (module/lspci = %.2f)'
                      % ('yes' if B.ratio_median(t['module'], t['lspci']) < 1 else 'no',
                         B.ratio_median(t['module'], t['lspci'])))
        if len(results) >= 2:
            worst = max(B.median(results[i + 1][1]['scan cpu']) / B.median(results[i][1]['scan cpu'])
                        / (results[i + 1][0] / results[i][0]) for i in range(len(results) - 1))
            print('- linear growth of the per-device part (scan, CPU time): %s (worst step = %.2fx the device ratio)'
                  % ('MET' if worst <= 1.25 else 'MISSED', worst))
        print()
        if args.profile:
            print('### cProfile of the core at %d devices (3 runs, sorted by own time)' % args.profile)
            print()
            print('```')
            print(profile_core(args.profile, tmp, modules_dir, release).strip())
            print('```')
    finally:
        lspci.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()

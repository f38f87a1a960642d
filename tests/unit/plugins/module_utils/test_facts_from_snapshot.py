# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_bind's return_facts on a call that wrote nothing: the facts made from the plan's reading of
the host (snapshot.read_snapshot) are those of a new scan (facts.collect_facts), byte for byte, on
hosts in several states; and such a call scans the devices once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed
from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI
from ansible_collections.hypervisor.vfio.plugins.module_utils.snapshot import read_snapshot
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import (
    NIC, TESTDEV, VIRTIO, FakeHost, FakeKernel, add_mgmt, bind_on, vfio_host)
from ansible_collections.hypervisor.vfio.tools import fakehost

OTHER_RELEASE = '6.1.0-28-amd64'


def generated(state, **kinds):
    def build(root):
        g = fakehost.Generator(root)
        for kind, count in sorted(kinds.items()):
            for dummy in range(count):
                g.sriov_pf(3) if kind == 'sriov_pf' else getattr(g, kind)()
        if state == 'vfio':
            g.to_vfio()
        return g.host
    return build


def variants_partly_bound(root):
    """vfio_pci and the variants: the variant's device bound with its override, the NIC on
    vfio-pci without one, the testdev unbound; a management NIC; an older kernel without the
    VFIO modules (a kernel warning) and the Intel IOMMU on the command line."""
    h = vfio_host(root)
    add_mgmt(h)
    k = FakeKernel(h)
    bind_on(h, k, devices=[VIRTIO, NIC])
    h.write('sys/bus/pci/devices/%s/driver_override' % NIC, '(null)\n')
    h.write('boot/vmlinuz-' + OTHER_RELEASE, '')
    h.write(os.path.relpath(os.path.join(h.moddir, OTHER_RELEASE, 'modules.dep'), h.root),
            'kernel/drivers/net/e1000e.ko:\n')
    h.write(os.path.relpath(os.path.join(h.proc, 'cmdline'), h.root),
            'BOOT_IMAGE=/boot/vmlinuz root=/dev/vda ro intel_iommu=on iommu=pt\n')
    return h


def no_iommu_group(root):
    """The IOMMU off (no group), vfio's unsafe no-IOMMU mode on, one device on vfio-pci."""
    h = FakeHost(root)
    h.add_module('vfio_pci', driver='vfio-pci', loaded=True)
    h.add_module('vfio', loaded=True)
    h.add_module('e1000e', ids=[('8086', '10d3')], loaded=True)
    h.add_device(NIC, '8086', '10d3', driver='vfio-pci', group=None)
    h.add_device(TESTDEV, '1b36', '0005', cls='00ff00', group=None)
    h.write('sys/module/vfio/parameters/enable_unsafe_noiommu_mode', 'Y\n')
    return h


def held_by_a_vm(root):
    """A device on vfio-pci whose group file a VM holds, beside one on its host driver in the same
    IOMMU group (the group not viable)."""
    h = FakeHost(root)
    h.add_modules('vfio_pci', 'e1000e')
    h.load('vfio_pci')
    h.add_device(NIC, '8086', '10d3', driver='vfio-pci', group=7)
    h.add_device(TESTDEV, '8086', '10d3', driver='e1000e', group=7, net=['eth3'])
    h.hold_vfio(4242, 7)
    return h


HOSTS = {
    'host drivers, GPU, NVMe, SR-IOV VFs, variant': generated('host', nic=2, gpu=1, nvme=1, sriov_pf=1, virtio=2),
    'all bound': generated('vfio', nic=3, gpu=1, virtio=2),
    'all bound, SR-IOV VFs': generated('vfio', nic=1, sriov_pf=1, virtio=1),
    'variants, partly bound, other kernel': variants_partly_bound,
    'no IOMMU group, no-IOMMU mode': no_iommu_group,
    'group held by a VM': held_by_a_vm,
}


@pytest.mark.parametrize('name', sorted(HOSTS))
def test_facts_from_the_snapshot_are_those_of_a_scan(tmp_path, name):
    h = HOSTS[name](str(tmp_path / 'h'))
    p = h.params()
    scanned = collect_facts(HostContext(p))
    host = HostContext(p)
    from_snapshot = collect_facts(host, PCI, snapshot=read_snapshot(host, PCI))
    assert json.dumps(from_snapshot) == json.dumps(scanned)
    assert from_snapshot == scanned
    assert scanned['devices'] and scanned['kernels']


def test_facts_from_the_snapshot_cover_what_they_report(tmp_path):
    """The cases above differ where the facts look: a guard against a comparison of two empty
    or identical-by-accident hosts."""
    seen = {}
    for name in sorted(HOSTS):
        h = HOSTS[name](str(tmp_path / str(len(seen))))
        f = collect_facts(HostContext(h.params()))
        seen[name] = f
    assert seen['all bound']['devices'] and all(
        d['vfio_bound'] for a, d in seen['all bound']['devices'].items() if d['vfio_module'] and d['driver'])
    assert any(d['virtfns'] for d in seen['host drivers, GPU, NVMe, SR-IOV VFs, variant']['devices'].values())
    partly = seen['variants, partly bound, other kernel']
    assert partly['devices'][VIRTIO]['driver'] == 'virtio_vfio_pci' and partly['devices'][TESTDEV]['driver'] is None
    assert partly['devices'][NIC]['vfio_bound'] and partly['devices'][NIC]['driver_override'] is None
    assert any('has no module' in w for w in partly['warnings'])
    assert partly['iommu']['cmdline_flags']['intel_iommu'] == 'on'
    noiommu = seen['no IOMMU group, no-IOMMU mode']
    assert noiommu['iommu']['noiommu_mode'] is True and noiommu['iommu']['enabled'] is False
    assert noiommu['devices'][NIC]['iommu_group'] is None
    assert seen['group held by a VM']['iommu_groups']['7']['blockers'] == [TESTDEV]


def count_scans(monkeypatch):
    calls = []
    scan = devs.scan

    def counted(*args, **kw):
        calls.append(args[2] if len(args) > 2 else kw.get('addresses'))
        return scan(*args, **kw)
    monkeypatch.setattr(devs, 'scan', counted)
    return calls


def test_a_call_that_writes_nothing_scans_once_and_returns_the_facts_of_a_scan(tmp_path, monkeypatch):
    h = variants_partly_bound(str(tmp_path / 'h'))
    k = FakeKernel(h)
    bind_on(h, k, devices=[VIRTIO, NIC, TESTDEV])
    k.log[:] = []
    calls = count_scans(monkeypatch)
    # the re-run: nothing written, one scan (the plan's), the facts equal to a scan made after it
    r = bind_on(h, k, devices=[VIRTIO, NIC, TESTDEV], return_facts=True)
    assert not r['changed'] and k.log == [] and calls == [None]
    assert r['ansible_facts']['vfio'] == collect_facts(HostContext(h.params(), fs=k))
    # check mode that would change a device: nothing written, one scan, the host as it is
    del calls[:]
    r = bind_on(h, k, check_mode=True, devices=[{'address': NIC, 'state': 'host'}], return_facts=True)
    assert r['changed'] and k.log == [] and calls == [None]
    assert r['ansible_facts']['vfio']['devices'][NIC]['driver'] == 'vfio-pci'
    assert r['ansible_facts']['vfio'] == collect_facts(HostContext(h.params(), fs=k))
    # a refusal: nothing written, one scan, the facts still returned
    del calls[:]
    with pytest.raises(BindFailed) as e:
        bind_on(h, k, devices=['0000:00:1f.0'], return_facts=True)
    assert k.log == [] and calls == [None]
    assert e.value.result['ansible_facts']['vfio'] == collect_facts(HostContext(h.params(), fs=k))


def test_a_call_that_writes_scans_again_after_the_writes(tmp_path, monkeypatch):
    h = variants_partly_bound(str(tmp_path / 'h'))
    k = FakeKernel(h)
    calls = count_scans(monkeypatch)
    r = bind_on(h, k, devices=[{'address': NIC, 'state': 'host'}], return_facts=True)
    assert r['changed'] and k.log and calls == [None, None]
    assert r['ansible_facts']['vfio']['devices'][NIC]['driver'] == 'e1000e'
    assert r['ansible_facts']['vfio'] == collect_facts(HostContext(h.params(), fs=k))


def count_module_file_reads(monkeypatch):
    """The modules.dep files read, through either reader of the module core (aliases' and
    bootloader's)."""
    from ansible_collections.hypervisor.vfio.plugins.module_utils import aliases
    from ansible_collections.hypervisor.vfio.plugins.module_utils import bootloader
    reads = []

    def counting(real):
        def counted(path, *args, **kw):
            if os.path.basename(path) == 'modules.dep':
                reads.append(os.path.basename(os.path.dirname(path)))
            return real(path, *args, **kw)
        return counted
    for mod in (aliases, bootloader):
        monkeypatch.setattr(mod, '_read_text', counting(mod._read_text))
    return reads


def test_one_call_reads_each_modules_dep_once(tmp_path, monkeypatch):
    """The running kernel's modules.dep is parsed once per call: the plan's resolver tree answers the
    facts' kernel check too (it was read twice, ~630 KB on a distribution kernel); another installed
    kernel's once, for its check.  Same facts as a separate scan."""
    h = variants_partly_bound(str(tmp_path / 'h'))
    k = FakeKernel(h)
    bind_on(h, k, devices=[VIRTIO, NIC, TESTDEV])
    reads = count_module_file_reads(monkeypatch)
    r = bind_on(h, k, devices=[VIRTIO, NIC, TESTDEV], return_facts=True)     # the re-run, nothing written
    assert not r['changed'] and sorted(reads) == sorted([h.release, OTHER_RELEASE])
    by_rel = dict((kr['release'], kr) for kr in r['ansible_facts']['vfio']['kernels'])
    assert by_rel[h.release]['running'] and by_rel[h.release]['missing_vfio_modules'] == []
    assert by_rel[OTHER_RELEASE]['missing_vfio_modules'] == ['vfio_pci', 'vfio_testdev', 'virtio_vfio_pci']
    del reads[:]
    r = bind_on(h, k, devices=[{'address': NIC, 'state': 'host'}], return_facts=True)   # a call that writes
    assert r['changed'] and sorted(reads) == sorted([h.release, OTHER_RELEASE])
    del reads[:]
    facts = collect_facts(HostContext(h.params(), fs=k))     # vfio_facts: no plan, the check alone reads it
    assert sorted(reads) == sorted([h.release, OTHER_RELEASE])
    assert facts == r['ansible_facts']['vfio']


def test_world_writable_modules_dep_refused_for_the_running_kernel_only(tmp_path):
    """The running kernel's modules.dep is the resolver's (which refuses a world-writable one, as its
    modules.alias); another installed kernel's decides no driver now and is read as it is."""
    from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import UntrustedFile
    h = variants_partly_bound(str(tmp_path / 'h'))
    os.chmod(os.path.join(h.moddir, OTHER_RELEASE, 'modules.dep'), 0o666)
    by_rel = dict((k['release'], k) for k in collect_facts(HostContext(h.params()))['kernels'])
    assert by_rel[OTHER_RELEASE]['missing_vfio_modules'] == ['vfio_pci', 'virtio_vfio_pci']
    os.chmod(os.path.join(h.moddir, h.release, 'modules.dep'), 0o666)
    with pytest.raises(UntrustedFile, match='modules.dep'):
        collect_facts(HostContext(h.params()))

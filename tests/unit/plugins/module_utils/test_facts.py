# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_facts' core on fake sysfs trees."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.common import HostContext
from ansible_collections.hypervisor.vfio.plugins.module_utils.facts import collect_facts, parse_selection
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, FakeKernel


def facts(host):
    p = host.params()
    return collect_facts(HostContext(p, fs=FakeKernel(host)))


def test_device_record(tmp_path):
    h = FakeHost(tmp_path)
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True)
    h.add_module('virtio_pci', driver='virtio-pci', ids=[('1af4', '1041')], loaded=True)
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio-pci', net=['enp0s3'], numa=1)
    f = facts(h)
    d = f['devices']['0000:00:03.0']
    assert (d['vendor'], d['device'], d['class'], d['subsystem_vendor']) == ('1af4', '1041', '020000', '1af4')
    assert d['modalias'] == 'pci:v00001AF4d00001041sv00001AF4sd00000000bc02sc00i00'
    assert d['driver'] == 'virtio-pci' and d['driver_module'] == 'virtio_pci'
    assert d['driver_override'] is None
    assert d['iommu_group'] == 0 and d['numa_node'] == 1
    assert d['net_interfaces'] == ['enp0s3']
    assert d['vfio_module'] == 'virtio_vfio_pci' and not d['vfio_ambiguous'] and not d['vfio_bound']
    assert [(c['module'], c['wildcards'], c['source']) for c in d['vfio_candidates']] == [
        ('virtio_vfio_pci', 5, 'modules.alias'), ('vfio_pci', 7, 'modules.alias')]
    assert f['kernel_release'] == h.release
    assert f['iommu']['enabled'] and f['iommu']['group_count'] == 1
    assert f['iommu']['cmdline_flags']['intel_iommu'] == 'on'
    assert f['iommu']['cmdline_flags']['iommu'] == 'pt'
    assert f['iommu']['cmdline_flags']['vfio-pci.ids'] is None
    assert f['iommu_groups'] == {'0': {'devices': ['0000:00:03.0'], 'viable': False, 'blockers': ['0000:00:03.0']}}


def test_missing_attributes_are_null(tmp_path):
    h = FakeHost(tmp_path)
    h.add_device('0000:00:07.0', modalias_attr=False, group=None)
    os.unlink(os.path.join(h.dev_dir('0000:00:07.0'), 'numa_node'))
    os.unlink(os.path.join(h.dev_dir('0000:00:07.0'), 'driver_override'))
    f = facts(h)
    d = f['devices']['0000:00:07.0']
    assert d['modalias'] is None and d['numa_node'] is None and d['driver_override'] is None
    assert d['iommu_group'] is None and d['vfio_module'] is None and d['vfio_candidates'] == []
    assert d['sriov_totalvfs'] is None and d['physfn'] is None
    assert not f['iommu']['enabled']


def test_ids_from_modalias_equal_the_id_attributes(tmp_path):
    # The IDs come from modalias when it is there (one read instead of six) and from the
    # attributes otherwise; both give the same record. A malformed modalias falls back too.
    h = FakeHost(tmp_path)
    h.add_device('0000:00:05.0', '10de', '2342', cls='030200', subvendor='10DE', subdevice='16eb')
    h.add_device('0000:00:06.0', '10de', '2342', cls='030200', subvendor='10DE', subdevice='16eb',
                 modalias_attr=False)
    h.add_device('0000:00:08.0', '10de', '2342', cls='030200', subvendor='10DE', subdevice='16eb')
    with open(os.path.join(h.dev_dir('0000:00:08.0'), 'modalias'), 'w') as f:
        f.write('pci:v000010DEd00002342garbage\n')
    devs = facts(h)['devices']
    keys = ('vendor', 'device', 'subsystem_vendor', 'subsystem_device', 'class', 'is_bridge')
    want = ('10de', '2342', '10de', '16eb', '030200', False)
    for addr in ('0000:00:05.0', '0000:00:06.0', '0000:00:08.0'):
        assert tuple(devs[addr][k] for k in keys) == want, addr


def test_sriov_vfs_and_viability(tmp_path):
    h = FakeHost(tmp_path)
    h.add_module('vfio_pci', driver='vfio-pci', loaded=True)
    h.add_device('0000:3b:00.0', '8086', '1592', driver='ice', sriov_totalvfs=8, group=5)
    h.add_device('0000:3b:01.0', '8086', '1889', physfn='0000:3b:00.0', driver='vfio-pci', override='vfio-pci', group=6)
    h.add_device('0000:3b:01.1', '8086', '1889', physfn='0000:3b:00.0', group=6)
    h.add_device('0000:00:1c.0', '8086', '2448', cls='060400', driver='pcieport', group=6)
    f = facts(h)
    pf = f['devices']['0000:3b:00.0']
    assert pf['sriov_totalvfs'] == 8 and pf['sriov_numvfs'] == 0 and pf['sriov_drivers_autoprobe'] is True
    assert pf['virtfns'] == ['0000:3b:01.0', '0000:3b:01.1']
    vf = f['devices']['0000:3b:01.0']
    assert vf['physfn'] == '0000:3b:00.0' and vf['vfio_bound'] and vf['driver_override'] == 'vfio-pci'
    assert f['iommu_groups']['6'] == {'devices': ['0000:00:1c.0', '0000:3b:01.0', '0000:3b:01.1'],
                                      'viable': True, 'blockers': []}
    assert f['iommu_groups']['5'] == {'devices': ['0000:3b:00.0'], 'viable': False, 'blockers': ['0000:3b:00.0']}


def test_ambiguous_tie_and_config_alias(tmp_path):
    h = FakeHost(tmp_path, aliases=[
        'alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci',
        'alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci',
        'alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* other_vfio_pci'])
    h.add_device('0000:5e:00.1', '15b3', '101e')
    d = facts(h)['devices']['0000:5e:00.1']
    assert d['vfio_module'] == 'mlx5_vfio_pci' and d['vfio_ambiguous']
    with open(os.path.join(h.confdir, 'local.conf'), 'w') as f:
        f.write('alias vfio_pci:v000015B3d* vfio_pci\n')
    d = facts(h)['devices']['0000:5e:00.1']
    assert d['vfio_module'] == 'vfio_pci' and not d['vfio_ambiguous']
    assert d['vfio_candidates'][0]['source'] == 'modprobe.d'


def test_builtin_vfio_pci_from_modinfo(tmp_path):
    h = FakeHost(tmp_path, aliases=[])
    with open(os.path.join(h.moddir, h.release, 'modules.builtin.modinfo'), 'wb') as f:
        f.write(b'vfio_pci.alias=vfio_pci:v*d*sv*sd*bc*sc*i*\0vfio_pci.license=GPL\0')
    h.add_device('0000:00:04.0')
    d = facts(h)['devices']['0000:00:04.0']
    assert d['vfio_module'] == 'vfio_pci'
    assert d['vfio_candidates'][0]['source'] == 'modules.builtin.modinfo'


def test_missing_modules_alias_warns(tmp_path):
    h = FakeHost(tmp_path)
    os.unlink(os.path.join(h.moddir, h.release, 'modules.alias'))
    h.add_device('0000:00:04.0')
    f = facts(h)
    assert f['devices']['0000:00:04.0']['vfio_module'] is None
    assert 'has no modules.alias' in f['warnings'][0]


# -- the devices option: a selection -------------------------------------------------------------

def selection_host(tmp_path):
    """A virtio NIC, a GPU on vfio-pci whose audio function (same IOMMU group) is on
    snd_hda_intel, an SR-IOV PF with two VFs (one on vfio-pci), a device without modalias, a
    root port."""
    h = FakeHost(tmp_path)
    h.add_module('vfio_pci', driver='vfio-pci', loaded=True)
    h.add_module('virtio_vfio_pci', ids=[('1af4', '1041')], override_only=True)
    h.add_module('virtio_pci', driver='virtio-pci', ids=[('1af4', '1041')], loaded=True)
    h.add_module('snd_hda_intel', ids=[('10de', '10f0')], loaded=True)
    h.add_module('i40e', ids=[('8086', '1572')], loaded=True)
    h.add_module('iavf', ids=[('8086', '154c')], loaded=True)
    h.add_module('pcieport', loaded=True)
    h.add_device('0000:00:01.0', '8086', '2030', '060400', driver='pcieport')
    h.add_device('0000:00:03.0', '1af4', '1041', driver='virtio-pci', net=['enp0s3'])
    h.add_device('0000:01:00.0', '10de', '1b80', '030000', driver='vfio-pci', group=7)
    os.makedirs(os.path.join(h.dev_dir('0000:01:00.0'), 'vfio-dev', 'vfio0'))
    h.add_device('0000:01:00.1', '10de', '10f0', '040300', driver='snd_hda_intel', group=7)
    h.add_device('0000:02:00.0', '8086', '1572', '020000', driver='i40e', net=['enp2s0'], sriov_totalvfs=8)
    h.add_device('0000:02:02.0', '8086', '154c', '020000', driver='iavf', physfn='0000:02:00.0', net=['enp2s2'])
    h.add_device('0000:02:02.1', '8086', '154c', '020000', driver='vfio-pci', physfn='0000:02:00.0')
    h.add_device('0000:03:00.0', '8086', '09a2', '088000', modalias_attr=False)
    return h


def facts_of(h, raw=None):
    return collect_facts(HostContext(h.params()), items=None if raw is None else parse_selection(raw))


@pytest.mark.parametrize('raw, want', [
    (['0000:00:03.0', '02:02.1'], ['0000:00:03.0', '0000:02:02.1']),
    ([{'vendor': '8086', 'device': '154c'}], ['0000:02:02.0', '0000:02:02.1']),
    ([{'class': '0200', 'current_driver': 'vfio-pci'}], ['0000:02:02.1']),
    ([{'physfn': '0000:02:00.0'}], ['0000:02:02.0', '0000:02:02.1']),
    ([{'iommu_group': 7}], ['0000:01:00.0', '0000:01:00.1']),
    ([{'vendor': '8086', 'class': '0880'}], ['0000:03:00.0']),     # IDs from the attributes (no modalias)
    ([{'class': '06'}, '0000:01:00.0'], ['0000:00:01.0', '0000:01:00.0']),
])
def test_a_selection_reports_what_the_whole_host_run_reports_for_those_devices(tmp_path, raw, want):
    """vfio_bind's selector rule; each selected record, and each group holding one, is the one the
    whole-host run returns; iommu still describes the whole host."""
    h = selection_host(tmp_path)
    full = facts_of(h)
    sel = facts_of(h, raw)
    assert sorted(sel['devices']) == want
    assert sel['devices'] == dict((a, full['devices'][a]) for a in want)
    groups = set(str(full['devices'][a]['iommu_group']) for a in want)
    assert sel['iommu_groups'] == dict((g, full['iommu_groups'][g]) for g in groups)
    assert sel['iommu'] == full['iommu'] and sel['boot'] == full['boot']
    assert sel['iommu']['group_count'] == len(full['iommu_groups']) > len(sel['iommu_groups'])


def test_a_selected_device_s_group_is_judged_on_every_member(tmp_path):
    # the GPU alone is selected; its audio function, on a host driver, still blocks the group
    sel = facts_of(selection_host(tmp_path), ['0000:01:00.0'])
    assert list(sel['devices']) == ['0000:01:00.0'] and sel['devices']['0000:01:00.0']['vfio_bound']
    assert sel['iommu_groups'] == {'7': {'devices': ['0000:01:00.0', '0000:01:00.1'], 'viable': False,
                                         'blockers': ['0000:01:00.1']}}


def test_a_selection_reads_only_what_it_reports(tmp_path):
    """Addresses: only those devices and their group members are read; ids: every device's
    modalias (and its ID attributes without one), nothing else of the unselected ones."""
    h = selection_host(tmp_path)
    reads = []

    class Recording(FakeKernel):
        def read_attrs(self, rel, names):
            reads.append((rel.rsplit('/', 1)[-1], tuple(names)))
            return super(Recording, self).read_attrs(rel, names)

    def run(raw):
        del reads[:]
        collect_facts(HostContext(h.params(), fs=Recording(h)), items=parse_selection(raw))
        return set(a for a, names in reads if 'numa_node' in names), set(a for a, names in reads)

    assert run(['0000:01:00.0']) == ({'0000:01:00.0', '0000:01:00.1'},) * 2
    full, touched = run([{'vendor': '10de', 'device': '1b80'}])
    assert full == {'0000:01:00.0', '0000:01:00.1'}
    assert touched == set(os.listdir(os.path.join(h.sys, 'bus/pci/devices')))
    ids = ('vendor', 'device', 'subsystem_vendor', 'subsystem_device', 'class')
    assert set(names for a, names in reads if a not in full) <= {('modalias',), ids}


def test_a_selection_that_matches_nothing_warns(tmp_path):
    sel = facts_of(selection_host(tmp_path), ['0000:00:03.0', '0000:09:00.0', {'vendor': 'abcd'}])
    assert list(sel['devices']) == ['0000:00:03.0']
    assert sel['warnings'][:2] == ['devices[1] (0000:09:00.0) selects no device on this host',
                                   'devices[2] vendor=abcd selects no device on this host']
    empty = facts_of(selection_host(tmp_path / 'b'), [])
    assert (empty['devices'], empty['iommu_groups']) == ({}, {})


@pytest.mark.parametrize('raw, message', [
    ('0000:01:00.0', 'devices must be a list of PCI addresses or selector dicts'),
    ([{'address': '01:00.0', 'state': 'host', 'driver': 'vfio-pci'}],
     'devices[0]: state, driver would change a device (hypervisor.vfio.vfio_bind); vfio_facts only selects'),
    ([60.0], "quote it in YAML: '01:00.0'"),
    ([{'vendor': 4318}], "quote it in YAML: '10de' if you wrote 0x10de"),
    ([{'iommu_group': -1}, {'color': 'red'}],
     '3 problems:\n- devices[0]: iommu_group must be a non-negative integer, got -1\n- devices[1] has unknown keys color'),
])
def test_a_bad_selection_is_refused_with_every_problem(raw, message):
    with pytest.raises(ValueError) as e:
        parse_selection(raw)
    assert message in str(e.value)

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nothing ambiguous is accepted: YAML-coerced values, non-VFIO pins; every problem at once;
fake trees behave like sysfs on write; no message carries Python's None."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed
from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import Executor
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import PCI, KernelFS
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import (
    NIC, TESTDEV, VIRTIO, refused, vfio_host)
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import bind_on as bind

GPU = '0000:01:00.0'


@pytest.fixture
def host(tmp_path):
    h = vfio_host(tmp_path)
    h.add_module('nouveau', ids=[('10de', '1e04')], deps=['gpu/drm/drm_display_helper', 'gpu/drm/ttm/ttm'])
    h.add_device(GPU, '10de', '1e04', cls='030000')
    return h


def from_yaml(text):
    """What Ansible hands the module for a task written in YAML (PyYAML is YAML 1.1, as Ansible's loader)."""
    yaml = pytest.importorskip('yaml')  # hack/core-py39's venv has no PyYAML: those cases skip there
    return yaml.safe_load(text)


# -- a pin must be a VFIO driver -------------------------------------------------------------
@pytest.mark.parametrize('force', [False, True])
def test_host_driver_pin_refused_even_with_force(host, kernel, force):
    msg, dummy = refused(host, kernel, devices=[{'address': GPU, 'driver': 'nouveau'}], force=force)
    assert 'driver: nouveau is not a VFIO driver' in msg
    assert 'it does not use vfio_pci_core: it depends on drm_display_helper, ttm' in msg
    assert 'use state: host' in msg and 'force does not change that' in msg


def test_pin_without_dependencies_and_the_library_itself_refused(host, kernel):
    host.add_module('vfio_pci_core')
    msg, dummy = refused(host, kernel, devices=[{'address': NIC, 'driver': 'e1000e'}, {'address': VIRTIO, 'driver': 'vfio-pci-core'}])
    assert 'driver: e1000e is not a VFIO driver (it depends on no other module, so not on vfio_pci_core)' in msg
    assert 'driver: vfio_pci_core is not a VFIO driver (it is the VFIO library, which registers no driver)' in msg


@pytest.mark.parametrize('pin, driver', [('vfio_pci', 'vfio-pci'), ('vfio-pci', 'vfio-pci'),
                                         ('virtio_vfio_pci', 'virtio_vfio_pci')])
def test_vfio_pins_accepted(host, kernel, pin, driver):
    bind(host, kernel, devices=[{'address': VIRTIO, 'driver': pin}])
    assert (kernel._driver_of(VIRTIO), kernel._override(VIRTIO)) == (driver, driver)


def test_loaded_variant_outside_modules_dep_accepted_as_holder_of_the_core(host, kernel):
    """An out-of-tree variant loaded by hand has no modules.dep line but holds vfio_pci_core."""
    host.add_module('oot_vfio_pci', ids=[('1b36', '0005')], override_only=True, installed=False, loaded=True)
    holders = os.path.join(host.sys, 'module', 'vfio_pci_core', 'holders')
    os.makedirs(holders)
    os.symlink('../../oot_vfio_pci', os.path.join(holders, 'oot_vfio_pci'))
    bind(host, kernel, devices=[{'address': TESTDEV, 'driver': 'oot_vfio_pci'}])
    assert kernel._driver_of(TESTDEV) == 'oot_vfio_pci'


# -- no silent YAML coercion ------------------------------------------------------------------
@pytest.mark.parametrize('task, message', [
    ('devices: [01:00.0]', "devices[0] is the number 60.0, not a string: YAML 1.1 reads an unquoted 01:00.0 as a "
                           "base-60 number; quote it in YAML: '01:00.0'"),
    ('devices: [{address: 00:04.0}]', "devices[0]: address is the number 4.0, not a string: YAML 1.1 reads an "
                                      "unquoted 00:04.0 as a base-60 number; quote it in YAML: '00:04.0'"),
    ('devices: [{physfn: 02:01.3}]', "quote it in YAML: '02:01.3'"),
    ('devices: [{vendor: 0x10de}]', "devices[0]: vendor is the integer 4318, not a string: YAML reads unquoted "
                                    "hexadecimal, decimal and octal ids as numbers; quote it in YAML: '10de' if you "
                                    "wrote 0x10de, '4318' if you wrote 4318"),
    ('devices: [{class: 0300}]', "devices[0]: class is the integer 192, not a string"),
    ('devices: [{class: 0300}]', "'0300' if you wrote 0300"),
    ('devices: [{vendor: 8086}]', "'8086' if you wrote 8086"),
    ('devices: [{device: on}]', "devices[0]: device is the boolean True, not a string: YAML reads unquoted "
                                "yes/no/on/off/true/false as booleans; quote it in YAML"),
    ('devices: [yes]', "devices[0] is the boolean True, not a string"),
    ('devices: [{subsystem_device: 1.5e+3}]', "subsystem_device is the number 1500.0, not a string; quote it"),
])
def test_yaml_coerced_values_refused_with_quote_it(host, kernel, task, message):
    with pytest.raises(RequestError) as e:
        bind(host, kernel, **from_yaml(task))
    assert message in str(e.value)
    assert 'None' not in str(e.value)
    assert kernel.log == []


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -1.5, 1e300])
def test_odd_numbers_as_addresses_refused_cleanly(host, kernel, value):
    with pytest.raises(RequestError) as e:
        bind(host, kernel, devices=[value, {'address': value}])
    assert 'not a string; quote it in YAML' in str(e.value) and kernel.log == []


def test_quoted_values_accepted(host, kernel):
    r = bind(host, kernel, check_mode=True, **from_yaml("devices: ['00:04.0', {vendor: '1af4', class: '0200'}]"))
    assert [d['address'] for d in r['devices']] == [VIRTIO, NIC]


def test_every_problem_reported_at_once(host, kernel):
    task = from_yaml("""
devices:
  - 01:00.0
  - {address: '00:04.0', colour: red, vendor: 0x8086}
  - {class: 0300, optional: maybe}
state: bogus
timeout: 0
""")
    with pytest.raises(RequestError) as e:
        bind(host, kernel, **task)
    msg = str(e.value)
    assert msg.startswith('7 problems:\n- ')
    for part in ["state must be one of vfio, host, got 'bogus'", 'timeout must be a number',
                 "devices[0] is the number 60.0", 'devices[1] has unknown keys colour',
                 'devices[1]: vendor is the integer 32902', 'devices[2]: class is the integer 192',
                 "devices[2]: optional must be a boolean, got 'maybe'"]:
        assert part in msg, part
    assert kernel.log == []


# -- fake trees behave like sysfs on write; no None in messages ---------------------------------
def test_write_replaces_the_whole_attribute_of_a_fake_tree(host):
    fs = KernelFS(host.sys, host.proc)
    rel = 'bus/pci/devices/%s/driver_override' % NIC
    fs.write(rel, 'virtio_vfio_pci')
    fs.write(rel, '\n')
    assert fs.read(rel) == ''
    with open(host.dev_dir(NIC) + '/driver_override') as f:
        assert f.read() == '\n'


def test_rollback_problem_names_no_python_none(host, kernel):
    """A rollback that cannot put the device back says '(none)', never None."""
    ex = Executor(kernel, PCI, kernel.modprobe)
    entry = {'address': TESTDEV, 'driver_before': 'vfio_testdev', 'override_before': None}
    problem = ex.rollback(entry)  # vfio_testdev is not loaded: nothing can bind it
    assert problem == ('rollback of %s ended on driver (none) / driver_override (none) instead of vfio_testdev / '
                       '(none)' % TESTDEV)


def test_verify_failure_names_no_python_none(host, kernel):
    kernel.fail_probe.add('vfio_testdev')
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[TESTDEV])
    assert 'None' not in str(e.value)

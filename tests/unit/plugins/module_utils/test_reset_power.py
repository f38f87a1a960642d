# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-device reset_method and d3cold_allowed: planned, written after the binding, read back,
rolled back, persisted in the desired state and re-applied by the boot engine."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils import cli
from ansible_collections.hypervisor.vfio.plugins.module_utils.bind import BindFailed
from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import StateError, bind_params, parse_state
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import NIC, bind_on as bind, run_cli, vfio_host, write_state

GPU = '0000:00:07.0'  # the kernel shows neither reset_method nor d3cold_allowed for it


@pytest.fixture
def host(tmp_path):
    h = vfio_host(tmp_path)
    h.add_device(GPU, '10de', '2204', cls='030000', reset_method=None)
    for name, text in (('reset_method', 'flr bus\n'), ('d3cold_allowed', '1\n')):
        with open(os.path.join(h.dev_dir(NIC), name), 'w') as f:
            f.write(text)
    return h


def attr(host, addr, name):
    with open(os.path.join(host.dev_dir(addr), name)) as f:
        return f.read().strip()


def test_settings_are_planned_then_written_after_the_binding_and_kept(host, kernel):
    entry = {'address': NIC, 'reset_method': ['bus', 'flr'], 'd3cold_allowed': False}
    r = bind(host, kernel, check_mode=True, devices=[entry])
    (d,) = r['devices']
    assert d['settings'] == [{'attribute': 'reset_method', 'before': 'flr bus', 'after': 'bus flr'},
                             {'attribute': 'd3cold_allowed', 'before': '1', 'after': '0'}]
    assert r['diff']['before'][NIC]['reset_method'] == 'flr bus' and r['diff']['after'][NIC]['d3cold_allowed'] == '0'
    assert kernel.device_writes() == [] and attr(host, NIC, 'reset_method') == 'flr bus'

    r = bind(host, kernel, devices=[entry])
    assert r['changed'] and r['devices'][0]['result'] == 'changed'
    assert (attr(host, NIC, 'reset_method'), attr(host, NIC, 'd3cold_allowed')) == ('bus flr', '0')
    writes = [w[0].rsplit('/', 1)[-1] for w in kernel.log if isinstance(w, tuple) and w[0].startswith('bus/')]
    assert writes.index('reset_method') > writes.index('bind')  # after the binding

    n = len(kernel.log)
    r = bind(host, kernel, devices=[entry])
    assert not r['changed'] and r['devices'][0]['settings'] == [] and len(kernel.log) == n


def test_a_setting_alone_changes_a_bound_device(host, kernel):
    bind(host, kernel, devices=[NIC])
    r = bind(host, kernel, devices=[{'address': NIC, 'd3cold_allowed': False}])
    (d,) = r['devices']
    assert r['changed'] and d['action'] == 'none' and d['result'] == 'changed'
    assert attr(host, NIC, 'd3cold_allowed') == '0'


def test_a_refused_setting_rolls_the_device_back(host, kernel):
    kernel.fail_write['bus/pci/devices/%s/reset_method' % NIC] = errno.EINVAL
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[{'address': NIC, 'd3cold_allowed': False, 'reset_method': 'pm'}])
    msg = str(e.value)
    assert '%s: set reset_method to pm failed' % NIC in msg and 'rolled back' in msg
    assert kernel._driver_of(NIC) == 'e1000e' and attr(host, NIC, 'reset_method') == 'flr bus'


def test_an_attribute_the_kernel_does_not_show_is_refused_before_any_write(host, kernel):
    with pytest.raises(BindFailed) as e:
        bind(host, kernel, devices=[NIC, {'address': GPU, 'd3cold_allowed': True}])
    assert 'the kernel shows no d3cold_allowed attribute for it' in str(e.value) and GPU in str(e.value)
    assert kernel.device_writes() == []


@pytest.mark.parametrize('value', ['reset', [], ['flr', 'flr'], 'flr, bus', 3, ['default']])
def test_bad_reset_method_is_a_request_error(host, kernel, value):
    with pytest.raises(RequestError, match='reset_method must be a non-empty list of distinct reset methods'):
        bind(host, kernel, devices=[{'address': NIC, 'reset_method': value}])


D3COLD_MESSAGE = ("d3cold_allowed must be true or false (unquoted), or left out to keep the kernel's setting, "
                  "got 'no'")


def test_d3cold_allowed_must_be_a_boolean(host, kernel):
    with pytest.raises(RequestError) as e:
        bind(host, kernel, devices=[{'address': NIC, 'd3cold_allowed': 'no'}])
    assert str(e.value) == 'devices[0] (%s): %s' % (NIC, D3COLD_MESSAGE)


def test_a_device_without_a_reset_method_is_bound_with_a_warning(host, kernel):
    r = bind(host, kernel, devices=[GPU])
    assert kernel._driver_of(GPU) == 'vfio-pci'
    assert ('%s: the kernel has no reset method for this device (no reset attribute): a VM restart cannot reset '
            'it' % GPU) in ' '.join(r['warnings_list'])
    assert not [w for w in bind(host, kernel, devices=[NIC])['warnings_list'] if 'reset method' in w]


def test_the_desired_state_carries_the_settings_to_the_boot_engine(host, kernel):
    doc = {'format': 1, 'timeout': 2, 'lock_timeout': 1,
           'devices': [{'address': NIC, 'vendor': '8086', 'device': '10d3', 'driver': None,
                        'reset_method': 'bus', 'd3cold_allowed': False}]}
    state = parse_state(doc)
    assert state['devices'][0]['reset_method'] == ['bus'] and state['devices'][0]['d3cold_allowed'] is False
    items = bind_params(state, state['devices'], {})['devices']
    assert items == [{'address': NIC, 'reset_method': ['bus'], 'd3cold_allowed': False}]
    assert bind_params(state, state['devices'], {}, give_back=True)['devices'] == [NIC]
    write_state(host, doc['devices'])
    code, out = run_cli(host, kernel, 'apply')
    assert code == cli.EXIT_OK, out
    assert kernel._driver_of(NIC) == 'vfio-pci'
    assert (attr(host, NIC, 'reset_method'), attr(host, NIC, 'd3cold_allowed')) == ('bus', '0')


@pytest.mark.parametrize('dev,msg', [
    ({'reset_method': ['warm']}, 'reset_method must be'),
    ({'d3cold_allowed': 'no'}, 'devices[0] (%s): %s' % (NIC, D3COLD_MESSAGE)),
])
def test_bad_settings_in_the_desired_state(dev, msg):
    """The same rules, and the same messages, as for vfio_bind's entries."""
    base = {'address': NIC, 'vendor': '8086', 'device': '10d3', 'driver': None}
    base.update(dev)
    with pytest.raises(StateError) as e:
        parse_state({'format': 1, 'devices': [base]})
    assert msg in str(e.value)

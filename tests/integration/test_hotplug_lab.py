# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A device hot-unplugged during a vfio_bind run, on the lab's real kernel.

The lab's hot-pluggable e1000e (``lab_devices.hotplug``, behind the pcie-root-port ``hp1``)
is removed through QEMU's QMP socket (``lab_qmp_socket``) with ``device_del`` while the
module is blocked in the unbind of another device of the same call: the test device on
``vfio_testdev`` with ``remove_delay_ms`` set.  The module handles devices in address order,
so the test device (bus 00) comes first and the hot-plug device (bus 01) has vanished by its
turn: the plan saw it, the execution cannot find it.  Deterministic: the unplug is started
only once the guest's kernel log shows the blocked removal, and must be acknowledged by the
guest (DEVICE_DELETED) before the removal delay ends.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import socket
import threading
import time

import pytest

pytestmark = pytest.mark.lab

PARAMS = '/sys/module/vfio_testdev/parameters'
REMOVE_DELAY_MS = 12000


class QMP:
    """A minimal QMP client: one session on the lab's QEMU monitor socket."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile('rw')
        self.events = []
        greeting = json.loads(self.file.readline())
        assert 'QMP' in greeting, greeting
        self.execute('qmp_capabilities')

    def _read(self):
        line = self.file.readline()
        if not line:
            raise AssertionError('QMP connection closed')
        return json.loads(line)

    def execute(self, command, **arguments):
        msg = {'execute': command}
        if arguments:
            msg['arguments'] = arguments
        self.file.write(json.dumps(msg) + '\n')
        self.file.flush()
        while True:
            reply = self._read()
            if 'event' in reply:
                self.events.append(reply)
                continue
            if 'error' in reply:
                raise AssertionError('QMP %s failed: %s' % (command, reply['error']))
            return reply.get('return')

    def wait_event(self, name, timeout, **data):
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e['event'] == name and all(e.get('data', {}).get(k) == v for k, v in data.items()):
                    self.events.remove(e)
                    return e
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError('no QMP event %s %s within %ss' % (name, data, timeout))
            self.sock.settimeout(left)
            try:
                self.events.append(self._read())
            except socket.timeout:
                pass

    def close(self):
        self.file.close()
        self.sock.close()


def hp_args(lab):
    hp = lab.vars['lab_hotplug']
    return dict(driver=hp['driver'], id=hp['id'], bus=hp['bus'], mac=hp['mac'])


def wait_guest(lab, condition, timeout):
    """Poll a shell condition inside the guest (one SSH round trip)."""
    out = lab.ssh('for i in $(seq 1 %d); do if %s; then echo yes; exit 0; fi; sleep 0.2; done; echo no'
                  % (timeout * 5, condition), timeout=timeout + 60).strip()
    return out == 'yes'


def plug_back(lab, qmp, hotplug):
    qmp.execute('device_add', **hp_args(lab))
    assert wait_guest(lab, '[ -e /sys/bus/pci/devices/%s/driver ]' % hotplug, 60), \
        '%s did not come back on a driver after device_add' % hotplug


def test_device_unplugged_during_run(lab, clean):
    testdev, hotplug = lab.devices['testdev'], lab.devices['hotplug']
    assert testdev < hotplug, 'the design needs the test device handled first'
    hp = lab.vars['lab_hotplug']
    qmp = QMP(lab.vars['lab_qmp_socket'])
    try:
        # before: the test device on its variant driver (override set), the e1000e on e1000e
        ok, res = lab.module('vfio_bind', {'devices': [testdev]})
        assert ok, res
        before_testdev = ('vfio_testdev', 'vfio_testdev')
        assert lab.state(testdev) == before_testdev
        assert lab.state(hotplug) == clean[hotplug] == ('e1000e', None)
        marks = int(lab.ssh('dmesg | grep -c "%s: remove blocks" || true' % testdev).strip() or 0)
        lab.ssh('echo %d > %s/remove_delay_ms' % (REMOVE_DELAY_MS, PARAMS))

        result = {}

        def run():
            t0 = time.monotonic()
            result['ok'], result['res'] = lab.module(
                'vfio_bind', {'devices': [hotplug, {'address': testdev, 'driver': 'vfio_pci'}], 'timeout': 90})
            result['seconds'] = time.monotonic() - t0

        worker = threading.Thread(target=run)
        worker.start()
        # the module is now blocked in the test device's unbind: unplug the e1000e
        assert wait_guest(lab, '[ $(dmesg | grep -c "%s: remove blocks") -gt %d ]' % (testdev, marks), 120), \
            'the module never reached the blocked unbind of %s' % testdev
        t0 = time.monotonic()
        qmp.execute('device_del', id=hp['id'])
        qmp.wait_event('DEVICE_DELETED', REMOVE_DELAY_MS / 1000.0, device=hp['id'])
        unplug_seconds = time.monotonic() - t0
        assert lab.ssh('[ -e /sys/bus/pci/devices/%s ] && echo present || echo gone' % hotplug).strip() == 'gone'
        assert worker.is_alive(), 'the module must still be blocked when the device is gone'
        worker.join(300)
        assert not worker.is_alive()
        lab.ssh('echo 0 > %s/remove_delay_ms' % PARAMS)
        ok, res = result['ok'], result['res']
        print('unplug (device_del to DEVICE_DELETED) took %.1fs; the run %.0fs' % (unplug_seconds, result['seconds']))
        print(json.dumps(res, indent=1, sort_keys=True))

        # a clean failure naming the vanished device and the step
        out = json.dumps(res)
        assert not ok, res
        assert 'Traceback' not in out and 'MODULE FAILURE' not in out and 'exception' not in res, res
        f = res['failure']
        assert f['device'] == hotplug, res
        assert hotplug in res['msg'] and f['step'] in res['msg'], res['msg']
        assert f['step'].startswith('set driver_override'), f
        # the other device is consistent: rolled back to its driver and override, and says so
        entries = {e['address']: e for e in res['devices']}
        assert entries[testdev]['result'] == 'rolled_back', entries[testdev]
        assert testdev in f['rolled_back']
        assert lab.state(testdev) == before_testdev
        assert (entries[testdev]['driver_after'], entries[testdev]['override_after']) == before_testdev
        # the vanished device is reported as not rolled back, never as done
        assert entries[hotplug]['result'] != 'changed', entries[hotplug]

        # plugged back, a later run converges
        plug_back(lab, qmp, hotplug)
        assert lab.state(hotplug) == ('e1000e', None)
        ok, res = lab.module('vfio_bind', {'devices': [hotplug, {'address': testdev, 'driver': 'vfio_pci'}]})
        assert ok, res
        assert lab.states([hotplug, testdev]) == {hotplug: ('vfio-pci', 'vfio-pci'), testdev: ('vfio-pci', 'vfio-pci')}
    finally:
        lab.ssh('echo 0 > %s/remove_delay_ms 2>/dev/null; true' % PARAMS)
        if lab.ssh('[ -e /sys/bus/pci/devices/%s ] && echo present || echo gone' % hotplug).strip() == 'gone':
            time.sleep(REMOVE_DELAY_MS / 1000.0)  # a pending removal must finish first
            try:
                plug_back(lab, qmp, hotplug)
            except AssertionError:
                pass
        qmp.close()

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14 item 1 on the lab: the boot facts of a real kernel, and the role with its defaults
on "a Debian 6.12 host booted with intel_iommu=on and no GRUB" (the lab guest is exactly
that: virtme-ng starts the kernel with QEMU -kernel, so no boot loader sets its arguments).
Before the boot loader detection, the default passthrough_iommu_pt=true failed this host
with "/usr/sbin/update-grub is missing"; now it converges with a warning naming iommu=pt."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest
import yaml

from conftest import _bin  # tests/integration/conftest.py (rootdir-prepended, no package)

pytestmark = pytest.mark.lab


def run_role(lab, tmpdir, role_vars):
    play = [{'name': 'passthrough role on the lab', 'hosts': 'hypervisors', 'gather_facts': False, 'become': True,
             'roles': [{'role': 'hypervisor.vfio.passthrough', 'vars': role_vars}]}]
    path = os.path.join(str(tmpdir), 'play.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(play, f, sort_keys=False)
    env = dict(lab.env, ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default')
    p = lab.run([_bin('ansible-playbook'), '-i', lab.inventory, path], 'ansible-playbook', 1800, env=env)
    return p.returncode, p.stdout + p.stderr


def test_boot_facts_of_a_directly_started_kernel(lab):
    facts = lab.facts()
    boot = facts['boot']
    assert boot['loader'] == 'none' and boot['method'] is None, boot
    assert 'BOOT_IMAGE=' in ' '.join(boot['evidence']) and boot['loader_info'] is None
    assert 'intel_iommu=on' in boot['cmdline_args']
    # The emulated IOMMU is Intel's (dmar units) whatever CPU QEMU shows.
    assert facts['iommu']['vendor'] == 'intel' and facts['iommu']['enable_args'] == ['intel_iommu=on']
    running = [k for k in facts['kernels'] if k['running']]
    assert [k['release'] for k in running] == [facts['kernel_release']] and running[0]['modules_alias']
    # Reset and power attributes as this kernel shows them (read back raw over SSH): e1000e on
    # the root bus has a PM reset; the hotplug device behind a root port a bus reset too.
    for addr in (lab.devices['generic'], lab.devices['hotplug']):
        d = facts['devices'][addr]
        assert d['reset_method'] == lab.sysfs(addr, 'reset_method').split() and d['reset_supported']
        assert d['power_state'] == lab.sysfs(addr, 'power_state')
        assert d['d3cold_allowed'] == (lab.sysfs(addr, 'd3cold_allowed') == '1')
        assert d['boot_vga'] is None
    assert 'pm' in facts['devices'][lab.devices['generic']]['reset_method']
    assert 'bus' in facts['devices'][lab.devices['hotplug']]['reset_method']


def test_role_defaults_converge_a_host_booted_with_iommu_on_and_no_grub(lab, clean, tmpdir):
    addr = lab.devices['generic']
    assert 'iommu=pt' not in lab.ssh('cat /proc/cmdline').split()
    assert lab.ssh('test -e /usr/sbin/update-grub && echo yes || echo no').strip() == 'no'
    # Role defaults (passthrough_iommu_cmdline=true, passthrough_iommu_pt=true, persistence on),
    # except the initramfs: the lab boots without one, and regenerating it takes ~8 min under TCG.
    rc, out = run_role(lab, tmpdir, {'passthrough_devices': [addr], 'passthrough_initramfs': False})
    try:
        assert rc == 0, out[-6000:]
        assert 'update-grub is missing' not in out
        warning = [line for line in out.splitlines() if 'WARNING: ' in line and 'the role cannot add them' in line]
        assert warning and 'lacks iommu=pt' in warning[0] and "boot loader is 'none'" in warning[0], out[-6000:]
        assert 'REBOOT REQUIRED' not in out
        assert lab.state(addr) == ('vfio-pci', 'vfio-pci')
    finally:
        rc, out = run_role(lab, tmpdir, {'passthrough_devices': [addr], 'passthrough_restore': True,
                                         'passthrough_iommu_cmdline': False})
        assert rc == 0, out[-6000:]

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role's SR-IOV path on a real kernel: the lab's igb (QEMU's 82576) is an SR-IOV PF.

``lab_devices.sriov`` is the PF, behind its own pcie-root-port, driven by the Debian kernel's
igb (``sriov_totalvfs`` 7); its VFs (8086:10ca) are igbvf's.  The role
``hypervisor.vfio.passthrough`` with ``passthrough_sriov`` creates the VFs (autoprobe off, so
igbvf never takes them) and binds them to vfio-pci through a ``{physfn: PF}`` selector; a
re-run changes nothing and does not recreate the VFs; ``passthrough_restore`` gives them back
and removes the persistence, and a re-run of the restore changes nothing (the VFs stay without a
driver: with autoprobe off the kernel probes none for them).  Under TCG on a loaded machine (load 25 on 2 cores) each role run
took 10-15 min; on a quiet one a few minutes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import tempfile

import pytest
import yaml

from conftest import _bin

pytestmark = pytest.mark.lab

NUMVFS = 2
PF_ID = ('0x8086', '0x10c9')   # 82576
VF_ID = ('0x8086', '0x10ca')   # 82576 Virtual Function
ROLE_VARS = {
    # The lab's kernel command line comes from QEMU, and it has no initramfs in its boot path
    # (as in extensions/molecule/default/converge.yml).
    'passthrough_iommu_cmdline': False,
    'passthrough_initramfs': False,
}
STATE_FILE = '/etc/hypervisor-vfio/state.json'  # the desired state the boot unit's engine applies


def _sudo(lab):
    """A prefix for guest commands that write /sys: none as root, else sudo -n."""
    return '' if lab.vars.get('ansible_user', 'root') == 'root' else 'sudo -n '


def run_role(lab, workdir, label, role_vars):
    """Run the role on the lab host; return (ansible-playbook output, the host's recap counts)."""
    rv = dict(ROLE_VARS)
    rv.update(role_vars)
    play = [{'name': 'SR-IOV on the lab (%s)' % label, 'hosts': 'hypervisors', 'gather_facts': False,
             'roles': [{'role': 'hypervisor.vfio.passthrough', 'vars': rv}]}]
    path = os.path.join(workdir, label + '.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(play, f, sort_keys=False)
    env = dict(lab.env, ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default', ANSIBLE_RETRY_FILES_ENABLED='False')
    p = lab.run([_bin('ansible-playbook'), '-i', lab.inventory, path], label, 1800, env=env)
    with open(os.path.join(workdir, label + '.log'), 'w') as f:
        f.write(p.stdout + '\n--- stderr ---\n' + p.stderr)
    assert p.returncode == 0, '%s failed (%d):\n%s\n%s' % (label, p.returncode, p.stdout[-6000:], p.stderr[-3000:])
    m = re.search(r'^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)' % re.escape(lab.name),
                  p.stdout, re.M)
    assert m, 'no play recap for %s in:\n%s' % (lab.name, p.stdout[-3000:])
    return p.stdout, dict(zip(('ok', 'changed', 'unreachable', 'failed'), map(int, m.groups())))


def sriov_state(lab, pf):
    """The PF's SR-IOV attributes and, per VF: id, driver, override and sysfs inode, in one round trip."""
    script = (
        'p=/sys/bus/pci/devices/{pf}; echo "pf $(cat $p/sriov_totalvfs) $(cat $p/sriov_numvfs) '
        '$(cat $p/sriov_drivers_autoprobe) $(basename $(readlink $p/driver))"; '
        'for v in $p/virtfn*; do [ -e "$v" ] || continue; a=$(basename $(readlink -f $v)); d=/sys/bus/pci/devices/$a; '
        'drv=$(readlink $d/driver); o=$(cat $d/driver_override); '
        'echo "vf $a $(cat $d/vendor) $(cat $d/device) ${{drv##*/}} ${{o:-(null)}} $(stat -L -c %i $d) '
        '$(basename $(readlink $d/iommu_group))"; done'
    ).format(pf=pf)
    state = {'vfs': {}}
    for line in lab.ssh(script).splitlines():
        f = line.split()
        if f[0] == 'pf':
            state.update(totalvfs=int(f[1]), numvfs=int(f[2]), autoprobe=f[3], driver=f[4] if len(f) > 4 else None)
        elif f[0] == 'vf':
            if len(f) == 7:     # no driver: its word is empty
                f.insert(4, None)
            state['vfs'][f[1]] = {'id': (f[2], f[3]), 'driver': f[4], 'override': None if f[5] == '(null)' else f[5],
                                  'inode': f[6], 'iommu_group': f[7]}
    return state


@pytest.fixture
def pf(lab):
    """The lab's SR-IOV PF, with no VFs at the start and at the end of the test."""
    addr = lab.devices.get('sriov')
    if not addr:
        pytest.fail('the lab has no SR-IOV device (lab_devices.sriov): lab/labctl up with a QEMU that has igb')
    reset = ('p=/sys/bus/pci/devices/%s; echo 0 | %stee $p/sriov_numvfs >/dev/null; '
             'echo 1 | %stee $p/sriov_drivers_autoprobe >/dev/null' % (addr, _sudo(lab), _sudo(lab)))
    lab.ssh(reset)
    yield addr
    lab.ssh(reset)


def test_role_creates_binds_keeps_and_restores_vfs(lab, pf):
    workdir = tempfile.mkdtemp(prefix='vfio-sriov-')
    start = sriov_state(lab, pf)
    assert start['driver'] == 'igb', 'the PF %s is on %s, not igb' % (pf, start['driver'])
    assert lab.sysfs(pf, 'vendor') == PF_ID[0] and lab.sysfs(pf, 'device') == PF_ID[1]
    assert start['totalvfs'] == 7 and start['numvfs'] == 0 and not start['vfs'], start
    pf_group = os.path.basename(lab.ssh('readlink /sys/bus/pci/devices/%s/iommu_group' % pf).strip())

    request = {'passthrough_devices': [{'physfn': pf}],
               'passthrough_sriov': [{'pf': pf, 'numvfs': NUMVFS}]}

    # 1. The role creates the VFs (autoprobe off first) and binds them to vfio-pci.
    unused_out, recap = run_role(lab, workdir, 'create', request)
    assert recap['changed'] > 0, recap
    st = sriov_state(lab, pf)
    assert st['numvfs'] == NUMVFS and len(st['vfs']) == NUMVFS, st
    assert st['autoprobe'] == '0' and st['driver'] == 'igb', st
    for addr, vf in st['vfs'].items():
        assert vf['id'] == VF_ID, (addr, vf)
        assert (vf['driver'], vf['override']) == ('vfio-pci', 'vfio-pci'), (addr, vf)
        assert vf['iommu_group'] != pf_group, 'VF %s shares the IOMMU group of its PF' % addr
        assert lab.ssh('test -e /dev/vfio/%s && echo yes' % vf['iommu_group'], check=False).strip() == 'yes'
    # igbvf never had them (autoprobe off before the count was written).
    assert not lab.ssh('ls /sys/bus/pci/drivers/igbvf 2>/dev/null | grep -F "%s" || true' % pf[:-4]).strip()
    # The desired state the boot unit's engine applies: the VFs are recreated, then bound.
    persisted = json.loads(lab.ssh('cat %s' % STATE_FILE))
    assert {'pf': pf, 'numvfs': NUMVFS, 'drivers_autoprobe': False} in persisted['sriov'], persisted
    by_addr = {d['address']: d for d in persisted['devices']}
    for addr in st['vfs']:
        assert addr in by_addr, persisted
        assert (by_addr[addr]['vendor'], by_addr[addr]['device']) == (VF_ID[0][2:], VF_ID[1][2:]), by_addr[addr]
    files = lab.ssh('stat -c "%%n %%Y %%i" %s' % STATE_FILE)

    # 2. A re-run changes nothing: no task reports a change, the VFs are the same kernel
    # objects (a re-created VF gets a new sysfs inode), the files are untouched.
    unused_out, recap = run_role(lab, workdir, 'rerun', request)
    assert recap['changed'] == 0, recap
    again = sriov_state(lab, pf)
    assert again == st, 'the re-run changed the SR-IOV state:\n%s\n%s' % (st, again)
    assert lab.ssh('stat -c "%%n %%Y %%i" %s' % STATE_FILE) == files

    # 3. Restore gives the VFs back: off vfio-pci, no override, nothing persisted. The VFs
    # themselves stay (documented in meta/argument_specs.yml, passthrough_restore): with
    # autoprobe off no host driver takes them.
    unused_out, recap = run_role(lab, workdir, 'restore', dict(request, passthrough_restore=True))
    assert recap['changed'] > 0, recap
    back = sriov_state(lab, pf)
    assert back['driver'] == 'igb', back
    assert back['numvfs'] == NUMVFS and set(back['vfs']) == set(st['vfs']), back
    for addr, vf in back['vfs'].items():
        assert vf['driver'] != 'vfio-pci' and vf['override'] is None, (addr, vf)
    assert lab.ssh('test -e %s && echo present || echo absent' % STATE_FILE).strip() == 'absent'

    # 4. A re-run of restore changes nothing. With autoprobe off the kernel probes no host
    # driver for a VF (only its driver_override), so the VFs stay without a driver: that is
    # their restored state, not something to re-probe on every run (it reported changed=1).
    unused_out, recap = run_role(lab, workdir, 'restore_rerun', dict(request, passthrough_restore=True))
    assert recap['changed'] == 0, recap
    assert sriov_state(lab, pf) == back, 'the restore re-run changed the SR-IOV state'

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The role's persistence step on a simulated host (tools/fakehost.py, devices already on VFIO so
vfio_bind has nothing to write): a real run writes every file below passthrough_rootfs_path, a
re-run changes nothing in two module runs, restore (check mode) would remove them all.

Nothing outside the test's temp folder is written: the persistence files, the engine archive,
the lock and the journal all go below the fake tree; no boot tool is found there, so no
initramfs is rebuilt, and no udevd runs there, so no rules are reloaded."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

import yaml

from ansible_collections.hypervisor.vfio.plugins.module_utils.persist import FILES
from ansible_collections.hypervisor.vfio.tests.playbook import run_playbook
from ansible_collections.hypervisor.vfio.tools.fakehost import generate


def run(tmp_path, info, cli=(), **extra):
    vars_ = dict(info['role_vars'], passthrough_persistent=True)
    vars_.update(extra)
    play = [{'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
             'vars': {'ansible_python_interpreter': '{{ ansible_playbook_python }}'},
             'roles': [{'role': 'hypervisor.vfio.passthrough'}]}]
    pb = tmp_path / 'play.yml'
    pb.write_text(yaml.safe_dump(play))
    ev = tmp_path / 'vars.json'
    ev.write_text(json.dumps(vars_))
    rc, out = run_playbook(tmp_path, ['-vvv'] + list(cli) + ['-i', 'localhost,', '-e', '@%s' % ev, pb], timeout=600,
                           ANSIBLE_PIPELINING='0')
    assert rc == 0, out[-6000:]
    # every module run is one AnsiballZ payload put on the host
    runs = re.findall(r'^<localhost> PUT .*/AnsiballZ_(\w+)\.py', out, re.M)
    recap = re.search(r'^localhost\s*:\s*ok=\d+\s+changed=(\d+)', out, re.M)
    return out, runs, int(recap.group(1))


def files_below(root):
    out = {}
    for top in ('etc', 'usr'):
        for d, dirs, names in os.walk(os.path.join(root, top)):
            for name in names + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
                p = os.path.join(d, name)
                out['/' + os.path.relpath(p, root)] = os.readlink(p) if os.path.islink(p) else os.stat(p).st_mtime_ns
    return out


def test_the_role_persists_in_one_engine_run_and_a_rerun_changes_nothing(tmp_path):
    info = generate(str(tmp_path / 'host'), nic=1, virtio=1, state='vfio')
    root = info['root']
    out, runs, changed = run(tmp_path, info)
    assert sorted(runs) == ['copy', 'stat', 'vfio_bind', 'vfio_persist'], runs   # stat + copy: the engine archive
    files = files_below(root)
    assert sorted(files) == sorted([
        FILES['udev_rule'], FILES['modules_load'], FILES['state'], FILES['engine_archive'], FILES['engine_command'],
        FILES['reapply_unit'], FILES['unit_wants_link'], FILES['kernel_hook_install']]), files
    assert files[FILES['unit_wants_link']] == FILES['reapply_unit']
    with open(os.path.join(root, FILES['udev_rule'].lstrip('/'))) as f:
        rules = f.read()
    for addr, driver in info['vfio_drivers'].items():
        assert 'KERNEL=="%s"' % addr in rules and 'ATTR{driver_override}="%s"' % driver in rules
    with open(os.path.join(root, FILES['state'].lstrip('/'))) as f:
        state = json.load(f)
    assert sorted(d['address'] for d in state['devices']) == sorted(info['devices'])
    # the handlers were notified but have nothing to do: no udevd, no initramfs tool in the tree
    assert re.search(r'RUNNING HANDLER \[hypervisor.vfio.passthrough : Reload the udev rules\].*?\nskipping:', out, re.S)
    # the re-run: two module runs (vfio_bind and vfio_persist, which finds the engine archive
    # the controller's), nothing changed, no file touched
    out, runs, changed = run(tmp_path, info)
    assert (sorted(runs), changed) == (['vfio_bind', 'vfio_persist'], 0), out[-4000:]
    assert files_below(root) == files
    # restore, in check mode: every file would go, none goes
    out, runs, changed = run(tmp_path, info, cli=['--check', '--diff'], passthrough_restore=True)
    block = out[out.index('TASK [hypervisor.vfio.passthrough : Write what survives a reboot through the engine]'):]
    assert block.split('\nTASK ')[0].count('changed: [localhost]') == 1, block[:3000]
    for path in (FILES['udev_rule'], FILES['state'], FILES['engine_dir'], FILES['unit_wants_link']):
        assert '--- before: %s' % path in block, block[:3000]
    assert files_below(root) == files


def test_the_vfs_are_persisted_from_vfio_sriovs_answer_and_restore_drops_them(tmp_path):
    # vfio_persist takes vfio_sriov's registered answer as it is (no SR-IOV rule in the role's
    # Jinja): the PF as vfio_sriov validated it goes into the desired state, and restore (which
    # skips vfio_sriov) persists none. The PF already has its 4 VFs with autoprobe on, so
    # vfio_sriov has nothing to write on the fake tree.
    info = generate(str(tmp_path / 'host'), sriov_pf=1, vfs=4, state='vfio')
    root = info['root']
    pf = [a for a in os.listdir(os.path.join(root, 'sys/bus/pci/devices')) if a not in info['devices']]
    assert len(pf) == 1, pf
    request = [{'pf': pf[0].replace('0000:', ''), 'numvfs': '4', 'drivers_autoprobe': True}]
    out, runs, changed = run(tmp_path, info, passthrough_sriov=request)
    assert 'vfio_sriov' in runs and 'vfio_persist' in runs, runs
    with open(os.path.join(root, FILES['state'].lstrip('/'))) as f:
        state = json.load(f)
    assert state['sriov'] == [{'pf': pf[0], 'numvfs': 4, 'drivers_autoprobe': True}], state
    assert sorted(d['address'] for d in state['devices']) == sorted(info['devices'])
    files = files_below(root)
    out, runs, changed = run(tmp_path, info, passthrough_sriov=request)
    assert changed == 0 and files_below(root) == files, out[-4000:]
    # restore, in check mode: the desired state and the boot unit would go (no device, no PF left)
    out, runs, changed = run(tmp_path, info, cli=['--check', '--diff'], passthrough_sriov=request,
                             passthrough_restore=True)
    assert 'vfio_sriov' not in runs, runs
    block = out[out.index('TASK [hypervisor.vfio.passthrough : Write what survives a reboot through the engine]'):]
    for path in (FILES['state'], FILES['reapply_unit'], FILES['unit_wants_link']):
        assert '--- before: %s' % path in block, block[:3000]
    assert files_below(root) == files

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/persist.py without Ansible (the core as the managed host's Python 3.9 runs it):
the pure plan value, the initramfs-tools block, the executor on a fake root and its rollback.
The module's own tests (check mode, diff, re-runs) are tests/unit/plugins/modules/test_persist_module.py."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils import persist

F = persist.FILES
ROWS = [{'address': '0000:00:05.0', 'state': 'vfio', 'vendor': '8086', 'device': '10d3', 'driver_after': 'vfio-pci',
         'module': 'vfio_pci'},
        {'address': '0000:00:06.0', 'state': 'host', 'vendor': '8086', 'device': '10d3', 'driver_after': 'e1000e',
         'module': None}]
DESIRED = [{'address': '0000:00:05.0', 'vendor': '8086', 'device': '10d3', 'driver': None}]


def test_the_plan_value_is_pure_and_complete():
    a = persist.desired_files(ROWS, DESIRED, [], {'initramfs': 'update-initramfs'}, postinst_dir=False)
    b = persist.desired_files(ROWS, DESIRED, [], {'initramfs': 'update-initramfs'}, postinst_dir=False)
    assert a == b and a['persist'] and a['boot_engine']
    assert sorted(a['files']) == sorted([F['udev_rule'], F['modules_load'], F['state'], F['engine_command'],
                                         F['reapply_unit'], F['kernel_hook_install']])
    assert a['links'] == {F['unit_wants_link']: F['reapply_unit']}
    assert a['block'] == (F['initramfs_modules'], 'vfio_pci')
    assert json.loads(a['files'][F['state']][0])['devices'] == DESIRED
    assert not any('0000:00:06.0' in content for content, mode in a['files'].values())
    # nothing for VFIO, no PF: everything goes
    gone = persist.desired_files([dict(ROWS[0], state='host')], [], [], {'initramfs': 'update-initramfs'})
    assert (gone['files'], gone['links'], gone['block']) == ({}, {}, (F['initramfs_modules'], None))
    assert F['engine_dir'] in gone['absent'] and F['udev_rule'] in gone['absent']


@pytest.mark.parametrize('old, block, new', [
    ('', 'vfio_pci', '# BEGIN M\nvfio_pci\n# END M\n'),
    ('raid1', 'vfio_pci', 'raid1\n# BEGIN M\nvfio_pci\n# END M\n'),
    ('a\n# BEGIN M\nold\n# END M\nb\n', 'vfio_pci\nx', 'a\n# BEGIN M\nvfio_pci\nx\n# END M\nb\n'),
    ('a\n# BEGIN M\nold\n# END M\nb\n', None, 'a\nb\n'),
    ('a\n', None, 'a\n'),
])
def test_the_initramfs_tools_block_as_blockinfile_writes_it(old, block, new):
    marker = persist.BLOCK_MARKER.format(mark='{0}')
    expect = new.replace('# BEGIN M', marker.format('BEGIN')).replace('# END M', marker.format('END'))
    given = old.replace('# BEGIN M', marker.format('BEGIN')).replace('# END M', marker.format('END'))
    assert persist.block_text(given, block) == expect


def test_apply_then_nothing_left_to_do_and_rollback_on_failure(tmp_path, monkeypatch):
    root = str(tmp_path)
    want = persist.desired_files(ROWS, DESIRED, [], {})
    changes, follow = persist.plan_persistence(want, root)
    assert follow == set(['udev_reload', 'initramfs_regenerate', 'daemon_reload'])
    persist.apply_persistence(changes, root)
    assert persist.plan_persistence(want, root) == ([], set())
    with open(os.path.join(root, F['udev_rule'].lstrip('/'))) as f:
        before = f.read()
    # a second device: the unit and the command stay, the rule and the state change; the state
    # (written after the rule, in path order) fails
    rows = ROWS + [{'address': '0000:00:07.0', 'state': 'vfio', 'vendor': '8086', 'device': '10d3',
                    'driver_after': 'vfio-pci', 'module': 'vfio_pci'}]
    want2 = persist.desired_files(rows, DESIRED + [dict(DESIRED[0], address='0000:00:07.0')], [], {})
    changes, dummy = persist.plan_persistence(want2, root)
    assert sorted(c['path'] for c in changes) == sorted([F['state'], F['udev_rule']])
    real = persist.write_atomic

    def write(path, content, mode):
        if path.endswith(F['udev_rule']):
            raise OSError(30, 'Read-only file system')
        return real(path, content, mode)
    monkeypatch.setattr(persist, 'write_atomic', write)
    with pytest.raises(persist.PersistError) as e:
        persist.apply_persistence(changes, root)
    assert 'cannot write %s: Read-only file system' % F['udev_rule'] in str(e.value)
    assert 'put back (%s)' % F['state'] in str(e.value)
    monkeypatch.setattr(persist, 'write_atomic', real)
    with open(os.path.join(root, F['udev_rule'].lstrip('/'))) as f:
        assert f.read() == before
    assert persist.plan_persistence(want, root) == ([], set())     # the host is as the first run left it

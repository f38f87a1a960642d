# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""vfio_persist on fake roots (rootfs_path): the files it writes from a real vfio_bind answer
(the engine in check mode on a FakeHost), re-runs, removal, check mode, diff, and a failing write."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils import persist
from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import parse_state
from ansible_collections.hypervisor.vfio.plugins.modules import vfio_persist, vfio_sriov
from ansible_collections.hypervisor.vfio.tests.unit.fakesys import FakeHost, FakeKernel, bind_on
from ansible_collections.hypervisor.vfio.tests.unit.plugins.modules.module_runner import path_args, run_module

F = persist.FILES
SRIOV = [{'pf': '0000:3b:00.0', 'numvfs': 4, 'drivers_autoprobe': False}]


@pytest.fixture
def bind(tmp_path):
    """vfio_bind's answer (check mode) for two devices to VFIO, one pinned, and one given back."""
    h = FakeHost(tmp_path / 'host')
    h.add_modules('vfio_pci', 'virtio_vfio_pci', 'e1000e')
    h.add_device('0000:00:04.0', '1af4', '1041', driver='virtio_vfio_pci', override='virtio_vfio_pci')
    h.add_device('0000:00:05.0', '8086', '10d3', driver='e1000e')
    h.add_device('0000:00:06.0', '8086', '10d3', driver='vfio-pci', override='vfio-pci')
    result = bind_on(h, FakeKernel(h), check_mode=True, devices=[
        '0000:00:05.0', {'address': '0000:00:04.0', 'driver': 'virtio_vfio_pci'},
        {'address': '0000:00:06.0', 'state': 'host'}])
    return {'devices': result['devices'], 'desired': result['desired']}


@pytest.fixture
def root(tmp_path):
    r = tmp_path / 'root'
    (r / 'etc/kernel/postinst.d').mkdir(parents=True)
    (r / 'etc/initramfs-tools').mkdir(parents=True)
    (r / 'etc/initramfs-tools/modules').write_text('# List of modules\nraid1\n')
    return r


def persist_run(capsys, root, bind, check_mode=False, diff=False, **kw):
    args = dict(bind=bind, sriov=SRIOV, rootfs_path=str(root), initramfs='update-initramfs')
    args.update(kw)
    return run_module(vfio_persist, args, capsys, check_mode=check_mode, diff=diff)


def tree(root):
    """Every file and link below root: path -> (content or link target, mode)."""
    out = {}
    for d, dirs, files in os.walk(str(root)):
        for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, name)
            rel = '/' + os.path.relpath(p, str(root))
            if os.path.islink(p):
                out[rel] = ('-> ' + os.readlink(p), None)
            else:
                with open(p) as f:
                    out[rel] = (f.read(), stat.S_IMODE(os.stat(p).st_mode))
    return out


def test_first_write_then_rerun_changes_nothing(capsys, root, bind):
    out = persist_run(capsys, root, bind)
    assert out['changed'] and not out.get('failed'), out
    assert out['persist'] and out['boot_engine'] and out['initramfs_regenerate']
    assert out['udev_reload'] is False     # no udevd runs on this root
    assert out['daemon_reload'] is False   # not the real root: systemd is never asked
    files = tree(root)
    rules = [x for x in files[F['udev_rule']][0].splitlines() if x and not x.startswith('#')]
    assert rules == [
        'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:00:04.0", ATTR{vendor}=="0x1af4", ATTR{device}=="0x1041", '
        'ATTR{driver_override}="virtio_vfio_pci", RUN{builtin}+="kmod load virtio_vfio_pci"',
        'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="0000:00:05.0", ATTR{vendor}=="0x8086", ATTR{device}=="0x10d3", '
        'ATTR{driver_override}="vfio-pci", RUN{builtin}+="kmod load vfio_pci"']
    assert files[F['modules_load']][0].endswith('driver_override names it.\nvfio_pci\nvirtio_vfio_pci\n')
    assert files['/etc/initramfs-tools/modules'][0] == (
        '# List of modules\nraid1\n'
        '# BEGIN hypervisor.vfio.passthrough: VFIO modules for early binding\nvfio_pci\nvirtio_vfio_pci\n'
        '# END hypervisor.vfio.passthrough: VFIO modules for early binding\n')
    state = json.loads(files[F['state']][0])
    assert state['devices'] == bind['desired']['devices'] and state['sriov'] == SRIOV
    assert parse_state(state)['devices'][0]['driver'] == 'virtio_vfio_pci'
    assert files[F['engine_command']][1] == 0o755 and files[F['kernel_hook_postinst']][1] == 0o755
    assert files[F['reapply_unit']][1] == 0o644
    assert files[F['unit_wants_link']] == ('-> ' + F['reapply_unit'], None)
    assert F['dracut_conf'] not in files and F['kernel_hook_install'] not in files
    assert os.path.isdir(str(root) + F['engine_dir'])
    assert not any('0000:00:06.0' in text for text, mode in files.values())
    assert not [n for n in files if '.hypervisor-vfio-' in n]     # no temporary file left
    again = persist_run(capsys, root, bind)
    assert again['changed'] is False and again['files'] == [], again
    assert not again['udev_reload'] and not again['initramfs_regenerate']
    assert tree(root) == files


def test_a_device_dropped_leaves_every_file(capsys, root, bind):
    persist_run(capsys, root, bind)
    one = dict(bind, devices=[d for d in bind['devices'] if d['address'] != '0000:00:04.0'])
    out = persist_run(capsys, root, one)
    assert out['changed']
    changed = sorted(f['path'] for f in out['files'])
    assert changed == sorted([F['udev_rule'], F['modules_load'], '/etc/initramfs-tools/modules'])
    text = tree(root)
    assert '0000:00:04.0' not in text[F['udev_rule']][0] and 'virtio_vfio_pci' not in text[F['modules_load']][0]


def test_restore_removes_everything_and_keeps_foreign_lines(capsys, root, bind):
    persist_run(capsys, root, bind)
    (root / 'run/udev').mkdir(parents=True)
    (root / 'run/udev/control').write_text('')     # udevd runs: its rules are reloaded
    # a file of an earlier version of the role
    (root / 'usr/local/lib/hypervisor-vfio/ansible_collections/x').mkdir(parents=True)
    back = dict(bind, devices=[dict(d, state='host') for d in bind['devices']])
    out = persist_run(capsys, root, back, sriov=[])
    assert out['changed'] and not out['persist'] and not out['boot_engine']
    assert out['udev_reload'] and out['initramfs_regenerate']
    (root / 'run/udev/control').unlink()
    assert tree(root) == {'/etc/initramfs-tools/modules': ('# List of modules\nraid1\n', 0o644)}
    assert not os.path.exists(str(root) + F['engine_dir']) and not os.path.exists(str(root) + '/etc/hypervisor-vfio')
    assert persist_run(capsys, root, back, sriov=[])['changed'] is False


def test_sriov_alone_keeps_the_boot_engine_and_no_device_file(capsys, root):
    out = persist_run(capsys, root, {})
    assert out['changed'] and not out['persist'] and out['boot_engine']
    files = tree(root)
    assert json.loads(files[F['state']][0])['sriov'] == SRIOV
    assert F['udev_rule'] not in files and F['kernel_hook_postinst'] not in files


def test_check_mode_writes_nothing_and_diff_shows_the_content(capsys, root, bind):
    before = tree(root)
    out = persist_run(capsys, root, bind, check_mode=True, diff=True)
    assert out['changed'] and tree(root) == before
    by_path = dict((d['after_header'], d) for d in out['diff'])
    assert 'KERNEL=="0000:00:05.0"' in by_path[F['udev_rule']]['after'] and by_path[F['udev_rule']]['before'] == ''
    assert by_path['/etc/initramfs-tools/modules']['before'] == '# List of modules\nraid1\n'
    assert by_path[F['unit_wants_link']]['after'] == 'link to %s\n' % F['reapply_unit']
    assert sorted(f['path'] for f in out['files']) == sorted(by_path)
    # the plan of check mode is what the run then does
    done = persist_run(capsys, root, bind)
    assert sorted(f['path'] for f in done['files']) == sorted(f['path'] for f in out['files'])
    assert 'diff' not in done       # diff only in diff mode


def test_a_failing_write_puts_back_the_files_already_changed(capsys, monkeypatch, root, bind):
    persist_run(capsys, root, bind)
    before = tree(root)
    # the next run changes the initramfs-tools file, the module list and the udev rule (a device
    # dropped), in that order; the disk is full when the module list is written
    one = dict(bind, devices=[d for d in bind['devices'] if d['address'] != '0000:00:04.0'])
    real = persist.write_atomic
    written = []

    def write(path, content, mode):
        if path.endswith(F['modules_load']):
            # the executor's own temporary file, half written, then the error
            with open(os.path.join(os.path.dirname(path), '.hypervisor-vfio-half'), 'w') as f:
                f.write('vfio')
            os.unlink(os.path.join(os.path.dirname(path), '.hypervisor-vfio-half'))
            raise OSError(28, 'No space left on device')
        written.append(path)
        return real(path, content, mode)
    monkeypatch.setattr(persist, 'write_atomic', write)
    out = persist_run(capsys, root, one)
    assert out['failed'] and 'cannot write /etc/modules-load.d/hypervisor-vfio.conf: No space left' in out['msg'], out
    assert 'every file changed before was put back (/etc/initramfs-tools/modules)' in out['msg'], out
    assert out['failed_path'] == F['modules_load'] and out['changed'] is False
    assert written == [str(root) + '/etc/initramfs-tools/modules'] * 2     # written, then put back
    assert tree(root) == before


def test_write_atomic_leaves_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / 'f.conf'
    path.write_text('old\n')

    def rename(src, dst):
        raise OSError(5, 'Input/output error')
    monkeypatch.setattr(persist.os, 'rename', rename)
    with pytest.raises(OSError):
        persist.write_atomic(str(path), 'new\n', 0o644)
    assert path.read_text() == 'old\n' and os.listdir(str(tmp_path)) == ['f.conf']


def test_bad_input_fails_before_any_write(capsys, root, bind):
    bad = dict(bind, devices=[dict(bind['devices'][0], module=None)])
    out = persist_run(capsys, root, bad)
    assert out['failed'] and 'the vfio_bind row of 0000:00:04.0 has no valid module' in out['msg'], out
    assert 'nothing was changed' in out['msg']
    out = persist_run(capsys, root, bind, sriov=[{'pf': '3b:00.0', 'numvfs': -1}])
    assert out['failed'] and 'sriov[0] (0000:3b:00.0): numvfs must be a number from 0 to 4096, got -1' in out['msg'], out
    out = persist_run(capsys, root, bind, timeout=0)
    assert out['failed'] and 'timeout must be a number of seconds from 1 to 3600, got 0' in out['msg']
    assert tree(root) == {'/etc/initramfs-tools/modules': ('# List of modules\nraid1\n', 0o644)}


def test_dracut_and_kernel_install_hosts(capsys, tmp_path, bind):
    root = tmp_path / 'el'
    root.mkdir()
    out = persist_run(capsys, root, bind, initramfs='dracut')
    assert out['changed'] and out['initramfs_regenerate']
    files = tree(root)
    assert 'force_drivers+=" vfio_pci virtio_vfio_pci "' in files[F['dracut_conf']][0]
    assert F['kernel_hook_install'] in files and F['kernel_hook_postinst'] not in files
    assert '/etc/initramfs-tools/modules' not in files


def test_engine_install_only_when_the_hosts_archive_differs(capsys, root, bind):
    import hashlib
    data = b'PK engine'
    sha1 = hashlib.sha1(data).hexdigest()
    out = persist_run(capsys, root, bind, engine_sha1=sha1)
    assert out['boot_engine'] and out['engine_install']          # not there yet
    archive = root / F['engine_archive'].lstrip('/')
    archive.write_bytes(data)
    archive.chmod(0o644)
    assert persist_run(capsys, root, bind, engine_sha1=sha1)['engine_install'] is False
    archive.chmod(0o600)
    assert persist_run(capsys, root, bind, engine_sha1=sha1)['engine_install'] is True
    archive.chmod(0o644)
    archive.write_bytes(b'PK older engine')
    assert persist_run(capsys, root, bind, engine_sha1=sha1)['engine_install'] is True
    # without a checksum the caller always installs it (its copy is idempotent); without a boot engine never
    assert persist_run(capsys, root, bind)['engine_install'] is True
    assert persist_run(capsys, root, {}, sriov=[], engine_sha1=sha1)['engine_install'] is False


# -- sriov: vfio_sriov's answer taken as it is ----------------------------------------------

def sriov_answer(capsys, tmp_path, pfs):
    """vfio_sriov's result as the role registers it (check mode, return_facts) on a FakeHost with
    two SR-IOV PFs (igb, 7 VFs at most, none yet)."""
    h = FakeHost(tmp_path / 'sriov-host')
    h.add_modules('igb', 'igbvf')
    h.add_device('0000:3b:00.0', '8086', '10c9', driver='igb', sriov_totalvfs=7)
    h.add_device('0000:3c:00.0', '8086', '10c9', driver='igb', sriov_totalvfs=7)
    out = run_module(vfio_sriov, dict(path_args(h), pfs=pfs, lock_file=str(tmp_path / 'sriov.lock'), return_facts=True),
                     capsys, check_mode=True)
    assert not out.get('failed') and out['ansible_facts'], out
    return out


# A skipped task's registered result (the role skips vfio_sriov without SR-IOV, and on restore).
SKIPPED = {'changed': False, 'skipped': True, 'skip_reason': 'Conditional result was False',
           'false_condition': 'passthrough_sriov | length > 0'}


def before(answer, restore=False):
    """What the role's Jinja passed as sriov before the engine took vfio_sriov's answer
    (roles/passthrough/vars/main.yml __passthrough_persist_sriov, now removed):
    [] if passthrough_restore else (__passthrough_sriov_result.desired.sriov | default([]))."""
    return [] if restore else answer.get('desired', {}).get('sriov', [])


@pytest.mark.parametrize('pfs, restore', [
    ([{'pf': '3b:00.0', 'numvfs': '4'}], False),            # short address, count as a string: as validated
    ([{'pf': '0000:3b:00.0', 'numvfs': 2, 'drivers_autoprobe': 'yes'}, {'pf': '0000:3C:00.0', 'numvfs': 0}], False),
    (None, False),                                           # passthrough_sriov empty: the task is skipped
    (None, True),                                            # restore: the task is skipped
], ids=['one-pf', 'two-pfs-autoprobe-and-zero', 'no-sriov', 'restore'])
@pytest.mark.parametrize('with_devices', [True, False], ids=['devices', 'sriov-alone'])
def test_sriov_answer_as_registered_persists_what_the_role_persisted_before(
        capsys, tmp_path, bind, pfs, restore, with_devices):
    answer = SKIPPED if pfs is None else sriov_answer(capsys, tmp_path, pfs)
    devices = bind if with_devices else {}
    roots = []
    for name, sriov in (('now', answer), ('before', before(answer, restore))):
        r = tmp_path / name
        (r / 'etc/kernel/postinst.d').mkdir(parents=True)
        out = persist_run(capsys, r, devices, sriov=sriov)
        assert not out.get('failed'), out
        roots.append(r)
    assert tree(roots[0]) == tree(roots[1])
    files = tree(roots[0])
    if pfs is None:
        assert not with_devices or json.loads(files[F['state']][0])['sriov'] == []
        assert with_devices or files == {}      # nothing to persist: no file at all
    else:
        assert json.loads(files[F['state']][0])['sriov'] == answer['desired']['sriov'] != []
    if pfs:
        # the role's request itself (vfio_sriov's pfs) persists the same: one validation, sriov.parse_pfs
        r = tmp_path / 'request'
        (r / 'etc/kernel/postinst.d').mkdir(parents=True)
        persist_run(capsys, r, devices, sriov=pfs)
        assert tree(r) == files


@pytest.mark.parametrize('sriov, message', [
    ({'failed': True, 'msg': 'vfio_sriov refused before changing anything:\n- 0000:3b:00.0 supports at most 7 VFs'},
     'sriov is the result of a vfio_sriov run that failed (vfio_sriov refused before changing anything:): its PFs '
     'are not persisted'),
    ({'changed': True, 'pfs': []},
     'sriov must be the result of vfio_sriov as registered (with desired.sriov) or a list of {pf, numvfs, '
     'drivers_autoprobe}; got a dict with keys changed, pfs'),
    ({'changed': False, 'desired': {'sriov': [{'pf': 'eth0', 'numvfs': 1}]}},
     'sriov.desired.sriov[0]: pf must be a quoted PCI address such as "0000:3b:00.0", got \'eth0\''),
    ({'desired': {'sriov': {'pf': '0000:3b:00.0'}}}, 'sriov.desired.sriov must be a list of'),
    ([{'pf': '0000:3b:00.0', 'numvfs': 1, 'vfs': 2}], 'sriov[0] has unknown keys vfs'),
    ([{'pf': '0000:3b:00.0', 'numvfs': 1}, {'pf': '3b:00.0', 'numvfs': 2}], 'sriov[1]: 0000:3b:00.0 is listed twice'),
    ('0000:3b:00.0', "sriov must be a list of {pf, numvfs, drivers_autoprobe}, got '0000:3b:00.0'"),
], ids=['failed-run', 'not-a-result', 'bad-desired-pf', 'desired-not-a-list', 'unknown-key', 'twice', 'a-string'])
def test_a_bad_sriov_fails_before_anything_is_read_or_written(capsys, root, bind, sriov, message):
    out = persist_run(capsys, root, bind, sriov=sriov)
    assert out['failed'] and message in out['msg'], out
    assert 'invalid request, nothing was changed' in out['msg'], out
    assert tree(root) == {'/etc/initramfs-tools/modules': ('# List of modules\nraid1\n', 0o644)}

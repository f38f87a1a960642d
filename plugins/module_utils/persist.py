# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What survives a reboot: the files the role keeps on a host, planned from what vfio_bind
decided (its per-device result and its ``desired`` devices) and vfio_sriov's desired PFs (taken
from its result as it is: sriov.persisted_pfs), then written by one executor.

:func:`desired_files` is pure: from the engine's answers and the settings it gives every file
(host path -> content and mode), every link, every file or folder to remove and the
initramfs-tools block, with no read of the host. :func:`plan_persistence` compares that with
the host below ``rootfs`` (reads only) and returns the changes, with what follows from them
(udev reload, initramfs regeneration, systemd daemon-reload). :func:`apply_persistence` writes
each file atomically (a temporary file in the same folder, fsync, rename, fsync of the folder,
as the journal is written) and, when one step fails, puts back every file it already changed:
no file is ever half written, and a failed run leaves the old files.

The udev rule, the module list, the dracut configuration and the desired state (state.json,
read back by desired.py) are made here only; the role has no template of them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile

from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import DEFAULT_PATH as STATE_PATH
from ansible_collections.hypervisor.vfio.plugins.module_utils.desired import FORMAT, StateError, parse_state
from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import EngineFailed
from ansible_collections.hypervisor.vfio.plugins.module_utils.journal import fsync_dir
from ansible_collections.hypervisor.vfio.plugins.module_utils.sriov import persisted_pfs

# The files the role owns on the managed host. Fixed names: restore and re-runs must find them.
FILES = {
    'udev_rule': '/etc/udev/rules.d/40-hypervisor-vfio.rules',
    'modules_load': '/etc/modules-load.d/hypervisor-vfio.conf',
    'state': STATE_PATH,
    'engine_dir': '/usr/local/lib/hypervisor-vfio',
    'engine_archive': '/usr/local/lib/hypervisor-vfio/engine.zip',
    'engine_command': '/usr/local/sbin/vfio-passthrough',
    'reapply_unit': '/etc/systemd/system/hypervisor-vfio-reapply.service',
    'unit_wants_link': '/etc/systemd/system/multi-user.target.wants/hypervisor-vfio-reapply.service',
    'initramfs_modules': '/etc/initramfs-tools/modules',
    'dracut_conf': '/etc/dracut.conf.d/50-hypervisor-vfio.conf',
    # Debian/Ubuntu run /etc/kernel/postinst.d for a new kernel ('zzz' orders it after the
    # initramfs and systemd-boot hooks); elsewhere kernel-install runs /etc/kernel/install.d.
    'kernel_hook_postinst': '/etc/kernel/postinst.d/zzz-hypervisor-vfio',
    'kernel_hook_install': '/etc/kernel/install.d/95-hypervisor-vfio.install',
}
# What earlier versions of the role installed instead (a shell re-apply script and its
# configuration, the engine as a package folder): removed on every run.
LEGACY = ('/usr/local/libexec/hypervisor-vfio-reapply', '/etc/hypervisor-vfio/passthrough.conf',
          '/usr/local/lib/hypervisor-vfio/ansible_collections')
INITRAMFS_TOOLS = ('update-initramfs', 'dracut', 'none')
UDEV_CONTROL = '/run/udev/control'
BLOCK_MARKER = '# {mark} hypervisor.vfio.passthrough: VFIO modules for early binding'
HEADER = '# Ansible managed (role hypervisor.vfio.passthrough)\n'
DEFAULTS = {'iommu_group': 'strict', 'timeout': 10, 'boot_lock_timeout': 30, 'boot_timeout': 120,
            'initramfs': 'none', 'boot_reapply': True, 'engine_python': '/usr/bin/python3'}
# What must follow a change of a file: reload the udev rules, rebuild the initramfs, let
# systemd read its units again.
FOLLOW_UP = {
    FILES['udev_rule']: ('udev_reload', 'initramfs_regenerate'),
    FILES['initramfs_modules']: ('initramfs_regenerate',),
    FILES['dracut_conf']: ('initramfs_regenerate',),
    FILES['reapply_unit']: ('daemon_reload',),
    FILES['unit_wants_link']: ('daemon_reload',),
}


class PersistError(EngineFailed):
    """A persistence file could not be written; every file changed before was put back
    (``result``: whether anything is left changed, and the paths)."""


# -- the contents (pure) -------------------------------------------------------------

def vfio_rows(devices):
    """The rows of vfio_bind's result meant for VFIO (those persisted)."""
    return [d for d in devices or () if isinstance(d, dict) and d.get('state') == 'vfio']


def vfio_modules(rows):
    return sorted(set(d['module'] for d in rows if d.get('module')))


def udev_rules(rows):
    out = [HEADER,
           '#\n',
           '# Sets driver_override on each device meant for a VM as the device is added, before any\n',
           '# host driver can probe it, and loads its VFIO module. Debian\'s initramfs copies the rules\n',
           '# of /etc/udev/rules.d (dracut: see /etc/dracut.conf.d), so this also wins against a host\n',
           '# driver that sits in the initramfs. The vendor and device IDs are matched too: after a\n',
           '# hardware change the address may name another device, which is then left alone.\n']
    for d in sorted(rows, key=lambda d: d['address']):
        line = 'ACTION=="add", SUBSYSTEM=="pci", KERNEL=="%s"' % d['address']
        if d.get('vendor'):
            line += ', ATTR{vendor}=="0x%s"' % d['vendor']
        if d.get('device'):
            line += ', ATTR{device}=="0x%s"' % d['device']
        line += ', ATTR{driver_override}="%s", RUN{builtin}+="kmod load %s"\n' % (d['driver_after'], d['module'])
        out.append(line)
    return ''.join(out)


def modules_load(modules):
    return ''.join([HEADER,
                    '# VFIO drivers of the devices handed to VMs: loading one binds every device whose\n',
                    '# driver_override names it.\n'] + ['%s\n' % m for m in modules])


def dracut_conf(modules):
    return ''.join([HEADER,
                    '# Load the VFIO drivers early and carry the udev rule that sets driver_override into the\n',
                    '# initramfs, so a host driver in the initramfs cannot take the devices first.\n',
                    'force_drivers+=" %s "\n' % ' '.join(modules),
                    'install_items+=" %s "\n' % FILES['udev_rule']])


def state_json(settings, desired_devices, sriov):
    """The desired state the boot unit and vfio-passthrough apply (desired.py reads it): the
    engine's own answers as they are, vfio_bind's ``desired`` devices and vfio_sriov's PFs."""
    doc = {'format': FORMAT, 'written_by': 'hypervisor.vfio.passthrough', 'iommu_group': settings['iommu_group'],
           'timeout': int(settings['timeout']), 'lock_timeout': int(settings['boot_lock_timeout']),
           'devices': list(desired_devices or []), 'sriov': list(sriov or [])}
    return json.dumps(doc, indent=1, sort_keys=True, separators=(',', ': ')) + '\n'


def engine_command(settings, archive=None):
    """The vfio-passthrough command (``archive``: where the engine zip is, FILES' by default)."""
    archive = archive or FILES['engine_archive']
    return ''.join([
        '#!/bin/sh\n', HEADER, '#\n',
        '# vfio-passthrough: show and apply the desired VFIO state of this host (see --help).\n',
        '# The collection\'s engine (hypervisor.vfio plugins/module_utils, standard library only) is\n',
        '# installed as %s; the modules and this command run the same code.\n' % archive,
        '# Isolated mode (-I): no PYTHONPATH, no user site, nothing from the working directory.\n',
        'exec %s -I -c \'import sys\n' % settings['engine_python'],
        'sys.path.insert(0, "%s")\n' % archive,
        'from ansible_collections.hypervisor.vfio.plugins.module_utils.cli import main\n',
        'sys.exit(main())\' "$@"\n'])


def reapply_unit(settings):
    state = FILES['state']
    return ''.join([
        HEADER,
        '[Unit]\n',
        'Description=Apply the VFIO bindings and SR-IOV VFs of devices handed to VMs\n',
        'Documentation=file://%s\n' % state,
        '# After udev has added the devices and loaded their drivers (a host driver may have taken a\n',
        '# device first), before the host network is configured and before VMs start. Every write of\n',
        '# the engine is bounded (%s s), and so is its wait for the host lock\n' % settings['timeout'],
        '# (%s s): a write that blocks (a device held in the kernel) ends the\n' % settings['boot_lock_timeout'],
        '# run well within TimeoutStartSec, and network-pre.target (ordering only, not a requirement)\n',
        '# goes on whether this unit succeeded or failed.\n',
        'Wants=systemd-udev-settle.service network-pre.target\n',
        'After=systemd-udev-settle.service systemd-modules-load.service\n',
        'Before=network-pre.target libvirtd.service virtqemud.service\n',
        'ConditionPathExists=%s\n' % state,
        '\n',
        '[Service]\n',
        'Type=oneshot\n',
        'RemainAfterExit=yes\n',
        'ExecStart=%s apply --state %s\n' % (FILES['engine_command'], state),
        'TimeoutStartSec=%s\n' % settings['boot_timeout'],
        '# A write still blocked in the kernel is left to its own child process (the engine\'s bounded\n',
        '# write); only the engine itself is stopped, so a failure never waits for that child.\n',
        'KillMode=process\n',
        '\n',
        '[Install]\n',
        'WantedBy=multi-user.target\n'])


def kernel_hook(command=None, state=None):
    """The kernel hook (``command`` and ``state``: the engine command and state file, FILES' by default)."""
    command, state = command or FILES['engine_command'], state or FILES['state']
    return ''.join([
        '#!/bin/sh\n', HEADER,
        '# Checks a newly installed kernel for the VFIO driver of every device persisted in\n',
        '# %s, so a kernel upgrade that drops a variant driver is noticed\n' % state,
        '# when the package is installed, not when a VM fails to start after the reboot. The check is\n',
        '# the engine\'s (vfio-passthrough kernel: the driver pinned, or the variant that kernel\'s\n',
        '# modules.alias resolves). Called as /etc/kernel/postinst.d hook (<version> <image>) or as\n',
        '# kernel-install plugin (add <version> <boot dir> <image>). It only reports: a kernel\n',
        '# installation never fails here.\n',
        'set -u\n',
        'case "${1:-}" in\n',
        '    add) version="${2:-}" ;;\n',
        '    remove) exit 0 ;;\n',
        '    *) version="${1:-}" ;;\n',
        'esac\n',
        '[ -n "$version" ] || exit 0\n',
        'case "$version" in */*|.|..) exit 0 ;; esac\n',
        '\n',
        'out=$(%s kernel "$version" --state %s \\\n' % (command, state),
        '      --modules-dir "${HYPERVISOR_VFIO_MODULES_DIR:-/lib/modules}" 2>&1)\n',
        'rc=$?\n',
        '[ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || out="kernel $version: the VFIO modules could not be checked '
        '(exit $rc): $out"\n',
        'printf \'%s\\n\' "$out" | while IFS= read -r line; do\n',
        '    [ -n "$line" ] || continue\n',
        '    echo "hypervisor-vfio: $line" >&2\n',
        '    if command -v logger >/dev/null 2>&1; then logger -t hypervisor-vfio -- "$line"; fi\n',
        'done\n',
        'exit 0\n'])


def check_settings(settings):
    """The settings with their defaults; a bad one raises ValueError before anything is read."""
    s = dict(DEFAULTS)
    s.update((k, v) for k, v in (settings or {}).items() if v is not None)
    for key in ('timeout', 'boot_lock_timeout', 'boot_timeout'):
        if isinstance(s[key], bool) or not isinstance(s[key], int) or not 1 <= s[key] <= 3600:
            raise ValueError('%s must be a number of seconds from 1 to 3600, got %r' % (key, s[key]))
    if s['initramfs'] not in INITRAMFS_TOOLS:
        raise ValueError('initramfs must be one of %s, got %r' % (', '.join(INITRAMFS_TOOLS), s['initramfs']))
    if not isinstance(s['engine_python'], str) or not s['engine_python'].startswith('/') or \
            any(c in s['engine_python'] for c in ' \'"\n\t$`\\'):
        raise ValueError('engine_python must be an absolute path without spaces or quotes, got %r'
                         % (s['engine_python'],))
    return s


def _check_rows(rows):
    for d in rows:
        for key in ('address', 'driver_after', 'module'):
            value = d.get(key)
            if not isinstance(value, str) or not value or any(c in value for c in ' "\n\t\\'):
                raise ValueError('devices: the vfio_bind row of %s has no valid %s (%r): pass vfio_bind\'s '
                                 '"devices" return value as it is' % (d.get('address', '?'), key, value))


def desired_files(devices, desired_devices, sriov, settings, postinst_dir=True):
    """The whole persistence of a host, from the engine's answers; pure (reads nothing).

    ``devices`` is vfio_bind's ``devices`` return value, ``desired_devices`` its
    ``desired.devices``, ``sriov`` vfio_sriov's ``desired.sriov``; ``postinst_dir`` whether the
    host has /etc/kernel/postinst.d (where the kernel hook goes; else kernel-install's folder).
    Returns ``{'files': {path: (content, mode)}, 'links': {path: target}, 'dirs': [path],
    'absent': [path], 'block': (path, text or None) or None, 'boot_engine': bool,
    'persist': bool}`` with host paths.
    """
    s = check_settings(settings)
    rows = vfio_rows(devices)
    _check_rows(rows)
    modules = vfio_modules(rows)
    persist = bool(rows)
    boot_engine = bool(s['boot_reapply']) and (persist or bool(sriov))
    files, links, dirs, absent = {}, {}, [], []
    if persist:
        files[FILES['udev_rule']] = (udev_rules(rows), 0o644)
        files[FILES['modules_load']] = (modules_load(modules), 0o644)
        if s['initramfs'] == 'dracut':
            files[FILES['dracut_conf']] = (dracut_conf(modules), 0o644)
    else:
        absent += [FILES['udev_rule'], FILES['modules_load'], FILES['dracut_conf'], FILES['kernel_hook_postinst'],
                   FILES['kernel_hook_install']]
    block = None
    if s['initramfs'] == 'update-initramfs':
        block = (FILES['initramfs_modules'], '\n'.join(modules) if persist else None)
    if boot_engine:
        dirs += [os.path.dirname(FILES['state']), FILES['engine_dir']]
        state = state_json(s, desired_devices, sriov)
        try:        # what the boot reads back: refused here, before any write, when it could not
            parse_state(json.loads(state))
        except StateError as e:
            raise ValueError('the desired state made of bind.desired.devices and sriov is not valid: %s' % e)
        files[FILES['state']] = (state, 0o644)
        files[FILES['engine_command']] = (engine_command(s), 0o755)
        files[FILES['reapply_unit']] = (reapply_unit(s), 0o644)
        # exactly what `systemctl enable` makes of WantedBy=multi-user.target
        links[FILES['unit_wants_link']] = FILES['reapply_unit']
        if persist:
            hook = FILES['kernel_hook_postinst'] if postinst_dir else FILES['kernel_hook_install']
            files[hook] = (kernel_hook(), 0o755)
        absent += list(LEGACY)
    else:
        absent += [FILES['unit_wants_link'], FILES['reapply_unit'], FILES['state'], os.path.dirname(FILES['state']),
                   FILES['engine_command'], FILES['engine_dir']] + list(LEGACY)
    return {'files': files, 'links': links, 'dirs': dirs, 'absent': absent, 'block': block,
            'boot_engine': boot_engine, 'persist': persist}


# -- the plan: the desired files against the host (reads only) ------------------------

def under(rootfs, path):
    return os.path.join(rootfs or '/', path.lstrip('/'))


def _read(path):
    """The file's text, or None when there is none (a folder or a link counts as something else)."""
    try:
        st = os.lstat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None, None
        raise
    if not stat.S_ISREG(st.st_mode):
        return False, st
    with open(path, 'rb') as f:
        return f.read().decode('utf-8', 'replace'), st


def block_text(old, block):
    """initramfs-tools' modules file with the role's marked block set (block text) or removed (None),
    as ansible.builtin.blockinfile does it (the block goes at the end when it is not there yet)."""
    begin, end = BLOCK_MARKER.format(mark='BEGIN'), BLOCK_MARKER.format(mark='END')
    lines = (old or '').splitlines(True)
    stripped = [line.rstrip('\r\n') for line in lines]
    start = stripped.index(begin) if begin in stripped else None
    stop = None
    if start is not None:
        stop = stripped.index(end, start) if end in stripped[start:] else None
    new_block = [] if block is None else [begin + '\n'] + [line + '\n' for line in block.splitlines()] + [end + '\n']
    if start is not None and stop is not None:
        lines = lines[:start] + new_block + lines[stop + 1:]
    elif new_block:
        if lines and not lines[-1].endswith('\n'):
            lines[-1] += '\n'
        lines += new_block
    return ''.join(lines)


def plan_persistence(want, rootfs='/'):
    """The changes that bring the host below ``rootfs`` to ``want`` (desired_files): a list of
    ``{'path', 'kind' (file, link, absent, dir), 'before', 'after', 'mode'}`` for what differs only,
    and the follow-ups ({udev_reload, initramfs_regenerate, daemon_reload})."""
    changes = []
    for d in want['dirs']:
        if not os.path.isdir(under(rootfs, d)):
            changes.append({'path': d, 'kind': 'dir', 'before': None, 'after': '', 'mode': 0o755})
    files = dict(want['files'])
    if want['block'] is not None:
        path, block = want['block']
        old, st = _read(under(rootfs, path))
        if old is False:
            raise ValueError('%s is not a regular file: the VFIO modules cannot be put into it' % path)
        new = block_text(old, block)
        if new != (old or ''):
            files[path] = (new, stat.S_IMODE(st.st_mode) if st else 0o644)
    for path in sorted(files):
        content, mode = files[path]
        old, st = _read(under(rootfs, path))
        if old is False:
            if stat.S_ISDIR(st.st_mode):
                raise ValueError('%s is a folder: remove it, the role writes a file there' % path)
            old = None  # a link or another kind of file: replaced by the file
        if old == content and stat.S_IMODE(st.st_mode) == mode:
            continue
        changes.append({'path': path, 'kind': 'file', 'before': old, 'after': content, 'mode': mode})
    for path, target in sorted(want['links'].items()):
        real = under(rootfs, path)
        try:
            now = os.readlink(real)
        except OSError:
            now = None
        if now != target:
            changes.append({'path': path, 'kind': 'link', 'before': now, 'after': target, 'mode': None})
    for path in want['absent']:
        real = under(rootfs, path)
        if os.path.lexists(real):
            old, st = _read(real)
            if old is False and stat.S_ISLNK(st.st_mode):
                old = os.readlink(real)
            changes.append({'path': path, 'kind': 'absent', 'before': old if isinstance(old, str) else None,
                            'after': None, 'mode': None, 'folder': bool(old is False and stat.S_ISDIR(st.st_mode))})
    follow = set()
    for c in changes:
        follow.update(FOLLOW_UP.get(c['path'], ()))
    return changes, follow


def engine_installed(rootfs, sha1):
    """Whether the host's engine archive is the one whose SHA-1 the caller gives (a regular file
    of mode 0644, root's when this run is root's); without a SHA-1 nothing is known (False: the caller installs it)."""
    if not sha1:
        return False
    path = under(rootfs, FILES['engine_archive'])
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != 0o644 or \
                (os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0)):
            return False
        h = hashlib.sha1()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 16), b''):
                h.update(chunk)
    except (OSError, IOError):
        return False
    return h.hexdigest() == sha1.lower()


def diff_of(changes):
    """Ansible's diff list: one entry per changed path."""
    out = []
    for c in changes:
        before = c['before'] if c['kind'] != 'link' else ('link to %s\n' % c['before'] if c['before'] else '')
        after = c['after'] if c['kind'] != 'link' else 'link to %s\n' % c['after']
        if c['kind'] == 'dir':
            before, after = '', 'folder\n'
        elif c['kind'] == 'absent':
            after = ''
            if c.get('folder'):
                before = 'folder (removed with what it holds)\n'
        out.append({'before_header': c['path'], 'after_header': c['path'], 'before': before or '',
                    'after': after or ''})
    return out


# -- the executor ---------------------------------------------------------------------

def _makedirs(path):
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        os.chmod(d, 0o755)
    return missing


def write_atomic(path, content, mode):
    """Replace ``path`` with ``content``: a temporary file in its folder, fsync, rename, fsync
    of the folder. Root owns the file when the run is root's."""
    folder = os.path.dirname(path)
    _makedirs(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.hypervisor-vfio-')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(content.encode('utf-8'))
            f.flush()
            os.fchmod(f.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(folder)


def _link_atomic(path, target):
    folder = os.path.dirname(path)
    _makedirs(folder)
    tmp = os.path.join(folder, '.hypervisor-vfio-link-%d' % os.getpid())
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(folder)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
    fsync_dir(os.path.dirname(path))


def _undo(real, change):
    """Put one path back as it was before this run."""
    if change['kind'] == 'dir':
        os.rmdir(real)
    elif change['before'] is None:
        if os.path.lexists(real):
            os.unlink(real)
    elif change['kind'] == 'link' or (change['kind'] == 'absent' and change.get('was_link')):
        _link_atomic(real, change['before'])
    else:
        write_atomic(real, change['before'], change.get('mode_before') or 0o644)


def apply_persistence(changes, rootfs='/'):
    """Make the changes, folders first, removals last. Returns the paths changed. When a step
    fails, every file already changed is put back and PersistError names the path and the error
    (a removed folder's contents are removed only after every file is written)."""
    done = []
    order = sorted(changes, key=lambda c: ({'dir': 0, 'file': 1, 'link': 2, 'absent': 3}[c['kind']],
                                           c['kind'] == 'absent' and c.get('folder', False)))
    for c in order:
        real = under(rootfs, c['path'])
        try:
            st = os.lstat(real) if os.path.lexists(real) else None
            c['mode_before'] = stat.S_IMODE(st.st_mode) if st else None
            c['was_link'] = bool(st and stat.S_ISLNK(st.st_mode))
            if c['kind'] == 'dir':
                _makedirs(real)
            elif c['kind'] == 'file':
                write_atomic(real, c['after'], c['mode'])
            elif c['kind'] == 'link':
                _link_atomic(real, c['after'])
            else:
                _remove(real)
        except (OSError, IOError) as e:
            undo_errors = []
            for prev in reversed(done):
                if prev['kind'] == 'absent' and prev.get('folder'):
                    continue
                try:
                    _undo(under(rootfs, prev['path']), prev)
                except (OSError, IOError) as e2:
                    undo_errors.append('%s: %s' % (prev['path'], e2))
            verb = {'dir': 'create the folder', 'file': 'write', 'link': 'link', 'absent': 'remove'}[c['kind']]
            msg = 'vfio_persist: cannot %s %s: %s' % (verb, c['path'], e.strerror or e)
            if undo_errors:
                msg += '; putting back the files already changed failed too (%s): check them by hand' % \
                    '; '.join(undo_errors)
            else:
                msg += '; every file changed before was put back (%s), nothing else was changed' % \
                    (', '.join(p['path'] for p in done) or 'none')
            raise PersistError(msg, {'changed': bool(undo_errors), 'failed_path': c['path'],
                                     'files': [{'path': p['path'], 'action': ACTIONS[p['kind']]} for p in done]})
        done.append(c)
    return [c['path'] for c in done]


# -- one run: what the module vfio_persist does ---------------------------------------

ACTIONS = {'dir': 'create', 'file': 'write', 'link': 'link', 'absent': 'remove'}


def run_persist(params, run, check_mode=False, systemd_dir='/run/systemd/system'):
    """Plan, then (not in check mode) write, the persistence of a host; the module's result.

    ``params``: ``bind`` (vfio_bind's result, or its ``devices`` and ``desired``), ``sriov``
    (vfio_sriov's result, or its ``desired.sriov``: sriov.persisted_pfs), the settings of
    DEFAULTS and ``rootfs_path``. ``run``
    executes an argv list (systemctl daemon-reload, only for the real root of a host booted
    with systemd). Bad input raises ValueError before anything is read; a failed write raises
    PersistError after every file changed before was put back.
    """
    rootfs = params.get('rootfs_path') or '/'
    bind = params.get('bind') or {}
    if not isinstance(bind, dict) or not isinstance(bind.get('devices', []), list):
        raise ValueError('bind must be vfio_bind\'s result (a dict with its "devices" list)')
    desired = bind.get('desired') or {}
    desired_devices = desired.get('devices', []) if isinstance(desired, dict) else None
    if not isinstance(desired_devices, list):
        raise ValueError('bind.desired.devices must be the list vfio_bind returns')
    # vfio_sriov's answer as it is: its desired PFs, none when it was skipped
    sriov = persisted_pfs(params.get('sriov'))
    settings = dict((k, params.get(k)) for k in DEFAULTS)
    want = desired_files(bind.get('devices') or [], desired_devices, sriov, settings,
                         postinst_dir=os.path.isdir(under(rootfs, os.path.dirname(FILES['kernel_hook_postinst']))))
    try:
        changes, follow = plan_persistence(want, rootfs)
    except (OSError, IOError) as e:
        raise ValueError('cannot read %s: %s' % (e.filename or rootfs, e.strerror or e))
    result = {'changed': bool(changes), 'persist': want['persist'], 'boot_engine': want['boot_engine'],
              'engine_install': want['boot_engine'] and not engine_installed(rootfs, params.get('engine_sha1')),
              'files': [{'path': c['path'], 'action': ACTIONS[c['kind']]} for c in changes],
              # udevd runs (its rules can be reloaded) only where its control socket exists: not in a
              # container, a chroot or the virtme lab
              'udev_reload': 'udev_reload' in follow and os.path.exists(under(rootfs, UDEV_CONTROL)),
              'initramfs_regenerate': 'initramfs_regenerate' in follow,
              'daemon_reload': False, 'diff': diff_of(changes)}
    if check_mode or not changes:
        return result
    apply_persistence(changes, rootfs)
    # systemd reads its units again (the boot unit written, enabled or removed), when this is
    # the host's own root and systemd runs it (not a container, a chroot or the virtme lab)
    if 'daemon_reload' in follow and os.path.realpath(rootfs) == '/' and os.path.isdir(systemd_dir):
        rc, out, err = run(['systemctl', 'daemon-reload'])
        if rc != 0:
            raise PersistError('vfio_persist: every file is written, but systemctl daemon-reload failed (rc %d): %s; run it by hand'
                               % (rc, (err or out).strip()), dict(result, changed=True))
        result['daemon_reload'] = True
    return result

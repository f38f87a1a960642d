#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A/B of vfio_bind's AnsiballZ process on a re-run (nothing to write), between two checkouts.

    benchmarks/bind_payload.py --a DIR --b DIR [--repeats 15]

Writes one fake host with tools/fakehost.py (16 devices already on their VFIO drivers: 8 e1000e,
6 virtio-net on the variant, a GPU and its audio function) whose module files are a genuine
Debian kernel's (_bench.find_module_tree: modules.alias, modules.dep, modules.builtin, with the
fake host's own lines appended), so the resolver parses what a real host has.  For each
checkout, Ansible runs one vfio_bind task on it (local connection) with ANSIBLE_KEEP_REMOTE_FILES,
with and without ``return_facts``, and keeps the AnsiballZ payload (the zip with the
module_utils the module imports, and the arguments).  Then every payload is run as a fresh
process, interleaved round after round: wall time, CPU time (user+sys), and, in a second run
with ``python -X importtime``, the import time of the collection's module_utils (their own
"self" times summed: compiling the files from the zip and running their top level).
It checks that A and B print the same result, byte for byte.  Nothing outside a temporary
directory is written; the fake tree is never a real /sys.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PLAY = '''- hosts: all
  gather_facts: false
  tasks:
    - hypervisor.vfio.vfio_bind:
        devices: "{{ passthrough_devices }}"
        sysfs_path: "{{ passthrough_sysfs_path }}"
        procfs_path: "{{ passthrough_procfs_path }}"
        modules_dir: "{{ passthrough_modules_dir }}"
        rootfs_path: "{{ passthrough_rootfs_path }}"
        modprobe_config_dirs: "{{ passthrough_modprobe_config_dirs }}"
        lock_file: "{{ passthrough_lock_file }}"
        journal_file: "{{ passthrough_journal_file }}"
        return_facts: %s
'''
IMPORT_RE = re.compile(r'import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$')


def fake_host(B, root):
    """The fake host; its modules dir holds the genuine files with the fake modules appended."""
    sys.path.insert(0, os.path.join(REPO, 'tools'))
    import fakehost
    modules_dir, release, origin = B.find_module_tree()
    info = fakehost.generate(root, nic=8, virtio=6, gpu=1, state='vfio', release=release)
    mine = os.path.join(info['module_options']['modules_dir'], release)
    for name in ('modules.alias', 'modules.dep', 'modules.builtin', 'modules.builtin.modinfo'):
        real = os.path.join(modules_dir, release, name)
        fake = os.path.join(mine, name)
        own = b''
        if os.path.exists(fake):
            with open(fake, 'rb') as f:
                own = f.read()
        if os.path.exists(real):
            with open(real, 'rb') as f, open(fake, 'wb') as out:
                out.write(f.read() + own)
    os.makedirs(os.path.join(root, 'run', 'hypervisor-vfio'), exist_ok=True)
    return info, origin


def payload(tmp, key, repo, inventory, facts):
    """Run the task once through Ansible; the kept AnsiballZ file's path."""
    coll = os.path.join(tmp, 'ac-' + key)
    if not os.path.isdir(coll):
        os.makedirs(os.path.join(coll, 'ansible_collections', 'hypervisor'))
        os.symlink(os.path.abspath(repo), os.path.join(coll, 'ansible_collections', 'hypervisor', 'vfio'))
    name = '%s-%s' % (key, 'facts' if facts else 'nofacts')
    remote = os.path.join(tmp, 'rt-' + name)
    os.makedirs(remote)
    play = os.path.join(tmp, name + '.yml')
    with open(play, 'w') as f:
        f.write(PLAY % ('true' if facts else 'false'))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=coll, ANSIBLE_KEEP_REMOTE_FILES='1',
               ANSIBLE_REMOTE_TMP=remote, ANSIBLE_NOCOLOR='1')
    playbook = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    p = subprocess.run([playbook, '-i', inventory, play], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    if p.returncode != 0 or 'changed=0' not in p.stdout:
        raise RuntimeError('the vfio_bind task of %s did not end ok with changed=0:\n%s' % (name, p.stdout[-3000:]))
    for d, dummy, files in os.walk(remote):
        if 'AnsiballZ_vfio_bind.py' in files:
            dest = os.path.join(tmp, 'AnsiballZ-%s.py' % name)
            shutil.copy(os.path.join(d, 'AnsiballZ_vfio_bind.py'), dest)
            return dest
    raise RuntimeError('no AnsiballZ_vfio_bind.py kept under %s' % remote)


def run(path):
    """(wall s, CPU s of the process) of one run of a payload."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def imports(path):
    """(seconds, names): the collection's module_utils imported by one run, their self times summed."""
    err = subprocess.run([sys.executable, '-X', 'importtime', path], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, universal_newlines=True, check=True).stderr
    total, names = 0, []
    for line in err.splitlines():
        m = IMPORT_RE.match(line)
        if m and '.vfio.plugins.module_utils.' in m.group(2):
            total += int(m.group(1))
            names.append(m.group(2).rsplit('.', 1)[1])
    return total / 1e6, sorted(names)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--a', required=True, help='checkout A (the baseline)')
    ap.add_argument('--b', required=True, help='checkout B (the change)')
    ap.add_argument('--repeats', type=int, default=15)
    ap.add_argument('--tmpdir', default='/dev/shm' if os.access('/dev/shm', os.W_OK) else None)
    args = ap.parse_args()
    sys.path.insert(0, HERE)
    import _bench as B
    tmp = tempfile.mkdtemp(prefix='vfio-bind-payload-', dir=args.tmpdir)
    try:
        info, origin = fake_host(B, os.path.join(tmp, 'host'))
        cases = []
        for facts in (True, False):
            for key, repo in (('A', args.a), ('B', args.b)):
                cases.append(('%s %s' % (key, 'return_facts' if facts else 'no facts'),
                              payload(tmp, key, repo, info['inventory'], facts)))
        outputs = {}
        for name, path in cases:
            outputs[name] = subprocess.run([sys.executable, path], stdout=subprocess.PIPE, check=True).stdout
            if json.loads(outputs[name].decode('utf-8')).get('changed') is not False:
                raise RuntimeError('%s changed something: not a re-run' % name)
        same = [outputs['A ' + k] == outputs['B ' + k] for k in ('return_facts', 'no facts')]
        times = dict((name, {'wall': [], 'cpu': [], 'imports': []}) for name, dummy in cases)
        files = {}
        for r in range(args.repeats + 1):
            for name, path in (cases if r % 2 else cases[::-1]):
                wall, cpu = run(path)
                secs, files[name] = imports(path)
                if r:
                    times[name]['wall'].append(wall)
                    times[name]['cpu'].append(cpu)
                    times[name]['imports'].append(secs)
        print('A = %s, B = %s; fake host: %d devices on their VFIO drivers, module files: %s; %d rounds '
              '(alternating order)' % (args.a, args.b, len(info['devices']), origin, args.repeats))
        print('same result from A and B, byte for byte: return_facts %s, no facts %s' % tuple(same))
        print()
        rows = []
        for name, dummy in cases:
            t = times[name]
            base = times['A ' + name.split(' ', 1)[1]]
            rows.append([name, B.fmt_ms(B.median(t['wall'])), B.fmt_ms(B.median(t['cpu'])),
                         '%.2f' % B.ratio_median(t['cpu'], base['cpu']), B.fmt_ms(B.median(t['imports'])),
                         '%.2f' % B.ratio_median(t['imports'], base['imports']), len(files[name])])
        print(B.table(['payload', 'wall ms', 'CPU ms', 'CPU / A', 'module_utils imports ms', 'imports / A',
                       'module_utils files'], rows))
        print()
        for name, dummy in cases:
            print('%s imports: %s' % (name, ' '.join(files[name])))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: engine_archive
version_added: 1.0.0
short_description: The collection's engine as one importable zip file, built on the controller
description:
  - Packs this collection's C(plugins/module_utils) (standard library only, Python 3.9+) into one zip file
    that Python imports from (C(sys.path.insert(0, "<file>"))) as
    C(ansible_collections.hypervisor.vfio.plugins.module_utils), and returns its path on the controller.
  - The role P(hypervisor.vfio.passthrough#role) copies it to
    the host in one transfer for the C(vfio-passthrough) command and its boot unit.
  - The file is the same, byte for byte, for the same sources (sorted members, fixed timestamps, stored
    uncompressed), so copying it again changes nothing. It lives in Ansible's temporary folder of the run.
  - With O(checksum=true) it returns the file's SHA-1 instead, which M(hypervisor.vfio.vfio_persist) compares
    with the archive installed on the host (O(hypervisor.vfio.vfio_persist#module:engine_sha1)), so the copy
    runs only when the host's engine differs.
author:
  - hypervisor.vfio contributors (@hypervisor-vfio)
options:
  checksum:
    description: Return the SHA-1 (hexadecimal) of the zip file instead of its path.
    type: bool
    default: false
    version_added: 1.1.0
'''

EXAMPLES = r'''
- name: Install the engine on the host
  ansible.builtin.copy:
    src: "{{ lookup('hypervisor.vfio.engine_archive') }}"
    dest: /usr/local/lib/hypervisor-vfio/engine.zip
    mode: "0644"

- name: Write the persistence, and tell whether the host's engine is the controller's
  hypervisor.vfio.vfio_persist:
    bind: "{{ bound }}"
    engine_sha1: "{{ lookup('hypervisor.vfio.engine_archive', checksum=true) }}"
  register: persisted
'''

RETURN = r'''
_raw:
  description: The path of the zip file on the controller (one element), or its SHA-1 with O(checksum=true).
  type: list
  elements: str
'''

import hashlib
import os
import tempfile
import zipfile

from ansible import constants as C
from ansible.plugins.lookup import LookupBase

PACKAGE = 'ansible_collections/hypervisor/vfio/plugins/module_utils'
EPOCH = (1980, 1, 1, 0, 0, 0)


def engine_files(src):
    """(name in the zip, path) of every engine source, with the package's __init__.py files."""
    out = [('/'.join(PACKAGE.split('/')[:i]) + '/__init__.py', None) for i in range(1, PACKAGE.count('/') + 2)]
    for name in sorted(os.listdir(src)):
        if name.endswith('.py') and name != '__init__.py':
            out.append((PACKAGE + '/' + name, os.path.join(src, name)))
    return out


def build(src, dest):
    """Write the zip of the engine in ``src`` to ``dest`` (atomically); deterministic bytes."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix='.engine-')
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_STORED) as z:
            for name, path in engine_files(src):
                info = zipfile.ZipInfo(name, EPOCH)
                info.external_attr = 0o644 << 16
                data = b''
                if path is not None:
                    with open(path, 'rb') as f:
                        data = f.read()
                z.writestr(info, data)
        os.rename(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    return dest


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'module_utils')
        folder = C.DEFAULT_LOCAL_TMP
        if not os.path.isdir(folder):
            os.makedirs(folder, 0o700)
        path = build(src, os.path.join(folder, 'hypervisor-vfio-engine.zip'))
        if self.get_option('checksum'):
            with open(path, 'rb') as f:
                return [hashlib.sha1(f.read()).hexdigest()]
        return [path]

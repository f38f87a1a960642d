# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the differential tests against kmod.

SAFETY: the only modprobe invocation here is ``modprobe -R`` (resolve and print,
load nothing), always with ``-C <temp confdir> -d <temp root> -S <release>``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


fetch_oracle = _load('kmod_fetch_oracle', os.path.join(HERE, 'fetch_oracle.py'))


def load_aliases():
    """The module under test: through the collection namespace when the root
    conftest provides it, else straight from its file (it is stdlib-only)."""
    try:
        from ansible_collections.hypervisor.vfio.plugins.module_utils import aliases
        return aliases
    except ImportError:
        return _load('hypervisor_vfio_aliases',
                     os.path.join(REPO_ROOT, 'plugins', 'module_utils', 'aliases.py'))


def in_ci():
    return os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')


def unavailable(reason):
    """No oracle data: a loud failure on CI, a skip with the reason elsewhere."""
    if in_ci():
        pytest.fail('kmod oracle unavailable on CI: %s' % reason, pytrace=False)
    pytest.skip('kmod oracle unavailable: %s' % reason)


@pytest.fixture(scope='session')
def aliases():
    return load_aliases()


@pytest.fixture(scope='session')
def oracle_unavailable():
    """The fail-on-CI / skip-elsewhere policy, for its own test."""
    return unavailable


@pytest.fixture(scope='session')
def oracle_lib():
    """fetch_oracle.py as a module (make_ko, write_module, ensure_oracle...)."""
    return fetch_oracle


@pytest.fixture(scope='session')
def kmod_tools():
    """(depmod, modprobe); installs kmod on CI when it is missing."""
    try:
        return fetch_oracle.ensure_kmod(install=in_ci())
    except fetch_oracle.OracleError as e:
        unavailable(str(e))


class Oracle:
    """One kernel's modules.* files laid out as a modprobe ``-d`` root."""

    def __init__(self, manifest):
        self.manifest = manifest
        self.release = manifest['release']
        self.root = fetch_oracle.oracle_root(self.release)
        self.modules_dir = os.path.join(self.root, 'lib', 'modules')
        self.base = os.path.join(self.modules_dir, self.release)

    def alias_lines(self):
        with open(os.path.join(self.base, 'modules.alias')) as f:
            return [ln.split() for ln in f if ln.startswith('alias ')]

    def builtin_aliases(self):
        with open(os.path.join(self.base, 'modules.builtin.modinfo'), 'rb') as f:
            entries = f.read().decode('ascii', 'replace').split('\0')
        out = []
        for e in entries:
            mod, sep, rest = e.partition('.')
            if sep and rest.startswith('alias='):
                out.append((rest[len('alias='):], mod))
        return out


@pytest.fixture(scope='session')
def kmod_oracle(kmod_tools):
    try:
        manifest = fetch_oracle.ensure_oracle(install_kmod=in_ci())
    except fetch_oracle.OracleError as e:
        unavailable(str(e))
    except (OSError, subprocess.SubprocessError) as e:
        unavailable('%s: %s' % (type(e).__name__, e))
    print('kmod oracle: release %s, %s (%s)' % (manifest['release'], manifest['deb'], manifest['source']))
    return Oracle(manifest)


class Modprobe:
    """``modprobe -R`` as the oracle: the set of names it prints for each alias."""

    def __init__(self, modprobe):
        self.modprobe = modprobe
        self.calls = 0

    def resolve(self, alias, confdir, root, release):
        # -R: resolve only; nothing is loaded.  Exit status 1 = no match (empty set).
        # confdir: one directory, or a list (kmod reads them in order, like config_dirs).
        confs = []
        for d in ([confdir] if isinstance(confdir, str) else confdir):
            confs += ['-C', d]
        assert confs, 'modprobe -R always runs with -C <temp confdir>'
        cmd = [self.modprobe, '-R'] + confs + ['-d', root, '-S', release, '--', alias]
        assert cmd[1] == '-R'
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, env={'PATH': '/usr/sbin:/sbin:/usr/bin:/bin',
                                                         'LC_ALL': 'C'}, check=False)
        if p.returncode not in (0, 1):
            raise AssertionError('modprobe -R %r exited %d: %s' % (alias, p.returncode, p.stderr))
        names = set(p.stdout.split())
        if p.returncode == 1:
            assert not names, (alias, p.stdout)
        return names

    def resolve_all(self, aliases, confdir, root, release, workers=None):
        """Resolve many aliases; a small thread pool of modprobe processes."""
        workers = workers or max(2, min(8, (os.cpu_count() or 2) * 2))
        self.calls += len(aliases)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda a: self.resolve(a, confdir, root, release), aliases))


@pytest.fixture(scope='session')
def modprobe(kmod_tools):
    return Modprobe(kmod_tools[1])


@pytest.fixture
def empty_confdir(tmp_path):
    d = tmp_path / 'modprobe.d'
    d.mkdir()
    return str(d)

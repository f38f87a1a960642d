# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the kmod oracle: the modules.* files of a genuine Debian kernel, plus VFIO variants.

A Debian ``linux-image`` package ships the ``.ko`` files but no ``modules.alias``:
depmod generates it.  So this script downloads the package (``apt-get download``
with a private apt configuration, never touching the system's sources), unpacks
it, runs kmod's own ``depmod -b <root> <release>`` and keeps only the
``modules.*`` files in ``.cache/kmod-oracle/<release>/lib/modules/<release>/``.
The big unpacked tree and the downloaded package are deleted afterwards.

VFIO variant drivers (mlx5_vfio_pci, virtio_vfio_pci, ...) are not built by
Debian's 6.12 kernels.  kmod's ``modprobe`` resolves aliases from
``modules.alias.bin`` only (libkmod ``kmod_lookup_alias_from_alias_bin``: no
fallback to the text file), and a modprobe.d ``alias`` line would change the
tier, so appending text lines to ``modules.alias`` would make kmod and the code
under test see different alias sets.  Instead the variants are added the way a
real kernel carries them: as modules.  For each variant a minimal ELF
relocatable object (a ``.ko`` with a ``.modinfo`` section holding ``alias=``
entries exactly as modpost emits them for ``PCI_DRIVER_OVERRIDE_DEVICE_VFIO``)
is placed in the unpacked tree before depmod runs, so depmod itself writes the
variant aliases into both ``modules.alias`` and ``modules.alias.bin``.

Run it directly (``python3 tests/kmod/fetch_oracle.py [--release R]``) or let the
``kmod_oracle`` fixture call :func:`ensure_oracle`.
"""

from __future__ import absolute_import, division, print_function

import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE_DIR = os.path.join(REPO_ROOT, '.cache', 'kmod-oracle')
LAB_CACHE_DIR = os.path.join(REPO_ROOT, '.cache', 'lab')

# The release the differential test is pinned to: the lab's kernel
# (lab/hostimage/hostimagectl KERNEL_PIN), so one download serves both.  The
# newest 6.12.*+deb12 one is used when the mirror no longer carries it.
PINNED_RELEASE = '6.12.95+deb12-amd64'
RELEASE_RE = re.compile(r'^linux-image-(6\.12\.\d+\+deb12(?:\.\d+)?-amd64)$')
FALLBACK_61_RE = re.compile(r'^linux-image-(6\.1\.0-\d+-amd64)$')
DEB_GLOB = 'linux-image-6.1*-amd64_*.deb'
FORMAT = 2   # bump when the layout or the variant table changes

# VFIO variant drivers as upstream declares them (drivers/vfio/pci/*/: every
# table entry is PCI_DRIVER_OVERRIDE_DEVICE_VFIO(vendor, device), which modpost
# turns into "vfio_pci:v%08Xd%08Xsv*sd*bc*sc*i*").  Ids of 6.12 plus the SKUs
# added up to 6.18 (nvgrace 0x2348/0x2941, qat 0x4949).
VFIO_VARIANTS = (
    # (directory, file name as built, [(vendor, device), ...])
    ('mlx5', 'mlx5-vfio-pci', [(0x15B3, 0x101E)]),
    ('virtio', 'virtio-vfio-pci', [(0x1AF4, 0x1041)]),
    ('hisilicon', 'hisi-acc-vfio-pci', [(0x19E5, 0xA256), (0x19E5, 0xA259), (0x19E5, 0xA251)]),
    ('pds', 'pds-vfio-pci', [(0x1DD8, 0x1003)]),
    ('nvgrace-gpu', 'nvgrace-gpu-vfio-pci',
     [(0x10DE, 0x2342), (0x10DE, 0x2345), (0x10DE, 0x2348), (0x10DE, 0x2941)]),
    ('qat', 'qat_vfio_pci', [(0x8086, 0x4941), (0x8086, 0x4943), (0x8086, 0x4945), (0x8086, 0x4949)]),
)
GENERIC_VFIO_PCI = 'vfio_pci:v*d*sv*sd*bc*sc*i*'


class OracleError(Exception):
    """The oracle data could not be produced (no network, no apt, no kmod...)."""


def log(msg):
    sys.stderr.write('[kmod-oracle] %s\n' % msg)
    sys.stderr.flush()


def vfio_alias(vendor, device):
    return 'vfio_pci:v%08Xd%08Xsv*sd*bc*sc*i*' % (vendor, device)


# --------------------------------------------------------------------------- ELF

def make_ko(modinfo):
    """A minimal ELF64 little-endian relocatable object carrying a .modinfo section.

    That is all depmod reads from a module to build modules.alias(.bin): the
    ``key=value`` NUL-separated strings of ``.modinfo`` (plus an empty symbol
    table, so the dependency scan finds nothing).
    """
    blobs = [
        ('', 0, b''),
        ('.modinfo', 1, b''.join(e.encode('ascii') + b'\0' for e in modinfo)),  # SHT_PROGBITS
        ('.symtab', 2, b'\0' * 24),                                            # SHT_SYMTAB, null sym
        ('.strtab', 3, b'\0'),                                                 # SHT_STRTAB
        ('.shstrtab', 3, b''),
    ]
    shstrtab = b''
    name_off = []
    for name, _t, _b in blobs:
        name_off.append(len(shstrtab))
        shstrtab += name.encode('ascii') + b'\0'
    blobs[-1] = ('.shstrtab', 3, shstrtab)
    body = b''
    offsets = []
    pos = 64
    for _n, _t, blob in blobs:
        pad = (-pos) % 8
        body += b'\0' * pad
        pos += pad
        offsets.append(pos)
        body += blob
        pos += len(blob)
    pad = (-pos) % 8
    body += b'\0' * pad
    shoff = pos + pad
    ident = b'\x7fELF' + bytes(bytearray([2, 1, 1, 0])) + b'\0' * 8
    # e_type=ET_REL, e_machine=EM_X86_64, e_version, e_entry, e_phoff, e_shoff, e_flags,
    # e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
    ehdr = ident + struct.pack('<HHIQQQIHHHHHH', 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64,
                               len(blobs), len(blobs) - 1)
    shdrs = b'\0' * 64
    for i in range(1, len(blobs)):
        name, typ, blob = blobs[i]
        is_sym = typ == 2
        shdrs += struct.pack('<IIQQQQIIQQ', name_off[i], typ, 2 if name == '.modinfo' else 0, 0,
                             offsets[i], len(blob), 3 if is_sym else 0, 1 if is_sym else 0,
                             8 if is_sym else 1, 24 if is_sym else 0)
    return ehdr + body + shdrs


def write_module(moddir, relpath, aliases, name=None):
    """Write a synthetic module at <moddir>/<relpath> whose .modinfo lists aliases."""
    base = os.path.basename(relpath).split('.ko', 1)[0]
    info = ['license=GPL', 'description=synthetic module for the kmod differential test']
    info += ['alias=%s' % a for a in aliases]
    info += ['depends=', 'name=%s' % (name or base.replace('-', '_'))]
    path = os.path.join(moddir, relpath)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, 'wb') as f:
        f.write(make_ko(info))
    return path


# --------------------------------------------------------------------------- tools

def find_tool(name):
    for d in ('/usr/sbin', '/sbin', '/usr/bin', '/bin'):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return shutil.which(name)


def _sudo():
    if os.geteuid() == 0:
        return []
    if shutil.which('sudo'):
        return ['sudo', '-n']
    raise OracleError('not root and no sudo: cannot apt-get install kmod')


def ensure_kmod(install=True):
    """Paths of depmod and modprobe; apt-get install kmod when they are missing."""
    depmod, modprobe = find_tool('depmod'), find_tool('modprobe')
    if depmod and modprobe:
        return depmod, modprobe
    if not install:
        raise OracleError('kmod (depmod/modprobe) is not installed')
    log('kmod is missing: apt-get install kmod')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    try:
        subprocess.check_call(_sudo() + ['apt-get', 'install', '-y', '--no-install-recommends', 'kmod'],
                              env=env)
    except (OSError, subprocess.CalledProcessError) as e:
        raise OracleError('apt-get install kmod failed: %s' % e)
    depmod, modprobe = find_tool('depmod'), find_tool('modprobe')
    if not (depmod and modprobe):
        raise OracleError('kmod installed but depmod/modprobe still not found')
    return depmod, modprobe


def kmod_version(modprobe):
    try:
        out = subprocess.check_output([modprobe, '--version'], universal_newlines=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.splitlines()[0].strip() if out else None


# --------------------------------------------------------------------------- apt

def system_mirror():
    """The Debian mirror URI the system's apt sources use (deb822 or one-line)."""
    files = sorted(glob.glob('/etc/apt/sources.list.d/*')) + ['/etc/apt/sources.list']
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except (IOError, OSError):
            continue
        for line in (r'^\s*URIs:\s*(\S+)', r'^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm'):
            for m in re.finditer(line, text, re.M):
                uri = m.group(1).rstrip('/')
                if uri.endswith('/debian'):
                    return uri
    return 'http://deb.debian.org/debian'


class PrivateApt:
    """apt-get/apt-cache with our own sources, lists and cache: the system's stay untouched."""

    def __init__(self, root, suites):
        self.root = root
        for d in ('lists/partial', 'cache/archives/partial', 'parts'):
            p = os.path.join(root, d)
            if not os.path.isdir(p):
                os.makedirs(p)
        keyring = '/usr/share/keyrings/debian-archive-keyring.gpg'
        if not os.path.exists(keyring):
            raise OracleError('%s is missing (package debian-archive-keyring)' % keyring)
        mirror = system_mirror()
        self.sources = os.path.join(root, 'sources.list')
        with open(self.sources, 'w') as f:
            for suite in suites:
                f.write('deb [signed-by=%s] %s %s main\n' % (keyring, mirror, suite))
        self.opts = ['-o', 'Dir::Etc::SourceList=%s' % self.sources,
                     '-o', 'Dir::Etc::SourceParts=%s' % os.path.join(root, 'parts'),
                     '-o', 'Dir::State::Lists=%s' % os.path.join(root, 'lists'),
                     '-o', 'Dir::Cache=%s' % os.path.join(root, 'cache'),
                     '-o', 'Debug::NoLocking=1', '-o', 'Acquire::Retries=3']
        if os.geteuid() == 0:
            self.opts += ['-o', 'APT::Sandbox::User=root']
        log('private apt sources: %s %s' % (mirror, ' '.join(suites)))

    def run(self, tool, *args, **kw):
        cmd = [tool] + self.opts + list(args)
        try:
            return subprocess.check_output(cmd, universal_newlines=True, stderr=subprocess.STDOUT, **kw)
        except OSError as e:
            raise OracleError('%s: %s' % (tool, e))
        except subprocess.CalledProcessError as e:
            raise OracleError('%s failed (%s):\n%s' % (' '.join(cmd[:1] + list(args)), e.returncode,
                                                       e.output[-2000:]))

    def update(self):
        self.run('apt-get', '-q', 'update')

    def package_names(self, regex):
        out = self.run('apt-cache', 'pkgnames', 'linux-image-6.1')
        found = []
        for name in out.split():
            m = regex.match(name)
            if m:
                found.append((m.group(1), name))
        return found

    def download(self, package, dest):
        self.run('apt-get', '-q', 'download', package, cwd=dest)
        debs = glob.glob(os.path.join(dest, '%s_*.deb' % package))
        if not debs:
            raise OracleError('apt-get download %s produced no .deb' % package)
        return debs[0]


def _version_key(release):
    return [int(x) for x in re.findall(r'\d+', release)]


# --------------------------------------------------------------------------- oracle

def oracle_root(release):
    return os.path.join(CACHE_DIR, release)


def _manifest_path(release):
    return os.path.join(oracle_root(release), 'oracle.json')


def load_manifest(release):
    try:
        with open(_manifest_path(release)) as f:
            data = json.load(f)
    except (IOError, OSError, ValueError):
        return None
    if data.get('format') != FORMAT:
        return None
    if not os.path.exists(os.path.join(oracle_root(release), 'lib', 'modules', release,
                                       'modules.alias.bin')):
        return None
    return data


def cached_releases():
    try:
        names = os.listdir(CACHE_DIR)
    except OSError:
        return []
    return sorted((n for n in names if load_manifest(n)), key=_version_key)


def _package_of(deb):
    name = os.path.basename(deb).split('_', 1)[0]
    return name[:-len('-unsigned')] if name.endswith('-unsigned') else name


def lab_debs():
    """linux-image packages the lab already downloaded (newest first)."""
    found = [p for p in glob.glob(os.path.join(LAB_CACHE_DIR, '**', DEB_GLOB), recursive=True)
             if RELEASE_RE.match(_package_of(p)) or FALLBACK_61_RE.match(_package_of(p))]
    return sorted(found, key=lambda p: _version_key(os.path.basename(p)), reverse=True)


def _release_of_tree(tree):
    for base in ('lib/modules', 'usr/lib/modules'):
        d = os.path.join(tree, base)
        if os.path.isdir(d):
            rels = [r for r in os.listdir(d) if os.path.isdir(os.path.join(d, r, 'kernel'))]
            if len(rels) == 1:
                return base, rels[0]
    raise OracleError('no lib/modules/<release>/kernel in the unpacked package')


def _sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def _present_modules(moddir):
    names = set()
    for _dirpath, _dirs, files in os.walk(os.path.join(moddir, 'kernel')):
        for fn in files:
            if '.ko' in fn:
                names.add(fn.split('.ko', 1)[0].replace('-', '_'))
    try:
        with open(os.path.join(moddir, 'modules.builtin')) as f:
            for line in f:
                fn = os.path.basename(line.strip())
                if fn:
                    names.add(fn.split('.ko', 1)[0].replace('-', '_'))
    except (IOError, OSError):
        pass
    return names


def _builtin_aliases(moddir):
    try:
        with open(os.path.join(moddir, 'modules.builtin.modinfo'), 'rb') as f:
            data = f.read().decode('ascii', 'replace')
    except (IOError, OSError):
        return []
    return [e.split('.alias=', 1)[1] for e in data.split('\0') if '.alias=' in e]


def add_variants(moddir):
    """Place synthetic variant modules in the unpacked tree; returns what was added."""
    present = _present_modules(moddir)
    added = []
    for subdir, fname, ids in VFIO_VARIANTS:
        mod = fname.replace('-', '_')
        if mod in present:
            log('%s is built by this kernel: keeping the real module' % mod)
            continue
        aliases = [vfio_alias(v, d) for v, d in ids]
        write_module(moddir, 'kernel/drivers/vfio/pci/%s/%s.ko' % (subdir, fname), aliases)
        added.append({'module': mod, 'aliases': aliases})
    # The generic vfio_pci alias: real kernels have it (vfio_pci.c's table is
    # PCI_DRIVER_OVERRIDE_DEVICE_VFIO(PCI_ANY_ID, PCI_ANY_ID)).
    if 'vfio_pci' not in present and GENERIC_VFIO_PCI not in _builtin_aliases(moddir):
        write_module(moddir, 'kernel/drivers/vfio/pci/vfio-pci.ko', [GENERIC_VFIO_PCI])
        added.append({'module': 'vfio_pci', 'aliases': [GENERIC_VFIO_PCI]})
    return added


def build_from_deb(deb, depmod, modprobe, source):
    """Unpack deb, add the variants, depmod, keep modules.*; returns the manifest."""
    if not os.path.isdir(CACHE_DIR):
        os.makedirs(CACHE_DIR)
    work = tempfile.mkdtemp(prefix='build-', dir=CACHE_DIR)
    try:
        tree = os.path.join(work, 'root')
        log('unpacking %s' % os.path.basename(deb))
        try:
            subprocess.check_call(['dpkg', '-x', deb, tree])
        except (OSError, subprocess.CalledProcessError) as e:
            raise OracleError('dpkg -x %s failed: %s' % (deb, e))
        base, release = _release_of_tree(tree)
        if base != 'lib/modules':   # depmod -b reads <root>/lib/modules
            os.makedirs(os.path.join(tree, 'lib', 'modules'))
            os.rename(os.path.join(tree, base, release), os.path.join(tree, 'lib', 'modules', release))
        moddir = os.path.join(tree, 'lib', 'modules', release)
        added = add_variants(moddir)
        log('depmod -b <tree> %s' % release)
        try:
            subprocess.check_output([depmod, '-b', tree, release], stderr=subprocess.STDOUT,
                                    universal_newlines=True)
        except (OSError, subprocess.CalledProcessError) as e:
            raise OracleError('depmod failed: %s\n%s' % (e, getattr(e, 'output', '')))
        dest_parent = os.path.join(work, 'keep')
        dest = os.path.join(dest_parent, 'lib', 'modules', release)
        os.makedirs(dest)
        for fn in sorted(os.listdir(moddir)):
            if fn.startswith('modules.'):
                shutil.copy2(os.path.join(moddir, fn), os.path.join(dest, fn))
        with open(os.path.join(dest, 'modules.alias')) as f:
            lines = [ln for ln in f if ln.startswith('alias ')]
        manifest = {
            'format': FORMAT, 'release': release, 'source': source,
            'deb': os.path.basename(deb), 'deb_sha256': _sha256(deb),
            'kmod': kmod_version(modprobe), 'alias_lines': len(lines),
            'pci_alias_lines': sum(1 for ln in lines if ln.startswith('alias pci:')),
            'variants_added': added,
        }
        with open(os.path.join(dest_parent, 'oracle.json'), 'w') as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        final = oracle_root(release)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(dest_parent, final)
        log('oracle ready: %s (%d alias lines, %d pci)'
            % (final, manifest['alias_lines'], manifest['pci_alias_lines']))
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(release=None):
    """Download a linux-image package; returns (deb path, how it was chosen)."""
    apt = PrivateApt(os.path.join(CACHE_DIR, 'apt'), ['bookworm-backports'])
    apt.update()
    found = dict(apt.package_names(RELEASE_RE))
    wanted = release or PINNED_RELEASE
    if wanted in found:
        package, how = found[wanted], 'pinned' if not release else 'requested'
    elif release:
        raise OracleError('linux-image-%s is not on the mirror' % release)
    elif found and lab_debs():
        raise OracleError('pinned %s is not on the mirror' % wanted)   # the lab's .deb will do
    elif found:
        newest = sorted(found, key=_version_key)[-1]
        package, how = found[newest], 'fallback (pinned %s unavailable)' % PINNED_RELEASE
    else:
        apt = PrivateApt(os.path.join(CACHE_DIR, 'apt'), ['bookworm'])
        apt.update()
        old = dict(apt.package_names(FALLBACK_61_RE))
        if not old:
            raise OracleError('no linux-image-6.12.*+deb12-amd64 nor 6.1.0-*-amd64 on the mirror')
        newest = sorted(old, key=_version_key)[-1]
        package, how = old[newest], 'fallback to bookworm 6.1'
    dl = os.path.join(CACHE_DIR, 'download')
    if os.path.isdir(dl):
        shutil.rmtree(dl)
    os.makedirs(dl)
    log('apt-get download %s (%s)' % (package, how))
    return apt.download(package, dl), how


def ensure_oracle(release=None, install_kmod=True):
    """Return the manifest of a ready oracle, building it if needed.

    For the pinned (or requested) release: the cache; else the .deb the lab
    already downloaded into .cache/lab/; else apt-get download.  When that
    release cannot be had: the newest lab .deb, else the newest 6.12.*+deb12 of
    the mirror, else (offline) the newest oracle already cached.
    """
    release = release or os.environ.get('KMOD_ORACLE_RELEASE') or None
    wanted = release or PINNED_RELEASE
    depmod, modprobe = ensure_kmod(install_kmod)
    if not os.path.isdir(CACHE_DIR):
        os.makedirs(CACHE_DIR)
    with open(os.path.join(CACHE_DIR, '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        m = load_manifest(wanted)
        if m:
            return m
        debs = lab_debs()
        for deb in debs:
            if _package_of(deb) == 'linux-image-' + wanted:
                log('reusing the lab package %s' % deb)
                return build_from_deb(deb, depmod, modprobe, 'lab cache')
        try:
            deb, how = _download(release)
        except OracleError as e:
            if release:
                raise
            if debs:
                log('%s; reusing the lab package %s' % (e, debs[0]))
                return build_from_deb(debs[0], depmod, modprobe, 'lab cache (pinned unavailable)')
            cached = cached_releases()
            if cached:
                log('%s; using the cached oracle %s' % (e, cached[-1]))
                return load_manifest(cached[-1])
            raise
        try:
            return build_from_deb(deb, depmod, modprobe, 'apt-get download, %s' % how)
        finally:
            shutil.rmtree(os.path.dirname(deb), ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    ap.add_argument('--release', help='kernel release, e.g. %s' % PINNED_RELEASE)
    ap.add_argument('--rebuild', action='store_true', help='drop the cached oracle first')
    args = ap.parse_args(argv)
    if args.rebuild:
        for rel in ([args.release] if args.release else cached_releases()):
            shutil.rmtree(oracle_root(rel), ignore_errors=True)
    try:
        m = ensure_oracle(args.release)
    except OracleError as e:
        log('ERROR: %s' % e)
        return 1
    print('release %s from %s (%s): %s' % (m['release'], m['deb'], m['source'], oracle_root(m['release'])))
    return 0


if __name__ == '__main__':
    sys.exit(main())

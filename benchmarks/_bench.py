# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers of the benchmarks: importing the collection from this checkout,
finding (or fetching) a genuine Debian modules.alias, timing, tables, machine facts.

Nothing here writes outside a temporary directory and the repository's ``.cache/``.
"""

from __future__ import absolute_import, division, print_function

import glob
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, '.cache')
BENCH_CACHE = os.path.join(CACHE, 'bench')

# VFIO variant aliases as modpost writes them for PCI_DRIVER_OVERRIDE_DEVICE_VFIO; appended
# to a freshly depmod-ed Debian modules.alias (Debian's 6.12 kernels build no variant).
VARIANT_LINES = (
    'alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci',
    'alias vfio_pci:v00001AF4d00001041sv*sd*bc*sc*i* virtio_vfio_pci',
    'alias vfio_pci:v000019E5d0000A256sv*sd*bc*sc*i* hisi_acc_vfio_pci',
    'alias vfio_pci:v00001DD8d00001003sv*sd*bc*sc*i* pds_vfio_pci',
    'alias vfio_pci:v000010DEd00002342sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci',
    'alias vfio_pci:v00008086d00004941sv*sd*bc*sc*i* qat_vfio_pci',
)

_COLLECTION_ROOT = None


def import_collection():
    """Put a dir holding ansible_collections/hypervisor/vfio -> this checkout on sys.path."""
    global _COLLECTION_ROOT
    if _COLLECTION_ROOT is None:
        sys.path.insert(0, os.path.join(REPO, 'hack'))
        from pytest_hv_collection import collections_path  # the one bootstrap (removed at exit)
        _COLLECTION_ROOT = collections_path()
    return _COLLECTION_ROOT


LABCTL = os.path.join(REPO, 'lab', 'labctl')
TRACE = '/sys/kernel/tracing'   # tracefs in the lab guests (mounted on first use)


def labctl(*cmd, **kw):
    """Run lab/labctl (env=: LAB_NAME and friends); its stdout, RuntimeError on failure
    unless check=False."""
    env, check = kw.get('env'), kw.get('check', True)
    p = subprocess.run([LABCTL] + list(cmd), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise RuntimeError('LAB_NAME=%s labctl %s failed (%d):\n%s\n%s' % (
            (env or os.environ).get('LAB_NAME', 'default'), ' '.join(cmd)[:300], p.returncode,
            p.stdout[-2000:], p.stderr[-4000:]))
    return p.stdout


def log(msg):
    sys.stderr.write('[bench] %s\n' % msg)
    sys.stderr.flush()


# -- the genuine modules.alias ---------------------------------------------------------------
def _has_variants(path):
    with open(path) as f:
        return any(line.startswith('alias vfio_pci:v0') for line in f)


def find_module_tree():
    """(modules_dir, release, origin) of a genuine Debian kernel's module files.

    Order: $VFIO_BENCH_MODULES_DIR (a <dir>/<release>/modules.alias tree), the kmod oracle
    cache (.cache/kmod-oracle), the lab cache (.cache/lab), our own cache (.cache/bench),
    else apt-get download + dpkg -x + depmod into .cache/bench.
    """
    env = os.environ.get('VFIO_BENCH_MODULES_DIR')
    candidates = []
    if env:
        candidates += [(p, '$VFIO_BENCH_MODULES_DIR') for p in glob.glob(os.path.join(env, '*', 'modules.alias'))]
    candidates += [(p, '.cache/kmod-oracle (genuine Debian + depmod-ed variant modules)') for p in
                   sorted(glob.glob(os.path.join(CACHE, 'kmod-oracle', '*', 'lib', 'modules', '*', 'modules.alias')))]
    candidates += [(p, '.cache/lab') for p in
                   sorted(glob.glob(os.path.join(CACHE, 'lab', '**', 'lib', 'modules', '*', 'modules.alias'),
                                    recursive=True))]
    candidates += [(p, '.cache/bench (apt-get download + depmod + variant lines)') for p in
                   sorted(glob.glob(os.path.join(BENCH_CACHE, 'modules', '*', 'modules.alias')))]
    for path, origin in candidates:
        if os.path.getsize(path) > 100000:
            rel_dir = os.path.dirname(path)
            return os.path.dirname(rel_dir), os.path.basename(rel_dir), origin
    fetch_debian_modules()
    return find_module_tree()


def _run(argv, **kw):
    log('$ ' + ' '.join(argv))
    subprocess.check_call(argv, **kw)


def fetch_debian_modules():
    """apt-get download linux-image-6.12.*+deb12-amd64 (bookworm-backports) with a private
    apt configuration (own sources, lists, cache), dpkg -x it, depmod -b it, keep modules.*."""
    apt = os.path.join(BENCH_CACHE, 'apt')
    for d in ('lists/partial', 'cache/archives/partial', 'parts', 'prefs'):
        if not os.path.isdir(os.path.join(apt, d)):
            os.makedirs(os.path.join(apt, d))
    sources = os.path.join(apt, 'sources.list')
    with open(sources, 'w') as f:
        f.write('deb http://deb.debian.org/debian bookworm-backports main\n')
    opts = ['-o', 'Dir::Etc::SourceList=' + sources, '-o', 'Dir::Etc::SourceParts=' + os.path.join(apt, 'parts'),
            '-o', 'Dir::Etc::PreferencesParts=' + os.path.join(apt, 'prefs'),
            '-o', 'Dir::State::Lists=' + os.path.join(apt, 'lists'),
            '-o', 'Dir::Cache=' + os.path.join(apt, 'cache'), '-o', 'APT::Architecture=amd64']
    if not shutil.which('depmod'):
        _run(['apt-get', 'install', '-y', '--no-install-recommends', 'kmod'])
    _run(['apt-get', '-q'] + opts + ['update'])
    names = subprocess.check_output(['apt-cache'] + opts + ['pkgnames', 'linux-image-6.12.'],
                                    universal_newlines=True).split()
    names = sorted(n for n in names if n.endswith('+deb12-amd64') and '-unsigned' not in n and '-dbg' not in n)
    if not names:
        raise RuntimeError('no linux-image-6.12.*+deb12-amd64 on bookworm-backports')
    pkg = names[-1]
    work = tempfile.mkdtemp(prefix='vfio-bench-kernel-', dir=BENCH_CACHE)
    try:
        _run(['apt-get', '-q'] + opts + ['download', pkg], cwd=work)
        deb = glob.glob(os.path.join(work, '*.deb'))[0]
        root = os.path.join(work, 'root')
        _run(['dpkg', '-x', deb, root])
        release = os.listdir(os.path.join(root, 'lib', 'modules'))[0]
        _run([shutil.which('depmod') or '/usr/sbin/depmod', '-b', root, release])
        src = os.path.join(root, 'lib', 'modules', release)
        dst = os.path.join(BENCH_CACHE, 'modules', release)
        if not os.path.isdir(dst):
            os.makedirs(dst)
        for name in os.listdir(src):
            if name.startswith('modules.'):
                shutil.copy(os.path.join(src, name), dst)
        with open(os.path.join(dst, 'modules.alias'), 'a') as f:
            f.write('\n'.join(VARIANT_LINES) + '\n')
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- timing -----------------------------------------------------------------------------------
def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def median(xs):
    return statistics.median(xs)


def interleaved(cases, repeats, warmup=1):
    """Run every case once per round, rounds repeated; {name: [seconds...]}.

    Interleaving keeps a noisy neighbour from favouring one case: each ratio compares
    runs that happened next to each other.
    """
    times = dict((name, []) for name, _ in cases)
    for r in range(warmup + repeats):
        for name, fn in cases:
            t = fn()
            if r >= warmup:
                times[name].append(t)
    return times


def ratio_median(a, b):
    """Median of per-round ratios a[i]/b[i] (robust against a slow round hitting both)."""
    return statistics.median(x / y for x, y in zip(a, b))


def fmt_ms(s):
    return '%.1f' % (s * 1e3) if s >= 0.01 else '%.2f' % (s * 1e3)


def table(headers, rows):
    """A Markdown table (printable as is and pasteable into BENCHMARKS.md)."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: '| ' + ' | '.join(c.rjust(w) for c, w in zip(cells, widths)) + ' |'
    out = [line(headers), '|' + '|'.join('-' * (w + 1) + ':' for w in widths) + '|']
    out += [line(r) for r in rows]
    return '\n'.join(out)


def machine_facts(tmp=None):
    cpu = '?'
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except IOError:
        pass
    facts = [('cpus (os.cpu_count)', os.cpu_count()), ('cpu model', cpu),
             ('python', '%s (%s)' % (platform.python_version(), sys.executable)),
             ('kernel', platform.release()),
             ('load average at start (1/5/15 min)', '%.1f / %.1f / %.1f' % os.getloadavg()), ('filesystem of the fake trees', _fs_of(tmp or tempfile.gettempdir()))]
    try:
        import ansible
        facts.append(('ansible-core', ansible.__version__ if hasattr(ansible, '__version__') else
                      __import__('ansible.release').release.__version__))
    except Exception:
        pass
    return facts


def _fs_of(path):
    try:
        out = subprocess.check_output(['stat', '-f', '-c', '%T', path], universal_newlines=True)
        return '%s (%s)' % (out.strip(), path)
    except Exception:
        return path

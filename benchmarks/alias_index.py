#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 8, part 2: build and lookup cost of the alias index vs modules.alias size.

Files: the genuine Debian modules.alias (see _bench.find_module_tree) and a 10x synthetic one
made from it: copy k (k = 1..9) of every line gets a token ``x<k>`` inserted after the first ':'
of its pattern and ``_<k>`` appended to its module, so the copies have new, distinct literal
prefixes of the same shape (a pattern whose wildcard comes before its first ':', such as
``acpi*:INTC1057:*``, keeps its prefix and is matched 10 times, as in a kernel with 10x the drivers).

Measured per file, in one process, medians over repeats:
  build           ModuleTree(modules_dir, release) with only modules.alias present
                  (read, split, normalize, index by literal prefix)
  lookup          Resolver.choose(alias): the index lookup, ranking and candidate dicts
  index lookup    AliasIndex.lookup(normalized alias) alone
  naive scan      for every line, fnmatch.fnmatchcase(alias, pattern) (stdlib: its compiled-pattern
                  cache holds 32,768 patterns, so the real file stays compiled; the 10x file does not)
                  (on the 10x file: 1 query, 1 round: every call recompiles, a scan takes minutes)
  naive (compiled) every pattern compiled once up front (build), then regex.match per line per lookup
The queries: the vfio_pci: aliases of the facts_scale device mix, their pci: aliases (what a
driver lookup asks), and a few usb:/acpi: names.  Both methods must find the same modules.
"""

from __future__ import absolute_import, division, print_function

import argparse
import fnmatch
import os
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench as B  # noqa: E402

B.import_collection()
from ansible_collections.hypervisor.vfio.plugins.module_utils import aliases as A  # noqa: E402

DEVICES = [  # vendor, device, subvendor, subdevice, class: the facts_scale mix
    ('8086', '2030', '8086', '0000', '060400'), ('8086', '1572', '8086', '0007', '020000'),
    ('8086', '154C', '8086', '0000', '020000'), ('15B3', '101D', '15B3', '0016', '020000'),
    ('15B3', '101E', '15B3', '0016', '020000'), ('144D', 'A80A', '144D', 'A801', '010802'),
    ('10DE', '2204', '1458', '403B', '030000'), ('10DE', '1AEF', '1458', '403B', '040300'),
    ('1AF4', '1041', '1AF4', '1100', '020000'), ('8086', '09A2', '8086', '0000', '088000'),
    ('8086', 'A123', '8086', '7270', '0C0500'),
]
OTHER = ['usb:v046Dp0825d0010dcEFdsc02dp01ic0Eisc01ip00in00', 'acpi:INTC1057:', 'acpi:PNP0C0A:',
         'usb:v0BDAp8153d3100dc00dsc00dp00icFFisc00ip00in00']


def queries():
    out = []
    for v, d, sv, sd, c in DEVICES:
        modalias = 'pci:v0000%sd0000%ssv0000%ssd0000%sbc%ssc%si%s' % (v, d, sv, sd, c[:2], c[2:4], c[4:])
        out += ['vfio_' + modalias, modalias]
    return out + OTHER


def synthetic(lines, factor):
    out = list(lines)
    for k in range(1, factor):
        for line in lines:
            words = line.split()
            pat = words[1]
            i = pat.find(':')
            pat = pat[:i + 1] + 'x%d' % k + pat[i + 1:] if i >= 0 else pat + 'x%d' % k
            out.append('alias %s %s_%d' % (pat, words[2], k))
    return out


def make_tree(tmp, name, lines):
    d = os.path.join(tmp, name, 'release')
    os.makedirs(d)
    with open(os.path.join(d, 'modules.alias'), 'w') as f:
        f.write('# Aliases extracted from modules themselves.\n' + '\n'.join(lines) + '\n')
    return os.path.join(tmp, name), 'release', os.path.getsize(os.path.join(d, 'modules.alias'))


def per_call(fn, args, repeats):
    """Median over repeats of the mean time of one call of fn over every arg."""
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a in args:
            fn(a)
        ts.append((time.perf_counter() - t0) / len(args))
    return B.median(ts)


def naive_scan(patterns, name):
    return [m for p, m in patterns if fnmatch.fnmatchcase(name, p)]


def naive_compiled(compiled, name):
    return [m for rx, m in compiled if rx.match(name)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeats', type=int, default=7)
    ap.add_argument('--factor', type=int, default=10)
    args = ap.parse_args()
    modules_dir, release, origin = B.find_module_tree()
    with open(os.path.join(modules_dir, release, 'modules.alias')) as f:
        real = [line.rstrip('\n') for line in f if line.startswith('alias ') and len(line.split()) >= 3]
    tmp = tempfile.mkdtemp(prefix='vfio-bench-alias-')
    qs = queries()
    try:
        print('## alias_index: %s' % ' '.join(sys.argv))
        print()
        print(B.table(['machine', 'value'], B.machine_facts() + [
            ('modules.alias', '%s (kernel %s)' % (origin, release)),
            ('queries', '%d (vfio_pci: and pci: aliases of 11 device kinds, 4 usb:/acpi: names)' % len(qs)),
            ('repeats', '%d; medians' % args.repeats)]))
        print()
        files = [('real', real), ('%dx synthetic' % args.factor, synthetic(real, args.factor))]
        rows, stats, cmp_rows, kind_rows = [], [], [], []
        for label, lines in files:
            mdir, rel, size = make_tree(tmp, label.split()[0], lines)
            B.log('%s: %d lines' % (label, len(lines)))
            builds = []
            for _ in range(args.repeats):
                t, tree = B.timed(A.ModuleTree, mdir, rel)
                builds.append(t)
            resolver = A.Resolver(mdir, rel, [])
            norm = [A.normalize_alias(q) for q in qs]
            for q in qs:   # compile the regexes of the matched patterns once, as a run does
                resolver.choose(q)
            choose = per_call(resolver.choose, qs, args.repeats)
            index = per_call(resolver.tree.aliases.lookup, norm, args.repeats)
            choose_vfio = per_call(resolver.choose, [q for q in qs if q.startswith('vfio_pci:')], args.repeats)
            for kind, sel in (('vfio_pci:', lambda q: q.startswith('vfio_pci:')),
                              ('pci:', lambda q: q.startswith('pci:')),
                              ('usb:/acpi:', lambda q: not q.startswith(('pci:', 'vfio_pci:')))):
                sub = [q for q in qs if sel(q)]
                kind_rows.append([label, kind, len(sub),
                                  '%.1f' % (per_call(resolver.choose, sub, args.repeats) * 1e6),
                                  '%.1f' % (per_call(resolver.tree.aliases.lookup,
                                                     [A.normalize_alias(q) for q in sub], args.repeats) * 1e6),
                                  '%.1f' % (sum(len(resolver.tree.aliases.lookup(A.normalize_alias(q)))
                                                for q in sub) / len(sub))])
            idx = resolver.tree.aliases
            buckets = getattr(idx, '_by_prefix', {})
            lengths = getattr(idx, '_lengths', ())
            # naive: stdlib fnmatch over every (normalized) pattern, per query
            patterns = [(A.normalize_alias(line.split()[1]), A.normalize_module(line.split()[2])) for line in lines]
            patterns = [(p, m) for p, m in patterns if p is not None]
            small = len(patterns) <= 32768   # fits fnmatch's compiled-pattern cache
            naive_q = qs[:6] if small else qs[:1]
            if small:
                naive_scan(patterns, naive_q[0])   # warm the fnmatch cache
            naive = per_call(lambda q: naive_scan(patterns, q), [A.normalize_alias(q) for q in naive_q],
                             max(1, args.repeats // 3) if small else 1)
            B.log('%s: naive fnmatch %.1f ms per lookup' % (label, naive * 1e3))
            t0 = time.perf_counter()
            compiled = [(A.translate(p), m) for p, m in patterns]
            compiled = [(rx, m) for rx, m in compiled if rx is not None]
            naive_build = time.perf_counter() - t0
            naive_c = per_call(lambda q: naive_compiled(compiled, q), [A.normalize_alias(q) for q in naive_q],
                               max(1, args.repeats // 3))
            # same answers?
            agree = 0
            for q in qs:
                n = A.normalize_alias(q)
                if sorted(set(a.module for a in idx.lookup(n))) == sorted(set(naive_compiled(compiled, n))):
                    agree += 1
            rows.append([label, len(lines), '%.2f' % (size / 1e6), B.fmt_ms(B.median(builds)),
                         '%.1f' % (choose * 1e6), '%.1f' % (index * 1e6), '%.0f' % (naive * 1e6),
                         '%.0f' % (naive_c * 1e6), '%.0f' % (naive / index), B.fmt_ms(naive_build)])
            big = max(buckets.items(), key=lambda kv: len(kv[1])) if buckets else ('', [])
            stats.append([label, len(buckets), len(lengths), '%d (%r)' % (len(big[1]), big[0]),
                          '%d/%d' % (agree, len(qs))])
            for n_dev in (1024, 4096):
                cmp_rows.append([label, n_dev, B.fmt_ms(B.median(builds) + n_dev * choose_vfio),
                                 B.fmt_ms(n_dev * naive), B.fmt_ms(naive_build + n_dev * naive_c)])
        print('### Build and per-lookup cost')
        print()
        print(B.table(['file', 'alias lines', 'MB', 'build ms', 'choose us', 'index lookup us',
                       'naive fnmatch us', 'naive compiled us', 'naive/index', 'naive compile ms'], rows))
        print()
        print('### Per-lookup cost by kind of alias (vfio_pci: is what vfio_facts asks, one per device)')
        print()
        print(B.table(['file', 'queries', 'n', 'choose us', 'index lookup us', 'matches per query'], kind_rows))
        print()
        print('### Index shape and agreement with the naive scan')
        print()
        print(B.table(['file', 'prefix buckets', 'distinct prefix lengths', 'largest bucket (prefix)',
                       'queries with the same modules'], stats))
        print()
        print('### What a facts run pays for N devices (one vfio_pci: lookup each; naive columns extrapolated '
              'from the per-lookup cost)')
        print()
        print(B.table(['file', 'devices', 'index: build + N lookups ms', 'naive fnmatch: N scans ms',
                       'naive compiled: compile + N scans ms'], cmp_rows))
        print()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Differential test: Resolver.kmod_lookup() against ``modprobe -R`` on a real Debian kernel.

The alias set both sides see: the modules.* files depmod generates for a
genuine Debian linux-image package (fixture ``kmod_oracle``, built by
fetch_oracle.py), plus VFIO variant drivers added *as modules* before depmod
runs, so that depmod writes their aliases into modules.alias (read by the code
under test) and modules.alias.bin (read by kmod) alike.  Appending lines to the
text file would not do: modprobe never reads modules.alias, only the .bin
index, and a modprobe.d alias would move them to another tier.

Queries are generated deterministically (seed below) from the file's own
``pci:`` patterns: every ``*`` filled with plausible hex fields, ``?`` with a
hex digit, ``[..]`` with a member of the class; plus non-matching mutations and
``vfio_pci:``/``vfio-pci:`` queries.  For each, the set of module names must be
exactly what ``modprobe -R -C <confdir> -d <root> -S <release>`` prints.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import random
import re
import time

import pytest

SEED = 20251125
HEX = '0123456789ABCDEF'
WIDTH = {'v': 8, 'd': 8, 'sv': 8, 'sd': 8, 'bc': 2, 'sc': 2, 'i': 2}
FIELDS = ('v', 'd', 'sv', 'sd', 'bc', 'sc', 'i')
PCI_RE = re.compile(r'^pci:v(?P<v>[^d]*)d(?P<d>[^s]*)sv(?P<sv>[^s]*)sd(?P<sd>[^b]*)'
                    r'bc(?P<bc>[^s]*)sc(?P<sc>[^i]*)i(?P<i>.*)$')
TOKEN_RE = re.compile(r'\[!?\]?[^\]]*\]|\\.|.', re.S)

_libc = ctypes.CDLL(None)
_libc.fnmatch.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)


def glibc_fnmatch(pattern, name):
    return _libc.fnmatch(pattern.encode('latin-1'), name.encode('latin-1'), 0) == 0


def _tokens(subpattern):
    return TOKEN_RE.findall(subpattern)


def _class_members(token, alphabet=HEX):
    members = [c for c in alphabet if glibc_fnmatch(token, c)]
    return members or [c for c in map(chr, range(0x21, 0x7f)) if glibc_fnmatch(token, c)]


def _fill(subpattern, width, rng, pool=None):
    """A string of `width` characters that the field's sub-pattern matches."""
    if subpattern == '*' and pool and rng.random() < 0.5:
        return rng.choice(pool)
    toks = _tokens(subpattern)
    stars = [i for i, t in enumerate(toks) if t == '*']
    free = max(0, width - (len(toks) - len(stars)))
    share = [0] * len(stars)
    for dummy in range(free if stars else 0):
        share[rng.randrange(len(stars))] += 1
    sizes = iter(share)
    return _fill_tokens(toks, rng, lambda: ''.join(rng.choice(HEX) for dummy in range(next(sizes))), HEX)


def _fill_generic(pattern, rng):
    """A string matching any glob: '*' -> 0-3 random chars, '?' -> one, [..] -> a member."""
    return _fill_tokens(_tokens(pattern), rng,
                        lambda: ''.join(rng.choice(HEX + 'xyz_:') for dummy in range(rng.randrange(4))),
                        HEX + 'abcdefghijklmnopqrstuvwxyz_-:')


def _fill_tokens(toks, rng, star, alphabet):
    """The string the glob tokens match: star() for each '*', a hex digit for '?', a member (of
    alphabet when it has one) for a [..] class, the escaped character, the literal."""
    out = []
    for t in toks:
        if t == '*':
            out.append(star())
        elif t == '?':
            out.append(rng.choice(HEX))
        elif t.startswith('[') and len(t) > 1:
            out.append(rng.choice(_class_members(t, alphabet)))
        elif t.startswith('\\'):
            out.append(t[1:])
        else:
            out.append(t)
    return ''.join(out)


class Generated:
    """The deterministic query set derived from an oracle's modules.alias."""

    def __init__(self, lines, builtin, seed=SEED):
        rng = random.Random(seed)
        self.pci_patterns = [w[1] for w in lines if w[1].startswith('pci:')]
        pools = dict((f, set()) for f in FIELDS)
        for p in self.pci_patterns:
            m = PCI_RE.match(p)
            if m:
                for f in FIELDS:
                    v = m.group(f)
                    if len(v) == WIDTH[f] and all(c in HEX for c in v):
                        pools[f].add(v)
        pools = dict((f, sorted(v)) for f, v in pools.items())
        self.matching = []
        self.unparsed = 0
        self.not_self_matching = []
        for p in self.pci_patterns:
            m = PCI_RE.match(p)
            if m:
                s = 'pci:' + ''.join(f + _fill(m.group(f), WIDTH[f], rng, pools[f]) for f in FIELDS)
            else:
                self.unparsed += 1
                s = _fill_generic(p, rng)
            if glibc_fnmatch(p, s):
                self.matching.append(s)
            else:
                self.not_self_matching.append((p, s))
        # Near misses: an unknown vendor, lowercase hex, a truncated or padded string.
        self.nonmatching = []
        for s in rng.sample(self.matching, min(1200, len(self.matching))):
            kind = rng.randrange(4)
            if kind == 0:
                s = 'pci:v0000%04X' % rng.choice((0xFFFE, 0xDEAD, 0x0BAD, 0xF00F)) + s[13:]
            elif kind == 1:
                s = s.lower()
            elif kind == 2:
                s = s[:rng.randrange(4, len(s))]
            else:
                s = s + rng.choice(('0', 'X', ':', '*'))
            self.nonmatching.append(s)
        # vfio_pci: the variants' own devices, with random subsystem/class fields,
        # and the generated pci modaliases prefixed as the VFIO algorithm does.
        self.vfio = []
        variant_ids = [(0x15B3, 0x101E), (0x1AF4, 0x1041), (0x19E5, 0xA256), (0x19E5, 0xA259),
                       (0x19E5, 0xA251), (0x1DD8, 0x1003), (0x10DE, 0x2342), (0x10DE, 0x2345),
                       (0x10DE, 0x2348), (0x10DE, 0x2941), (0x8086, 0x4941), (0x8086, 0x4943),
                       (0x8086, 0x4945), (0x8086, 0x4949), (0x1AF4, 0x1000), (0x15B3, 0x101F)]
        for v, d in variant_ids:
            for dummy in range(4):
                self.vfio.append('vfio_pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X' % (
                    v, d, rng.choice((v, 0x1014, 0x15D9)), rng.randrange(0x10000),
                    rng.choice((2, 3, 0x12, 0x0B)), rng.randrange(0x81), 0))
        for s in rng.sample(self.matching, min(600, len(self.matching))):
            self.vfio.append(rng.choice(('vfio_', 'vfio_', 'vfio-')) + s)
        # Everything else in the file (and the built-in aliases): usb:, acpi*:, of:,
        # fs-*, crypto-*, platform:...  Not the VFIO path, but the same lookup.
        others = [w[1] for w in lines if not w[1].startswith('pci:')]
        others += [a for a, _m in builtin]
        self.other_patterns = others
        self.other = []
        for p in rng.sample(others, min(1500, len(others))):
            s = _fill_generic(p, rng)
            if glibc_fnmatch(p, s):
                self.other.append(s)


@pytest.fixture(scope='module')
def generated(kmod_oracle):
    return Generated(kmod_oracle.alias_lines(), kmod_oracle.builtin_aliases())


@pytest.fixture(scope='module')
def resolver(kmod_oracle, aliases, tmp_path_factory):
    confdir = str(tmp_path_factory.mktemp('empty-modprobe.d'))
    return aliases.Resolver(kmod_oracle.modules_dir, kmod_oracle.release, [confdir]), confdir


def _diff(queries, resolver, confdir, oracle, modprobe):
    t0 = time.time()
    expected = modprobe.resolve_all(queries, confdir, oracle.root, oracle.release)
    t1 = time.time()
    mismatches = []
    for q, exp in zip(queries, expected):
        got = set(resolver.kmod_lookup(q))
        if got != exp:
            mismatches.append((q, sorted(exp), sorted(got)))
    t2 = time.time()
    print('%d queries: modprobe %.2fs, kmod_lookup %.2fs, %d non-empty, %d mismatches' % (
        len(queries), t1 - t0, t2 - t1, sum(1 for e in expected if e), len(mismatches)))
    return expected, mismatches


def _report(mismatches):
    return '\n'.join('%s: modprobe -R %s, kmod_lookup %s' % m for m in mismatches[:25])


def test_generated_queries_cover_the_file(generated, kmod_oracle):
    assert len(generated.pci_patterns) >= 2000
    assert not generated.not_self_matching, generated.not_self_matching[:10]
    assert len(generated.matching) >= 2000
    assert len(generated.vfio) >= 600
    print('release %s: %d pci patterns (%d unparsed), %d matching, %d near misses, %d vfio, %d other'
          % (kmod_oracle.release, len(generated.pci_patterns), generated.unparsed,
             len(generated.matching), len(generated.nonmatching), len(generated.vfio),
             len(generated.other)))


def test_pci_modaliases_match_kmod(generated, resolver, kmod_oracle, modprobe):
    res, confdir = resolver
    queries = generated.matching + generated.nonmatching
    expected, mismatches = _diff(queries, res, confdir, kmod_oracle, modprobe)
    assert all(expected[:len(generated.matching)]), 'a generated modalias matched nothing in kmod'
    assert not mismatches, '%d/%d mismatches:\n%s' % (len(mismatches), len(queries), _report(mismatches))


def test_vfio_pci_queries_match_kmod(generated, resolver, kmod_oracle, modprobe):
    res, confdir = resolver
    expected, mismatches = _diff(generated.vfio, res, confdir, kmod_oracle, modprobe)
    assert not mismatches, '%d mismatches:\n%s' % (len(mismatches), _report(mismatches))
    by_query = dict(zip(generated.vfio, expected))
    # The variants really are there for kmod: a variant and vfio_pci both match.
    q = next(q for q in generated.vfio if q.startswith('vfio_pci:v000015B3d0000101E'))
    assert by_query[q] == {'mlx5_vfio_pci', 'vfio_pci'}
    q = next(q for q in generated.vfio if q.startswith('vfio_pci:v00001AF4d00001041'))
    assert by_query[q] == {'virtio_vfio_pci', 'vfio_pci'}
    # Best candidate = fewest '*': the variant (5) beats vfio_pci (7).
    best, ambiguous, _c = res.choose(q)
    assert (best, ambiguous) == ('virtio_vfio_pci', False)


def test_other_alias_families_match_kmod(generated, resolver, kmod_oracle, modprobe):
    """usb:, acpi*:, of:, platform:, fs-*, crypto-*, built-in aliases: the same lookup."""
    res, confdir = resolver
    expected, mismatches = _diff(generated.other, res, confdir, kmod_oracle, modprobe)
    assert not mismatches, '%d/%d mismatches:\n%s' % (len(mismatches), len(generated.other),
                                                      _report(mismatches))


CONFIG = """\
# modprobe.d aliases win outright: kmod then never reads modules.alias.bin.
alias vfio_pci:v00001AF4d* custom_variant
alias vfio-pci:v000015B3d0000101E* custom-mlx
alias vfio_pci:v000010DEd0000234[25]sv*sd*bc*sc*i* custom_grace
alias pci:v00008086d*sv*sd*bc02sc00i* custom_nic
# plain modprobe -R applies neither of these
blacklist custom_variant
blacklist vfio_pci
install mlx5_vfio_pci /bin/false
"""


def test_modprobe_d_aliases_win_outright(generated, kmod_oracle, aliases, modprobe, tmp_path):
    confdir = tmp_path / 'modprobe.d'
    confdir.mkdir()
    (confdir / 'variants.conf').write_text(CONFIG)
    res = aliases.Resolver(kmod_oracle.modules_dir, kmod_oracle.release, [str(confdir)])
    queries = generated.vfio + generated.matching[::5]
    expected, mismatches = _diff(queries, res, str(confdir), kmod_oracle, modprobe)
    assert not mismatches, '%d mismatches:\n%s' % (len(mismatches), _report(mismatches))
    by_query = dict(zip(queries, expected))
    virtio = next(q for q in generated.vfio if q.startswith('vfio_pci:v00001AF4d00001041'))
    assert by_query[virtio] == {'custom_variant'}            # not virtio_vfio_pci, not vfio_pci
    mlx = next(q for q in generated.vfio if q.startswith('vfio_pci:v000015B3d0000101E'))
    assert by_query[mlx] == {'custom_mlx'}
    grace = next(q for q in generated.vfio if q.startswith('vfio_pci:v000010DEd00002345'))
    assert by_query[grace] == {'custom_grace'}
    nic = [q for q in queries if q.startswith('pci:v00008086') and 'bc02sc00i' in q]
    assert nic and all(by_query[q] == {'custom_nic'} for q in nic)
    assert sum(1 for e in expected if 'custom_nic' in e or 'custom_variant' in e) >= len(nic) + 4

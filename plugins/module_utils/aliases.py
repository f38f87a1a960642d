# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Steps 2-4 of the VFIO variant algorithm: which module matches an alias, as kmod decides.

kmod matches aliases with glibc ``fnmatch(pattern, alias, 0)`` and looks them up in
tiers, the first non-empty tier winning: ``alias`` lines of the modprobe
configuration, then ``modules.alias``, then the aliases of built-in drivers.
The VFIO algorithm then keeps the match with the fewest ``*`` (libvirt >= 10.0,
first line on a tie).  Each alias file is read once per run and indexed by the
literal prefix of its patterns, so a lookup costs a few dictionary probes plus
the patterns that share the query's prefix, not one fnmatch per line.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import stat

from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import unique

DEFAULT_MODPROBE_CONFIG_DIRS = ('/etc/modprobe.d', '/run/modprobe.d', '/usr/local/lib/modprobe.d',
                                '/usr/lib/modprobe.d', '/lib/modprobe.d')

SOURCE_CONFIG = 'modprobe.d'
SOURCE_ALIASES = 'modules.alias'
SOURCE_BUILTIN = 'modules.builtin.modinfo'
_TIER = {SOURCE_CONFIG: 0, SOURCE_ALIASES: 1, SOURCE_BUILTIN: 1}

_SPECIAL = '*?[\\'
# kmod's index (modules.alias.bin) compares bytes up to the first of these, then fnmatch()es the rest
_INDEX_SPECIAL = '*?['
_NEVER = object()


def normalize_module(name):
    """kmod compares module names with '-' and '_' equal; '_' is canonical."""
    return name.replace('-', '_')


def normalize_alias(alias):
    """kmod's alias_normalize(): '-' becomes '_' outside bracket expressions."""
    if '[' not in alias and ']' not in alias:
        return alias.replace('-', '_')
    out = []
    i = 0
    n = len(alias)
    while i < n:
        c = alias[i]
        if c == '[':
            j = alias.find(']', i)
            if j < 0:
                return None
            out.append(alias[i:j + 1])
            i = j + 1
            continue
        if c == ']':
            return None
        out.append('_' if c == '-' else c)
        i += 1
    return ''.join(out)


def literal_prefix(pattern, special=_SPECIAL):
    """The part of a pattern before its first special character."""
    rx = _SPECIAL_RX.get(special)
    if rx is None:
        rx = _SPECIAL_RX[special] = re.compile('[%s]' % re.escape(special))
    m = rx.search(pattern)
    return pattern[:m.start()] if m else pattern


_SPECIAL_RX = {}


def _bracket(pattern, i):
    """Translate the bracket expression starting at pattern[i] == '['.

    Returns (regex, next index), or (None, i + 1) when the bracket is not closed
    (glibc then matches '[' literally).
    """
    j = i + 1
    n = len(pattern)
    negate = j < n and pattern[j] in '!^'
    if negate:
        j += 1
    items = []
    first = True
    while j < n:
        c = pattern[j]
        if c == ']' and not first:
            body = ''.join(items)
            if not body:  # every item was an empty range
                return ('(?s:.)' if negate else '(?!)'), j + 1
            return ('[^%s]' % body if negate else '[%s]' % body), j + 1
        first = False
        if c == '[' and j + 1 < n and pattern[j + 1] == ':' and pattern.find(':]', j + 2) >= 0:
            end = pattern.find(':]', j + 2)
            name = pattern[j + 2:end]
            cls = _CLASSES.get(name)
            if cls is None:
                return _NEVER, n
            items.append(cls)
            j = end + 2
            continue
        if c == '\\':
            j += 1
            if j >= n:
                return None, i + 1
            c = pattern[j]
        lo = c
        if j + 2 < n and pattern[j + 1] == '-' and pattern[j + 2] != ']':
            hi = pattern[j + 2]
            k = j + 2
            if hi == '\\':
                k += 1
                if k >= n:
                    return None, i + 1
                hi = pattern[k]
            if hi >= lo:  # a reversed range matches nothing, as in glibc
                items.append('%s-%s' % (re.escape(lo), re.escape(hi)))
            j = k + 1
            continue
        items.append(re.escape(lo))
        j += 1
    return None, i + 1


_CLASSES = {
    'alnum': 'a-zA-Z0-9', 'alpha': 'a-zA-Z', 'blank': ' \\t', 'cntrl': '\\x00-\\x1f\\x7f',
    'digit': '0-9', 'graph': '\\x21-\\x7e', 'lower': 'a-z', 'print': '\\x20-\\x7e',
    'punct': '!-/:-@\\[-`{-~', 'space': ' \\t\\n\\r\\f\\v', 'upper': 'A-Z', 'xdigit': '0-9A-Fa-f',
}


def translate(pattern):
    """Compile a glibc fnmatch pattern (flags 0) to a regex, or None if it can never match."""
    out = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == '*':
            out.append('.*')
            i += 1
        elif c == '?':
            out.append('.')
            i += 1
        elif c == '[':
            rx, i2 = _bracket(pattern, i)
            if rx is _NEVER:
                return None
            if rx is None:
                out.append(re.escape('['))
            else:
                out.append(rx)
            i = i2
        elif c == '\\':
            if i + 1 >= n:
                return None  # glibc: a trailing backslash never matches
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile('(?s)' + ''.join(out) + r'\Z')


def fnmatch(pattern, name):
    """glibc fnmatch(pattern, name, 0) == 0.

    Exact for every pattern kmod can hold (kmod's alias_normalize() rejects any ']' outside
    a bracket, so character classes never reach it); for the constructs kmod cannot hold,
    an unknown class name, ``[.x.]``, ``[=x=]`` and a range running into the end of an
    unclosed bracket, it may differ from glibc, where glibc
    may still match when an earlier member of the same bracket does.
    """
    rx = translate(pattern)
    return bool(rx and rx.match(name))


class Alias:
    """One alias line: pattern, module, where it came from, and its position."""

    __slots__ = ('pattern', 'module', 'source', 'location', 'order', 'prefix', '_rx')

    def __init__(self, pattern, module, source, location, order):
        self.pattern = pattern
        self.module = normalize_module(module)
        self.source = source
        self.location = location
        self.order = order
        # modprobe.d aliases go through fnmatch() whole; indexed ones (modules.alias, built-in)
        # through kmod's trie: a literal prefix, then fnmatch() of the rest
        self.prefix = literal_prefix(pattern, _SPECIAL if source == SOURCE_CONFIG else _INDEX_SPECIAL)
        self._rx = False

    @property
    def wildcards(self):
        return self.pattern.count('*')

    def matches(self, name):
        """Whether name matches; the caller (the index) has checked that name starts with prefix."""
        if self._rx is False:
            self._rx = translate(self.pattern[len(self.prefix):])
        return bool(self._rx and self._rx.match(name, len(self.prefix)))

    def sort_key(self):
        """Best first: a modprobe.d alias wins outright, then fewest '*', then file order."""
        return (_TIER[self.source], self.wildcards, self.order)

    def as_dict(self, blacklisted=False):
        return {'module': self.module, 'pattern': self.pattern, 'wildcards': self.wildcards,
                'source': self.source, 'location': self.location, 'blacklisted': blacklisted}


class AliasIndex:
    """Alias patterns indexed by their literal prefix."""

    def __init__(self):
        self._by_prefix = {}
        self._lengths = set()
        self.count = 0

    def add(self, alias):
        key = alias.prefix
        self._by_prefix.setdefault(key, []).append(alias)
        self._lengths.add(len(key))
        self.count += 1

    def lookup(self, name):
        """Every alias whose pattern matches name, in insertion (file) order."""
        found = []
        for length in self._lengths:
            if length > len(name):
                continue
            for alias in self._by_prefix.get(name[:length], ()):
                if alias.matches(name):
                    found.append(alias)
        found.sort(key=lambda a: a.order)
        return found


def _name_chars(text):
    """A regex for the literal text of a normalized name as a file may spell it ('_' or '-')."""
    return ''.join('[-_]' if c == '_' else re.escape(c) for c in text)


class LazyAliasIndex(AliasIndex):
    """An AliasIndex over the text of modules.alias that parses only what lookups can match.

    A pattern can match a name only if its literal prefix is a prefix of the name.  So a
    lookup of ``vfio_pci:v...`` needs the lines whose pattern starts with ``vfio_pci:`` (or
    ``vfio-pci:``), and the few whose literal part is a shorter prefix of ``vfio_pci`` followed
    by a special character (``v*``, ``vfio?pci:...``); both are found, once per distinct head (the
    name up to its first ':'), by a regex over the whole text (C speed), not by a Python loop
    over every line.  Order is the byte offset: file order.

    The text is kept with a newline in front and the regexes start with the literal
    ``\nalias `` rather than ``^alias `` in multi-line mode: the regex engine then jumps from
    one ``\nalias `` to the next instead of trying every character (3-4x faster on
    Debian's 1.4 MB file; BENCHMARKS.md part 1, round 3).
    """

    def __init__(self, text, path):
        super(LazyAliasIndex, self).__init__()
        self._text = '\n' + text
        self._path = path
        self._heads = set()
        self._loaded = set()   # offsets of the lines in the index (two heads may share a wildcard line)
        self.count = len(text) + 1   # orders of later add()s (built-ins) come after the file's

    def _load(self, rx):
        # m.start() is the newline before the line: the line's offset in the file as read
        # (the text carries one newline in front), and the newlines up to it number the line
        text, pos, line = self._text, 0, 0
        for m in rx.finditer(text):
            line += text.count('\n', pos, m.start() + 1)
            pos = m.start() + 1
            if m.start() in self._loaded:
                continue
            pattern = normalize_alias(m.group(1))
            if pattern is None:
                continue
            self._loaded.add(m.start())
            alias = Alias(pattern, m.group(2), SOURCE_ALIASES, '%s:%d' % (self._path, line), m.start())
            self._by_prefix.setdefault(alias.prefix, []).append(alias)
            self._lengths.add(len(alias.prefix))

    def lookup(self, name):
        i = name.find(':')
        head = name[:i + 1] if i >= 0 else name
        if head not in self._heads:
            self._heads.add(head)
            # the patterns written with this head, then those whose literal part (before the
            # first special character, a ':' never in it) is a prefix of the head without its ':'
            self._load(re.compile(r'\nalias [^\S\n]*(%s%s)[^\S\n]+(\S+)'
                                  % (_name_chars(head), r'\S*' if i >= 0 else '')))
            stem = head[:-1] if i >= 0 else head
            shorter = ''
            for c in reversed(stem):
                shorter = '(?:%s%s)?' % (_name_chars(c), shorter)
            self._load(re.compile(r'\nalias [^\S\n]*(%s[*?\[]\S*)[^\S\n]+(\S+)' % shorter))
        return super(LazyAliasIndex, self).lookup(name)


class UntrustedFile(ValueError):
    """A file or directory that decides which driver a device gets is world-writable."""


def _refuse_world_writable(path, st, what):
    # Any local user could change what this run binds: refuse before anything is written.
    # A world-writable directory with the sticky bit (like /tmp) only lets users add their own
    # files, which the file check then catches when they are read.
    if st.st_mode & stat.S_IWOTH and not (stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX):
        raise UntrustedFile(
            'refusing to trust %s: this %s is world-writable (mode %04o), so any local user could change which '
            'driver a device gets; make it not world-writable (chmod o-w %s) and run again'
            % (path, what, stat.S_IMODE(st.st_mode), path))


def _read_text(path, refuse_world_writable=True):
    """The file's text, or None when it cannot be read; UntrustedFile when world-writable
    (unless ``refuse_world_writable`` is false: a file that decides no driver)."""
    try:
        with open(path, 'rb') as f:
            if refuse_world_writable:
                _refuse_world_writable(path, os.fstat(f.fileno()), 'file')
            return f.read().decode('utf-8', 'replace')
    except (IOError, OSError):
        return None


class ModprobeConfig:
    """What kmod reads from the modprobe configuration directories."""

    def __init__(self, dirs=DEFAULT_MODPROBE_CONFIG_DIRS):
        self.aliases = AliasIndex()
        self.blacklist = {}   # module -> "file:line"
        self.install = {}     # module -> (command, "file:line")
        self.files = []
        for path in self._files(dirs):
            self._parse(path)

    @staticmethod
    def _files(dirs):
        """kmod order: *.conf and *.alias files (not dot-files) sorted by name; a name in an
        earlier dir hides the same name in later ones."""
        chosen = {}
        for d in dirs:
            try:
                st = os.stat(d)
                names = os.listdir(d)
            except OSError:
                continue
            _refuse_world_writable(d, st, 'modprobe configuration directory')
            for name in names:
                if (name.endswith('.conf') or name.endswith('.alias')) and not name.startswith('.') \
                        and name not in chosen:
                    chosen[name] = os.path.join(d, name)
        return [chosen[n] for n in sorted(chosen)]

    def _parse(self, path):
        text = _read_text(path)
        if text is None:
            return
        self.files.append(path)
        lines = text.split('\n')
        i = 0
        while i < len(lines):
            lineno = i + 1
            line = lines[i]
            while line.endswith('\\') and i + 1 < len(lines):  # continuation lines
                i += 1
                line = line[:-1] + lines[i]
            i += 1
            words = line.split()
            if not words or words[0].startswith('#'):  # kmod: '#' starts a comment only as a line's first word
                continue
            where = '%s:%d' % (path, lineno)
            cmd = words[0]
            if cmd == 'alias' and len(words) >= 3:
                pattern = normalize_alias(words[1])
                if pattern is not None:
                    self.aliases.add(Alias(pattern, words[2], SOURCE_CONFIG, where, self.aliases.count))
            elif cmd == 'blacklist' and len(words) >= 2:
                self.blacklist.setdefault(normalize_module(words[1]), where)
            elif cmd == 'install' and len(words) >= 3:
                self.install.setdefault(normalize_module(words[1]), (' '.join(words[2:]), where))

    def disabled_by(self, module):
        """Where the configuration stops a module from loading by alias, or None.

        ``blacklist`` hides it from alias lookups; ``install M /bin/false`` (or
        ``/bin/true``, the other common idiom) makes modprobe run a no-op instead.
        """
        if module in self.blacklist:
            return 'blacklisted at %s' % self.blacklist[module]
        cmd = self.install.get(module)
        if cmd and os.path.basename(cmd[0].split()[0]) in ('false', 'true'):
            return "disabled by 'install %s %s' at %s" % (module, cmd[0], cmd[1])
        return None


class ModuleTree:
    """The module files of one kernel release: modules.alias, modules.dep, built-ins.

    ``modules`` and ``dependencies()`` (modules.dep and modules.builtin) are parsed on first use: a
    plan asks them, and the facts ask ``shipped_names()`` of the running kernel (one parse for both).
    """

    def __init__(self, modules_dir, kernel_release):
        self.base = os.path.join(modules_dir, kernel_release)
        self.aliases = AliasIndex()
        self._modules = {}   # module -> 'module' | 'builtin' (the built-ins of modules.builtin.modinfo first)
        self._deps = None
        self._listed = None  # the modules of modules.dep and modules.builtin, None without modules.dep
        self.alias_file_found = False
        self._load_aliases()
        self._load_builtin_modinfo()

    @property
    def modules(self):
        """{module: 'module' | 'builtin'}: every module this kernel release has."""
        if self._deps is None:
            self._load_modules()
        return self._modules

    def shipped_names(self):
        """The names of the modules this release ships (modules.dep) or has built in
        (modules.builtin), '-' read as '_'; None without modules.dep.  The built-ins known only
        from modules.builtin.modinfo are not among them (``modules`` has them)."""
        if self._deps is None:
            self._load_modules()
        return None if self._listed is None else set(self._listed)

    def dependencies(self, module):
        """The modules ``module`` (normalized) depends on, or None when modules.dep has no entry:
        its line is parsed when asked (a plan asks for the few modules it loads)."""
        line = self._dep_lines().get(module)
        return None if line is None else [module_of_path(d) for d in line.split()]

    def _dep_lines(self):
        if self._deps is None:
            self._load_modules()
        return self._deps

    def _load_aliases(self):
        path = os.path.join(self.base, 'modules.alias')
        text = _read_text(path)
        if text is None:
            return
        self.alias_file_found = True
        self.aliases = LazyAliasIndex(text, path)

    def _load_builtin_modinfo(self):
        path = os.path.join(self.base, 'modules.builtin.modinfo')
        text = _read_text(path)
        if text is None:
            return
        for entry in text.split('\0'):
            module, sep, rest = entry.partition('.')
            if not sep:
                continue
            if rest.startswith('alias='):
                pattern = normalize_alias(rest[6:])
                if pattern is not None:
                    self.aliases.add(Alias(pattern, module, SOURCE_BUILTIN, path, self.aliases.count))
            self._modules.setdefault(normalize_module(module), 'builtin')

    def _load_modules(self):
        dep_found, listed, self._deps = read_module_files(self.base)
        self._listed = listed if dep_found else None
        self._modules.update(listed)


def read_module_files(base, refuse_world_writable=True):
    """(modules.dep found, {module: 'module' | 'builtin'}, {module: the rest of its modules.dep
    line}) of the modules.dep and modules.builtin in ``base``: the one reading of these files
    (ModuleTree, module_names).  Names are normalized ('-' read as '_'); a module in both files
    is 'builtin'; the dependency lists stay text (ModuleTree.dependencies parses the few asked)."""
    found = False
    listed = {}
    deps = {}
    for name, kind in (('modules.dep', 'module'), ('modules.builtin', 'builtin')):
        text = _read_text(os.path.join(base, name), refuse_world_writable)
        if text is None:
            continue
        found = found or kind == 'module'
        for line in text.split('\n'):
            path, dummy, rest = line.partition(':')
            path = path.strip()
            if not path:
                continue
            mod = module_of_path(path)
            listed[mod] = kind
            if kind == 'module':
                deps[mod] = rest
    return found, listed, deps


def module_names(modules_dir, release):
    """Names of the modules a kernel release ships (modules.dep) or has built in
    (modules.builtin), with '-' read as '_' as kmod does; None without modules.dep.

    For a release other than the running one (whose ModuleTree.shipped_names() answers without
    another parse): its files decide no driver now, so a world-writable one is read, not refused."""
    found, listed, dummy = read_module_files(os.path.join(modules_dir, release), refuse_world_writable=False)
    return set(listed) if found else None


def module_of_path(path):
    """kernel/drivers/vfio/pci/vfio-pci-core.ko.xz -> vfio_pci_core: the module of a path in
    modules.dep, modules.builtin or an initramfs listing (os.path.basename's result, for the
    ~4,000 lines of a modules.dep)"""
    return normalize_module(path.rpartition('/')[2].split('.ko', 1)[0])


class Resolver:
    """Finds the VFIO driver modules for devices (steps 2-4), reading every file once."""

    def __init__(self, modules_dir, kernel_release, config_dirs=DEFAULT_MODPROBE_CONFIG_DIRS):
        self.tree = ModuleTree(modules_dir, kernel_release)
        self.config = ModprobeConfig(config_dirs)

    def matches(self, alias):
        """Every matching alias of every source, best first."""
        name = normalize_alias(alias)
        if name is None:
            return []
        found = self.config.aliases.lookup(name) + self.tree.aliases.lookup(name)
        found.sort(key=Alias.sort_key)
        return found

    def kmod_lookup(self, alias):
        """The module names `modprobe -R alias` prints: kmod's first non-empty tier.

        Blacklisting is not applied, as with plain ``modprobe -R``.
        """
        name = normalize_alias(alias)
        if name is None:
            return []
        for index in (self.config.aliases, self.tree.aliases):
            found = index.lookup(name)
            if found:
                if index is self.tree.aliases:
                    regular = [a for a in found if a.source == SOURCE_ALIASES]
                    found = regular or found
                return unique(a.module for a in found)
        return []

    def candidates(self, alias):
        """Candidates as reported to users: dicts, best first, blacklisting marked."""
        return [a.as_dict(blacklisted=self.config.disabled_by(a.module) is not None)
                for a in self.matches(alias)]

    def choose(self, alias):
        """(best module or None, ambiguous, candidates) for an alias.

        A candidate whose module the configuration blacklists is skipped, as kmod
        skips it in alias lookups; a tie between different modules on the best
        (tier, wildcard count) is flagged ambiguous and resolved by file order.
        """
        cands = self.candidates(alias)
        # a matching modprobe.d alias wins outright: kmod then never looks further, even
        # when that alias's module is blacklisted (and so loads nothing)
        tier = _TIER[cands[0]['source']] if cands else None
        usable = [c for c in cands if not c['blacklisted'] and _TIER[c['source']] == tier]
        if not usable:
            return None, False, cands
        best = usable[0]
        tier = _TIER[best['source']]
        rivals = set(c['module'] for c in usable
                     if _TIER[c['source']] == tier and c['wildcards'] == best['wildcards'])
        return best['module'], len(rivals) > 1, cands

    def dependencies(self, module):
        """The modules a module needs, from modules.dep (None when it has no entry there)."""
        return self.tree.dependencies(normalize_module(module))

    def availability(self, module):
        """'module', 'builtin' or None: whether this kernel release has the module."""
        return self.tree.modules.get(normalize_module(module))

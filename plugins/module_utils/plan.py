# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deciding, without writing: which devices, which driver, which action, and why.

``plan(request, snapshot)`` is a pure function: it reads nothing but the snapshot of the
host (snapshot.py reads it) and returns a :class:`Plan`, an immutable value whose
``devices`` are :class:`Entry` values.  Check mode and diff mode show it as it is; the
executor (execute.py) carries it out and returns outcomes, leaving the plan as it was.
Every invalid request and every refused device is collected into ``errors`` so that the
task fails before the first write, naming all the problems at once.

A snapshot holds what every plan needs (devices, IOMMU groups, loaded modules, the alias
index); facts only some plans need (whether a device is in use, the driver a loaded module
registers) are read for the devices and modules a plan names: a plan made on a snapshot
that lacks one lists it in ``needs``, and ``snapshot.plan_on_host`` reads those and plans
again.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from collections import namedtuple

from ansible_collections.hypervisor.vfio.plugins.module_utils import devices as devs
from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import normalize_module
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import unique

STATES = ('vfio', 'host')
GROUP_POLICIES = ('strict', 'all', 'ignore')
MAX_ITEMS = 4096
# Module and driver names: nothing that could leave a sysfs directory or split a line.
DRIVER_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z')
_HEX_RE = re.compile(r'^(?:0x)?([0-9a-fA-F]{1,6})\Z')
SELECTOR_KEYS = ('address', 'vendor', 'device', 'subsystem_vendor', 'subsystem_device', 'class',
                 'physfn', 'iommu_group', 'current_driver')
# Per-device settings written after the binding: reset methods (in the order the kernel tries
# them) and whether the device may enter D3cold.
SETTING_KEYS = ('reset_method', 'd3cold_allowed')
RESET_METHODS = ('flr', 'af_flr', 'pm', 'bus', 'cxl_bus', 'device_specific')
ITEM_KEYS = SELECTOR_KEYS + ('state', 'driver', 'optional') + SETTING_KEYS
# Actions that write to the device.
WRITING_ACTIONS = ('bind', 'rebind', 'override', 'restore', 'clear_override')
# Drivers named differently from their module, for the plan before the module is loaded;
# the executor always reads the real name from /sys/module/<module>/drivers/.
KNOWN_DRIVER_NAMES = {'vfio_pci': 'vfio-pci', 'vfio_platform': 'vfio-platform'}
# Per bus: the generic VFIO driver module, and the core library every VFIO variant driver uses.
VFIO_CORES = {'pci': ('vfio_pci', 'vfio_pci_core'), 'platform': ('vfio_platform', 'vfio_platform_base')}


# One device of a plan: what it is, what happens to it and why (tuples, never lists).
# settings: (attribute, value before, value written) per reset/power setting to change.
ENTRY_FIELDS = ('address', 'state', 'item', 'action', 'reason', 'module', 'driver', 'driver_known', 'candidates',
                'ambiguous', 'iommu_group', 'vendor', 'device', 'driver_before', 'override_before', 'driver_after',
                'override_after', 'host_modules', 'guards', 'forced', 'warnings', 'settings')
Entry = namedtuple('Entry', ENTRY_FIELDS)
# devices: Entry per device; modules: the VFIO modules to load; errors: why the plan is refused;
# changed: whether it writes; needs: facts the snapshot lacked (empty for a complete plan).
Plan = namedtuple('Plan', 'devices modules errors changed needs')
# What vfio_bind is asked: the parsed items and the options that change the decisions.
Request = namedtuple('Request', 'items group_policy force')


# The VFIO module chosen for one device: module, candidates (best first), ambiguous, warnings; or
# error, why none can be (then module is None).
Choice = namedtuple('Choice', 'module candidates ambiguous warnings error', defaults=((), False, (), None))


class RequestError(ValueError):
    """The request is invalid; raised before anything is read or written."""


class Item(namedtuple('Item', 'index selector state driver optional settings', defaults=(None,))):
    """One entry of ``devices``: a selector with its own state, driver pin and settings
    ({'reset_method': tuple of methods, 'd3cold_allowed': bool}, the keys given)."""

    __slots__ = ()

    @property
    def label(self):
        if list(self.selector) == ['address']:
            return 'devices[%d] (%s)' % (self.index, self.selector['address'])
        return 'devices[%d] %s' % (self.index, ', '.join(
            '%s=%s' % (k, self.selector[k]) for k in SELECTOR_KEYS if k in self.selector))


class Problems(list):
    """The problems of one request, collected so that all are reported at once."""

    def check(self, func, *args):
        """func(*args), or None with its RequestError recorded."""
        try:
            return func(*args)
        except RequestError as e:
            self.append(str(e))
            return None

    def raise_any(self):
        if len(self) == 1:
            raise RequestError(self[0])
        if self:
            raise RequestError('%d problems:\n- %s' % (len(self), '\n- '.join(self)))


def _sexagesimal(value):
    """The PCI address YAML 1.1 read as a base-60 number (01:00.0 -> 60.0), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 6000:
        return None  # also NaN and the infinities
    bus, rest = divmod(round(value * 10), 600)
    slot, function = divmod(rest, 10)
    if bus > 99 or slot > 31 or function > 7:
        return None
    return '%02d:%02d.%d' % (bus, slot, function)


def _not_a_string(value, what, example):
    """The message for a YAML scalar that is not the string it should be (None for a string)."""
    if isinstance(value, str):
        return None
    if isinstance(value, bool):
        return ('%s is the boolean %s, not a string: YAML reads unquoted yes/no/on/off/true/false as booleans; '
                'quote it in YAML: %s' % (what, value, example))
    if isinstance(value, (int, float)):
        return '%s is the %s %r, not a string; quote it in YAML: %s' % (
            what, 'integer' if isinstance(value, int) else 'number', value, example)
    return None


def _hex_spellings(value, width):
    """How an id that YAML 1.1 turned into this integer may have been written, and its quoted
    form: 0x10de -> '10de', 4318 -> '4318', 0300 (octal) -> '0300'."""
    out = [('0x%x' % value, '%x' % value), ('%d' % value, '%d' % value)]
    if value >= 8:
        out.append(('0%o' % value, '0%o' % value))
    return [(w, q) for w, q in out if len(q.lstrip('0') or '0') <= width and _HEX_RE.match(q)]


def _hex(value, width, what):
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads 0x10de as 4318 and 0300 as 192 (octal): the id as written is lost
        spellings = _hex_spellings(value, width) if value >= 0 else []
        hint = ', '.join("'%s' if you wrote %s" % (q, w) for w, q in spellings) or "like '10de'"
        raise RequestError('%s is the integer %d, not a string: YAML reads unquoted hexadecimal, decimal and '
                           'octal ids as numbers; quote it in YAML: %s' % (what, value, hint))
    message = _not_a_string(value, what, "'10de'")
    if message:
        raise RequestError(message)
    if not isinstance(value, str):
        raise RequestError('%s must be a hexadecimal id, got %r' % (what, value))
    m = _HEX_RE.match(value)
    if not m or len(m.group(1)) > width:
        raise RequestError('%s must be a hexadecimal id of at most %d digits, got %r (quote ids in YAML)'
                           % (what, width, value))
    return m.group(1).lower()


def _address(value, what, bus):
    if not isinstance(value, str):
        written = _sexagesimal(value)
        if written and not isinstance(value, bool):
            raise RequestError("%s is the number %r, not a string: YAML 1.1 reads an unquoted %s as a base-60 "
                               "number; quote it in YAML: '%s'" % (what, value, written, written))
        message = _not_a_string(value, what, "'0000:01:00.0'")
        raise RequestError(message or '%s must be a %s address string, got %s %r'
                           % (what, bus.name, type(value).__name__, value))
    addr = bus.normalize_address(value)
    if addr is None:
        raise RequestError('%s %r is not a %s address (expected like 0000:01:00.0 or 01:00.0)'
                           % (what, value, bus.name))
    return addr


def check_driver_name(name, what):
    if not isinstance(name, str) or not DRIVER_NAME_RE.match(name):
        raise RequestError('%s must be a kernel module or driver name (letters, digits, "_" and "-"; '
                           'no "/", "..", spaces or control characters), got %r' % (what, name))
    return name


def _one_of(value, choices, what):
    if value not in choices:
        raise RequestError('%s must be one of %s, got %r' % (what, ', '.join(choices), value))
    return value


def parse_request(params, bus):
    """Validate the module's parameters into Items; raise RequestError naming every problem."""
    problems = Problems()
    state = problems.check(_one_of, params.get('state') or 'vfio', STATES, 'state')
    problems.check(_one_of, params.get('iommu_group', 'strict'), GROUP_POLICIES, 'iommu_group')
    driver = params.get('driver')
    if driver is not None:
        driver = problems.check(check_driver_name, driver, 'driver')
        if state == 'host':
            problems.append('driver pins a VFIO driver and is meaningless with state=host')
    timeout = params.get('timeout', 10)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
        problems.append('timeout must be a number of seconds between 1 and 3600, got %r' % (timeout,))
    raw = params.get('devices')
    items = []
    if not isinstance(raw, list):
        problems.append('devices must be a list of PCI addresses or selector dicts')
    elif len(raw) > MAX_ITEMS:
        problems.append('devices has %d entries; at most %d are accepted in one call' % (len(raw), MAX_ITEMS))
    else:
        items = [parse_item(i, entry, state or 'vfio', driver, bus, problems) for i, entry in enumerate(raw)]
    problems.raise_any()
    return items


def parse_item(index, entry, state, driver, bus, problems):
    where = 'devices[%d]' % index
    if not isinstance(entry, (str, dict)):
        if isinstance(entry, (int, float)):  # a bare address YAML made a number of (01:00.0 -> 60.0)
            problems.check(_address, entry, where, bus)
        elif entry is None:
            problems.append('%s is empty (null in YAML); give a PCI address or a selector dict' % where)
        else:
            problems.append('%s must be a PCI address string or a selector dict, got %s %r'
                            % (where, type(entry).__name__, entry))
        return None
    if isinstance(entry, str):
        entry = {'address': entry}
    unknown = sorted(set(entry) - set(ITEM_KEYS))
    if unknown:
        problems.append('%s has unknown keys %s; known keys: %s' % (where, ', '.join(unknown), ', '.join(ITEM_KEYS)))
    before = len(problems)
    selector = {}
    for key in SELECTOR_KEYS:
        value = entry.get(key)
        if value is None:
            continue
        if key in ('address', 'physfn'):
            got = problems.check(_address, value, '%s: %s' % (where, key), bus)
        elif key in ('vendor', 'device', 'subsystem_vendor', 'subsystem_device'):
            got = problems.check(_hex, value, 4, '%s: %s' % (where, key))
            got = got.zfill(4) if got else got
        elif key == 'class':
            got = problems.check(_hex, value, 6, '%s: class' % where)
        elif key == 'iommu_group':
            got = value
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append('%s: iommu_group must be a non-negative integer, got %r' % (where, value))
        else:
            got = problems.check(check_driver_name, value, '%s: current_driver' % where)
        selector[key] = got
    if not selector:
        problems.append('%s selects nothing: give an address or at least one of %s'
                        % (where, ', '.join(SELECTOR_KEYS[1:])))
    item_state = entry.get('state') or state
    if item_state not in STATES:
        problems.append('%s: state must be one of %s, got %r' % (where, ', '.join(STATES), item_state))
    item_driver = entry.get('driver', driver)
    if entry.get('driver') is not None:
        problems.check(check_driver_name, item_driver, '%s: driver' % where)
    if item_state == 'host':
        if entry.get('driver') is not None:
            problems.append('%s: driver pins a VFIO driver and is meaningless with state=host' % where)
        item_driver = None
    optional = entry.get('optional', False)
    if not isinstance(optional, bool):
        problems.append('%s: optional must be a boolean, got %r' % (where, optional))
    settings = {}
    device = '%s (%s)' % (where, selector['address']) if selector.get('address') else where
    if entry.get('reset_method') is not None:
        settings['reset_method'] = problems.check(reset_methods, entry['reset_method'], device)
    if entry.get('d3cold_allowed') is not None:
        settings['d3cold_allowed'] = problems.check(d3cold_allowed, entry['d3cold_allowed'], device)
    if len(problems) > before:
        return None
    return Item(index, selector, item_state, item_driver, optional, settings)


def d3cold_allowed(value, where):
    """d3cold_allowed as a bool: only a real boolean (a quoted 'no' or a 0 is refused, never converted)."""
    if not isinstance(value, bool):
        raise RequestError('%s: d3cold_allowed must be true or false (unquoted), or left out to keep the kernel\'s '
                           'setting, got %r' % (where, value))
    return value


def reset_methods(value, where):
    """reset_method as a tuple of method names: a list, or a string of names separated by spaces."""
    names = value.split() if isinstance(value, str) else value
    if (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)
            or any(n not in RESET_METHODS for n in names) or len(set(names)) != len(names)):
        raise RequestError('%s: reset_method must be a non-empty list of distinct reset methods among %s, in the '
                           'order the kernel should try them, got %r' % (where, ', '.join(RESET_METHODS), value))
    return tuple(names)


def selects(selector, rec):
    for key, want in selector.items():
        if key == 'class':
            if not (rec.get('class') or '').startswith(want):
                return False
        elif key == 'current_driver':
            if rec.get('driver') != want:
                return False
        elif key == 'address':
            if rec['address'] != want:
                return False
        elif rec.get(key) != want:
            return False
    return True


class _Planner:
    """The work of one ``plan()`` call: reads only the snapshot, writes only its own state."""

    def __init__(self, request, snapshot):
        self.snapshot = snapshot
        self.resolver = snapshot.resolver
        self.kernel_release = snapshot.kernel_release
        self.bus = snapshot.bus
        self.group_policy = request.group_policy
        self.force = request.force
        self.devices = snapshot.devices
        self.groups = snapshot.groups
        # grows with the candidates of each device planned, in address order
        self.vfio_modules = set(snapshot.vfio_modules)
        self.errors = []
        self.needs = set()

    def _fact(self, key, default):
        """A fact the snapshot holds; a missing one is recorded in ``needs`` (the plan is then
        incomplete: read it and plan again) and stands in as ``default``."""
        facts = self.snapshot.facts
        if key in facts:
            return facts[key]
        self.needs.add(key)
        return default

    def _in_use(self, rec, kind):
        return list(self._fact(('in_use', rec['address'], kind), ()))

    # -- targets -------------------------------------------------------------
    def targets(self, items):
        """{address: item} for every device the items select; errors for the rest."""
        chosen = {}
        for item in items:
            sel = item.selector
            if 'address' in sel and sel['address'] not in self.devices:
                self.errors.append('%s: no device %s on this host (nothing at %s/%s)' % (
                    item.label, sel['address'], self.snapshot.devices_path, sel['address']))
                continue
            if 'physfn' in sel and sel['physfn'] not in self.devices:
                self.errors.append('%s: physical function %s does not exist' % (item.label, sel['physfn']))
                continue
            found = [a for a in sorted(self.devices) if selects(sel, self.devices[a])]
            if not found and not item.optional:
                self.errors.append('%s matches no device; add optional: true if that is expected' % item.label)
            for addr in found:
                prev = chosen.get(addr)
                if prev is not None and (prev.state, prev.driver) != (item.state, item.driver):
                    self.errors.append('%s is selected twice with different intents: %s (state=%s, driver=%s) '
                                       'and %s (state=%s, driver=%s)' % (
                                           addr, prev.label, prev.state, prev.driver,
                                           item.label, item.state, item.driver))
                    continue
                chosen.setdefault(addr, item)
        return chosen

    # -- per device ----------------------------------------------------------
    def _module_for(self, rec, pin):
        """The Choice of VFIO module for a device (its ``error`` says why there is none)."""
        cands = []
        ambiguous = False
        warnings = []
        if rec['modalias']:
            best, ambiguous, cands = self.resolver.choose(self.bus.vfio_alias(rec['modalias']))
            self.vfio_modules.update(c['module'] for c in cands)
        else:
            best = None
        if pin:
            module = normalize_module(pin)
            if not self._available(module):
                drv_module = self._fact(('driver_module', pin), None)
                if drv_module:
                    module = drv_module
                else:
                    return Choice(None, error='driver %r is not a module of kernel %s (not in modules.dep, '
                                  'modules.builtin, nor loaded) and no loaded driver has that name'
                                  % (pin, self.kernel_release))
            disabled = self.resolver.config.disabled_by(module)
            if disabled:
                return Choice(None, error='pinned module %s is %s; remove that line or pin another driver'
                              % (module, disabled))
            not_vfio = self._not_vfio_driver(module)
            if not_vfio:
                return Choice(None, error=not_vfio)
            self.vfio_modules.add(module)
            return Choice(module, cands, False, warnings)
        if not rec['modalias']:
            return Choice(None, error='the kernel exposes no modalias for it, so no VFIO driver can be chosen; '
                          'pin one with driver:')
        if best is None:
            skipped = [c['module'] for c in cands if c['blacklisted']]
            why = (' (candidates %s are blacklisted in modprobe.d)' % ', '.join(skipped)) if skipped else ''
            return Choice(None, error='no VFIO driver of kernel %s matches %s%s; load/install vfio-pci or pin a '
                          'driver' % (self.kernel_release, self.bus.vfio_alias(rec['modalias']), why))
        if not self._available(best):
            return Choice(None, error='best VFIO driver %s (from %s) is not installed for kernel %s; run depmod '
                          'or pin a driver' % (best, cands[0]['location'], self.kernel_release))
        for c in cands:
            if c['blacklisted']:
                warnings.append('skipped VFIO driver %s: %s' % (c['module'], self.resolver.config.disabled_by(c['module'])))
        if ambiguous:
            rivals = [c['module'] for c in cands if c['wildcards'] == cands[0]['wildcards']]
            warnings.append('ambiguous VFIO variants %s tie with %d wildcards; %s wins by file order '
                            '(pin driver: to choose)' % (', '.join(unique(rivals)), cands[0]['wildcards'], best))
        return Choice(best, cands, ambiguous, warnings)

    def _not_vfio_driver(self, module):
        """Why a pinned module is no VFIO driver of this bus, or None when it is one.

        A VFIO driver is the generic one (vfio_pci) or a variant, and every variant is built
        on the core library (vfio_pci_core): modules.dep lists it among the variant's
        dependencies, and a loaded variant is among the library's holders in /sys/module.
        """
        generic, core = VFIO_CORES.get(self.bus.name, (None, None))
        if generic is None or module == generic:
            return None
        deps = self.resolver.dependencies(module)
        if core in (deps or ()) or module in self.snapshot.core_holders:
            return None
        if module == core:
            what = 'it is the VFIO library, which registers no driver'
        elif deps is None and self.resolver.availability(module) == 'builtin':
            what = 'it is built into kernel %s, and nothing shows it uses %s' % (self.kernel_release, core)
        elif deps:
            what = 'it does not use %s: it depends on %s%s' % (core, ', '.join(deps[:6]), ', ...' if deps[6:] else '')
        elif deps is not None:
            what = 'it depends on no other module, so not on %s' % core
        else:
            what = 'it is not in modules.dep of kernel %s and does not hold %s' % (self.kernel_release, core)
        return ('driver: %s is not a VFIO driver (%s); state: vfio needs %s or a VFIO variant driver (a module '
                'that depends on %s), and force does not change that. To give the device to %s, use state: host'
                % (module, what, generic, core, module))

    def _available(self, module):
        return bool(self.resolver.availability(module)) or module in self.snapshot.loaded_modules

    def driver_name(self, module):
        """(driver name, known): read from /sys/module when loaded, else predicted."""
        name = self._fact(('module_driver', module), None) if module in self.snapshot.loaded_modules else None
        if name:
            return name, True
        return KNOWN_DRIVER_NAMES.get(module, module), False

    def _on_module(self, rec, module, driver):
        if not rec['driver']:
            return False
        return rec['driver'] == driver or normalize_module(rec.get('driver_module') or '') == module

    def plan_vfio(self, addr, item, via=None):
        rec = self.devices[addr]
        entry = self._entry(rec, 'vfio', via or item.label)
        if rec['is_bridge']:
            self.errors.append('%s: %s is a PCI bridge (class %s); bridges are never handed to VFIO'
                               % (entry['item'], addr, rec['class']))
            return entry
        choice = self._module_for(rec, item.driver)
        if choice.error:
            self.errors.append('%s: %s: %s' % (entry['item'], addr, choice.error))
            return entry
        module = choice.module
        driver, known = self.driver_name(module)
        entry.update(module=module, driver=driver, driver_known=known, candidates=choice.candidates,
                     ambiguous=choice.ambiguous, warnings=choice.warnings)
        if self._on_module(rec, module, driver):
            driver = rec['driver']  # the bound driver is the module's driver: its real name
            entry.update(driver=driver, driver_known=True)
            if rec['driver_override'] == driver:
                entry.update(action='none', reason='already bound to %s with driver_override set' % driver)
            else:
                entry.update(action='override', reason='bound to %s; driver_override %s is set so the binding '
                             'survives a re-probe (the device is not unbound)' % (driver, driver))
        elif not rec['driver']:
            entry.update(action='bind', reason='unbound; binding to %s' % driver)
            self._refuse_in_use(entry, rec, self._in_use(rec, 'gpu'))  # a firmware framebuffer has no pci driver
        else:
            entry.update(action='rebind', reason='moving from %s to %s' % (rec['driver'], driver))
            self._guard(entry, rec, leaving_vfio=devs.is_vfio_driver(rec, self.vfio_modules))
        if entry['action'] in ('bind', 'rebind') and rec['iommu_group'] is None \
                and not self._fact(('noiommu_mode',), False):
            # a VFIO driver's probe fails with -22 on a device no IOMMU covers: refused before any write
            self.errors.append('%s: %s has no IOMMU group: the IOMMU is not enabled (or does not cover this device), '
                               'so %s cannot take it. Enable VT-d / AMD-Vi in the firmware and the IOMMU on the '
                               'kernel command line (vfio_facts reports them: iommu.enable_args), reboot, then re-run'
                               % (entry['item'], addr, driver))
        entry.update(driver_after=driver, override_after=driver)
        no_reset = devs.no_reset_reason(rec)
        if no_reset:
            entry['warnings'].append('%s: %s' % (addr, no_reset))
        self._settings(entry, rec, item)
        return entry

    def plan_host(self, addr, item):
        rec = self.devices[addr]
        entry = self._entry(rec, 'host', item.label)
        self._settings(entry, rec, item)
        host_mods = []
        if rec['modalias']:
            host_mods = unique(a.module for a in self.resolver.matches(rec['modalias'])
                               if not self.resolver.config.disabled_by(a.module))
        entry['host_modules'] = host_mods
        on_vfio = devs.is_vfio_driver(rec, self.vfio_modules)
        entry['override_after'] = None
        if rec['driver'] and not on_vfio:
            if rec['driver_override'] is None:
                entry.update(action='none', reason='on host driver %s' % rec['driver'])
            else:
                entry.update(action='clear_override', reason='on host driver %s; clearing driver_override %s'
                             % (rec['driver'], rec['driver_override']))
            entry['driver_after'] = rec['driver']
            return entry
        no_probe = self._no_host_probe(rec, host_mods)
        if not rec['driver'] and (no_probe or not host_mods):
            why = no_probe or 'kernel %s has no host driver for %s' % (self.kernel_release, rec['modalias'])
            if rec['driver_override'] is None:
                entry.update(action='none', reason='unbound, and %s' % why)
            else:
                entry.update(action='clear_override', reason='unbound; clearing driver_override %s (%s)'
                             % (rec['driver_override'], why))
            return entry
        entry['driver_after'] = host_mods[0] if host_mods and not no_probe else None
        entry.update(action='restore', reason='%s; giving it back to the host (%s)' % (
            'on VFIO driver %s' % rec['driver'] if rec['driver'] else 'unbound',
            ', '.join(host_mods) or 'no host driver known'))
        if rec['driver']:
            self._guard(entry, rec, leaving_vfio=True)
        return entry

    def _no_host_probe(self, rec, host_mods):
        """Why the kernel gives this device to no host driver, or None: a VF whose PF has
        sriov_drivers_autoprobe 0 is probed only for a driver_override, never for its host
        driver (a re-probe would be a write that changes nothing, on every run)."""
        pf = self.devices.get(rec['physfn']) if rec.get('physfn') else None
        if pf and pf['sriov_drivers_autoprobe'] is False:
            return ('its PF %s has sriov_drivers_autoprobe 0, so the kernel probes no host driver (%s) for a '
                    'VF' % (rec['physfn'], ', '.join(host_mods) or 'none known'))
        return None

    def _entry(self, rec, state, label):
        return {
            'address': rec['address'], 'state': state, 'item': label, 'action': 'none', 'reason': '',
            'module': None, 'driver': None, 'driver_known': True, 'candidates': [], 'ambiguous': False,
            'iommu_group': rec['iommu_group'], 'vendor': rec['vendor'], 'device': rec['device'],
            'driver_before': rec['driver'], 'override_before': rec['driver_override'],
            'driver_after': rec['driver'], 'override_after': rec['driver_override'],
            'host_modules': [], 'guards': [], 'forced': False, 'warnings': [], 'settings': [],
        }

    def _settings(self, entry, rec, item):
        """The reset and power settings of the item that differ from the device's: (attribute,
        value now, value to write), in the kernel's spelling; an attribute the kernel does not
        show for the device is an error."""
        want = item.settings or {}
        out = []
        for attr in SETTING_KEYS:
            if want.get(attr) is None:
                continue
            now = rec.get(attr)
            if now is None:
                self.errors.append('%s: %s: the kernel shows no %s attribute for it (%s), so %s cannot be set; '
                                   'remove %s from this entry' % (
                                       entry['item'], rec['address'], attr,
                                       '%s/%s' % (self.snapshot.devices_path, rec['address']),
                                       attr, attr))
                continue
            now = ' '.join(now) if attr == 'reset_method' else ('1' if now else '0')
            value = ' '.join(want[attr]) if attr == 'reset_method' else ('1' if want[attr] else '0')
            if now != value:
                out.append((attr, now, value))
        entry['settings'] = out

    def _guard(self, entry, rec, leaving_vfio):
        """Refuse to take a device the host is using (unless force); never the NIC of a live
        SSH session, force or not: that change belongs on the console."""
        sessions = self._in_use(rec, 'ssh')
        reasons = sessions + self._in_use(rec, 'nic')
        reasons += self._in_use(rec, 'block')
        reasons += self._in_use(rec, 'vfio' if leaving_vfio else 'gpu')
        self._refuse_in_use(entry, rec, reasons, sessions)

    def _refuse_in_use(self, entry, rec, reasons, sessions=()):
        """Record the reasons; refuse the device unless force (then warn); a live SSH session
        is refused even with force."""
        entry['guards'] = reasons
        if sessions:
            self.errors.append('%s: refusing to unbind %s from %s: %s. force: true does not override this: '
                               'it would cut that session off. Make this change from the console (or over '
                               'another NIC)' % (entry['item'], rec['address'], rec['driver'], '; '.join(reasons)))
        elif reasons and self.force:
            entry['forced'] = True
            entry['warnings'].append('force: proceeding although ' + '; '.join(reasons))
        elif reasons:
            what = ('unbind %s from %s' % (rec['address'], rec['driver']) if rec['driver']
                    else 'bind %s (no driver bound now)' % rec['address'])
            self.errors.append('%s: refusing to %s: %s. Use force: true only if you are sure '
                               '(for example from a console, not over this connection)' % (
                                   entry['item'], what, '; '.join(reasons)))

    # -- groups --------------------------------------------------------------
    def _group_check(self, entries, items_by_addr):
        targets = dict((e['address'], e) for e in entries if e['state'] == 'vfio')
        extra = []
        for num in sorted(set(e['iommu_group'] for e in targets.values() if e['iommu_group'] is not None)):
            others = [a for a in self.groups.get(num, []) if a not in targets]
            # a member this call gives back to the host blocks the group as much as one on a host driver
            blocking = [a for a in others
                        if not devs.member_ok(self.devices.get(a), self.vfio_modules)
                        or (a in items_by_addr and not self.devices[a]['is_bridge'])]
            if not blocking:
                continue
            members = ', '.join('%s (%s)' % (a, (self.devices.get(a) or {}).get('driver')) for a in blocking)
            mine = ', '.join(sorted(a for a in targets if targets[a]['iommu_group'] == num))
            if self.group_policy == 'strict':
                self.errors.append('IOMMU group %s of %s is not viable: %s stay on host drivers. Bind them too '
                                   '(iommu_group: all, or list them), or iommu_group: ignore to proceed anyway'
                                   % (num, mine, members))
            elif self.group_policy == 'all':
                for a in blocking:
                    if a in items_by_addr:
                        self.errors.append('IOMMU group %s: %s is given back to the host by %s while %s is bound '
                                           'to VFIO with iommu_group: all' % (num, a, items_by_addr[a].label, mine))
                    else:
                        extra.append((a, 'IOMMU group %s of %s' % (num, mine)))
            else:
                for e in targets.values():
                    if e['iommu_group'] == num:
                        e['warnings'].append('IOMMU group %s stays non-viable: %s' % (num, members))
        return extra

    def plan(self, items):
        """The plan as mutable dicts (``plan()`` freezes it)."""
        chosen = self.targets(items)
        entries = []
        for addr in sorted(chosen):
            item = chosen[addr]
            entries.append(self.plan_vfio(addr, item) if item.state == 'vfio' else self.plan_host(addr, item))
        for addr, via in self._group_check(entries, chosen):
            entries.append(self.plan_vfio(addr, Item(-1, {'address': addr}, 'vfio', None, False), via=via))
        modules = unique(e['module'] for e in entries if e['action'] in ('bind', 'rebind') and e['module'])
        return Plan(devices=tuple(_frozen(e) for e in entries), modules=tuple(modules), errors=tuple(self.errors),
                    changed=any(e['action'] in WRITING_ACTIONS or e['settings'] for e in entries),
                    needs=frozenset(self.needs))


def _frozen(entry):
    """An entry dict of the planner as an Entry, its lists as tuples."""
    return Entry(**dict((k, tuple(v) if isinstance(v, list) else v) for k, v in entry.items()))


def plan(request, snapshot):
    """The plan for a Request against a snapshot of the host: a pure function (no reads, no
    writes, the arguments untouched).  ``needs`` lists the facts the snapshot lacked."""
    return _Planner(request, snapshot).plan(request.items)


def diff_of(plan, outcomes=None):
    """before/after per device; after is what the outcomes (execute.Outcome by address) found
    when the plan was applied, else what the plan expects."""
    before = {}
    after = {}
    outcomes = outcomes or {}
    for e in plan.devices:
        o = outcomes.get(e.address)
        before[e.address] = {'driver': e.driver_before, 'driver_override': e.override_before}
        after[e.address] = {'driver': o.driver_after if o else e.driver_after,
                            'driver_override': o.override_after if o else e.override_after}
        for attr, was, value in e.settings:
            before[e.address][attr] = was
            after[e.address][attr] = value
    return {'before': before, 'after': after}

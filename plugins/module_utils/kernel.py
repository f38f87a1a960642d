# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one access object for the kernel's files (sysfs, procfs, /dev/kmsg).

Every read and write of the collection goes through :class:`KernelFS`, rooted at
``sysfs_path`` and ``procfs_path``, so tests can point it at a fake tree or replace it
with a fake kernel.  Nothing else in the collection builds an absolute path.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import select
import time

# A PCI address as the kernel names it: domain:bus:slot.function.
PCI_ADDRESS_RE = re.compile(r'^(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])\Z')


class KernelError(Exception):
    """A kernel file operation failed; carries the path and the errno."""

    def __init__(self, message, path=None, err=None):
        super(KernelError, self).__init__(message)
        self.path = path
        self.errno = err


class WriteTimeout(KernelError):
    """A sysfs write did not return within its bound (it may still complete later)."""

    def __init__(self, path, timeout, pid):
        super(WriteTimeout, self).__init__(
            'write to %s still blocked after %ss (the kernel is waiting, most likely for a '
            'process that holds the device; writer pid %s is left to finish)' % (path, timeout, pid),
            path=path, err=errno.ETIMEDOUT)
        self.pid = pid


_PCI_MODALIAS_RE = re.compile(
    r'pci:v([0-9A-Fa-f]{8})d([0-9A-Fa-f]{8})sv([0-9A-Fa-f]{8})sd([0-9A-Fa-f]{8})'
    r'bc([0-9A-Fa-f]{2})sc([0-9A-Fa-f]{2})i([0-9A-Fa-f]{2})\Z')


class Bus:
    """What differs between buses for the VFIO algorithm.

    The collection drives PCI; the bus's paths, address grammar and alias prefix are kept
    together here so that the rest of the engine names none of them.
    """

    def __init__(self, name, address_re, bridge_classes=()):
        self.name = name
        self.address_re = address_re
        self.bridge_classes = tuple(bridge_classes)

    def devices_dir(self):
        return 'bus/%s/devices' % self.name

    def device_dir(self, address):
        return 'bus/%s/devices/%s' % (self.name, address)

    def drivers_dir(self):
        return 'bus/%s/drivers' % self.name

    def driver_dir(self, driver):
        return 'bus/%s/drivers/%s' % (self.name, driver)

    def drivers_probe(self):
        return 'bus/%s/drivers_probe' % self.name

    def vfio_alias(self, modalias):
        """Step 3 of the algorithm: the alias a VFIO driver for this device publishes."""
        return 'vfio_' + modalias

    def module_driver_prefix(self):
        """/sys/module/<module>/drivers/<bus>:<driver> names the driver a module registers."""
        return self.name + ':'

    def ids_from_modalias(self, modalias):
        """The ID attributes the kernel prints into this bus's modalias, or None.

        A PCI modalias (``pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00``) is made
        by the kernel from the same fields as the vendor, device, subsystem_vendor,
        subsystem_device and class attributes: one read instead of six.
        """
        if self.name != 'pci' or not modalias:
            return None
        m = _PCI_MODALIAS_RE.match(modalias)
        if not m:
            return None
        v, d, sv, sd, bc, sc, i = (g.lower() for g in m.groups())
        return {'vendor': v[4:], 'device': d[4:], 'subsystem_vendor': sv[4:], 'subsystem_device': sd[4:],
                'class': bc + sc + i}

    def normalize_address(self, address):
        """Return the canonical address, or None when it is not one of this bus."""
        m = PCI_ADDRESS_RE.match(address or '')
        if not m:
            return None
        domain = (m.group(1) or '0000').lower()
        return '%s:%s:%s.%s' % (domain.zfill(4), m.group(2).lower(), m.group(3).lower(), m.group(4))


PCI = Bus('pci', PCI_ADDRESS_RE, bridge_classes=('0604', '0609'))
BUSES = {'pci': PCI}


class KernelFS:
    """Reads and writes the kernel's files under a sysfs root and a procfs root."""

    def __init__(self, sysfs_path='/sys', procfs_path='/proc', kmsg_path='/dev/kmsg'):
        self.sysfs_path = sysfs_path
        self.procfs_path = procfs_path
        self.kmsg_path = kmsg_path
        self._writer = None

    def close(self):
        """End the writer process of the bounded writes, if one was started (it also ends by
        itself when this process exits)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- paths -------------------------------------------------------------
    def sys(self, rel):
        return self.sysfs_path + '/' + rel if rel[:1] != '/' else rel

    def proc(self, rel):
        return os.path.join(self.procfs_path, rel)

    # -- reads -------------------------------------------------------------
    @staticmethod
    def _read(path):
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                return read_fd(fd).decode('utf-8', 'replace')
            finally:
                os.close(fd)
        except (IOError, OSError) as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENODEV, errno.ENXIO):
                return None
            raise KernelError('cannot read %s: %s' % (path, os.strerror(e.errno or 0)), path, e.errno)

    def read(self, rel):
        """Text of a sysfs attribute, stripped; None when the kernel does not expose it."""
        text = self._read(self.sys(rel))
        return None if text is None else text.strip()

    def read_optional(self, rel):
        """Like read(), but an unreadable attribute is None too (facts never crash)."""
        try:
            return self.read(rel)
        except KernelError:
            return None

    def read_proc(self, rel):
        """Raw text of a procfs file, or None."""
        try:
            return self._read(self.proc(rel))
        except KernelError:
            return None

    def read_attrs(self, rel, names):
        """{name: stripped text or None} of several attributes of one sysfs directory, as
        read_optional() reads each (an absent or unreadable attribute is None): one tight loop
        for the facts' per-device reads."""
        base = self.sys(rel) + '/'
        out = {}
        for name in names:
            try:
                fd = os.open(base + name, os.O_RDONLY)
            except (IOError, OSError):
                out[name] = None
                continue
            try:
                out[name] = read_fd(fd).decode('utf-8', 'replace').strip()
            except (IOError, OSError):
                out[name] = None
            finally:
                os.close(fd)
        return out

    def link_names(self, rel, names):
        """{name: basename of the symlink's target or None} for entries of one sysfs directory."""
        base = self.sys(rel) + '/'
        out = {}
        for name in names:
            try:
                out[name] = os.readlink(base + name).rpartition('/')[2]
            except OSError:
                out[name] = None
        return out

    def link_name(self, rel):
        """Basename of a sysfs symlink's target (e.g. the bound driver), or None."""
        try:
            return os.path.basename(os.readlink(self.sys(rel)))
        except OSError:
            return None

    def link_path(self, rel):
        """Where a sysfs symlink (``bus/pci/devices/<addr>``, ``class/net/<if>``) leads, as a
        normalized path under sysfs_path: one readlink instead of realpath's lstat per path
        component.  The kernel's links point into /sys/devices, whose entries are real
        directories, so the paths compare like real paths (only with each other: the
        sysfs_path prefix itself is not resolved)."""
        path = self.sys(rel)
        try:
            target = os.readlink(path)
        except OSError:
            return os.path.normpath(path)
        return os.path.normpath(os.path.join(os.path.dirname(path), target))

    def class_index(self, cls):
        """{sysfs directory: [entries of class/<cls> under it]} (net interfaces, block devices).

        An entry is not always ``<device>/<cls>/<name>``: a virtio NIC's sits under its virtio
        child (``<device>/virtio0/net/eth0``), a partition under its disk.  Every ancestor
        directory owns the entry, so a device's entries are
        ``index.get(self.link_path(<device dir>), [])``: one dict lookup per device.
        """
        index = {}
        for name in self.listdir('class/' + cls):
            d = os.path.dirname(self.link_path('class/%s/%s' % (cls, name)))
            while len(d) > 1:
                index.setdefault(d, []).append(name)
                d = os.path.dirname(d)
        return index

    def isdir(self, rel):
        return os.path.isdir(self.sys(rel))

    def listdir(self, rel):
        try:
            return sorted(os.listdir(self.sys(rel)))
        except OSError:
            return []

    def entries(self, rel):
        """listdir() in the directory's own order (for a lookup, not for a report)."""
        try:
            return os.listdir(self.sys(rel))
        except OSError:
            return []

    def listdir_proc(self, rel):
        try:
            return os.listdir(self.proc(rel))
        except OSError:
            return []

    def readlink_proc(self, rel):
        try:
            return os.readlink(self.proc(rel))
        except OSError:
            return None

    # -- writes ------------------------------------------------------------
    def write(self, rel, value, timeout=None):
        """Write value to a sysfs attribute; raise KernelError with the errno on failure.

        With a timeout the write runs in a child process (one :class:`BoundedWriter` per
        KernelFS, forked once and reused): a sysfs write such as ``unbind`` can block in the
        kernel (uninterruptibly) while a VM holds the device, and a blocked thread of our own
        would keep Ansible's pipes open.
        """
        path = self.sys(rel)
        data = value.encode('utf-8') if not isinstance(value, bytes) else value
        if timeout is None:
            err = write_once(path, data)
        else:
            if self._writer is None:
                self._writer = BoundedWriter()
            err = self._writer.write(path, data, timeout)
        if err:
            raise KernelError('write of %r to %s failed: %s' % (value, path, os.strerror(err)), path, err)

    # -- kernel log ----------------------------------------------------------
    def kernel_log_cursor(self):
        """An opaque position in the kernel log, to read what a step printed."""
        try:
            fd = os.open(self.kmsg_path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            os.close(fd)
            return None
        return fd

    def kernel_log_since(self, cursor, needle=None):
        """Kernel messages printed since the cursor (those naming needle when given)."""
        if cursor is None:
            return []
        lines = []
        while True:
            try:
                rec = os.read(cursor, 8192)
            except OSError as e:
                if e.errno == errno.EPIPE:  # records overwritten while we read: skip on
                    continue
                break
            if not rec:
                break
            text = rec.decode('utf-8', 'replace').split('\n', 1)[0]
            msg = text.split(';', 1)[-1]
            if needle is None or needle in msg:
                lines.append(msg)
        return lines[-10:]

    def close_cursor(self, cursor):
        if cursor is not None:
            try:
                os.close(cursor)
            except OSError:
                pass


def read_fd(fd):
    """Every byte left in an open file (sysfs hands out large attributes in several reads)."""
    chunks = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            break
        chunks.append(b)
    return b''.join(chunks)


def _close_inherited_fds(keep):
    keep = keep if isinstance(keep, tuple) else (keep,)
    try:
        fds = [int(x) for x in os.listdir('/proc/self/fd')]
    except (OSError, ValueError):
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def write_once(path, data):
    """One write(2) of data to path (sysfs acts on each write); return its errno, 0 on success.

    O_TRUNC as a shell redirection has it: sysfs ignores it, and a plain file (a fake tree)
    then holds the value written, not the value written over the head of the previous one.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        return e.errno or errno.EIO
    return 0


def unique(items):
    """Items in first-seen order without repeats."""
    out = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


class BoundedWriter:
    """Sysfs writes with a deadline, performed by one helper process for many writes.

    The helper is forked on the first write and serves every later one (a fork per write
    costs more than the write itself on a slow host); it closes every inherited descriptor
    first, so a helper stuck in the kernel holds neither Ansible's pipes nor the host lock.
    A write that has not returned within its timeout raises WriteTimeout: that helper is
    left to finish alone and the next write starts a new one.  The helper ends when its
    request pipe closes (``close()`` or the exit of this process).
    """

    def __init__(self):
        self.pid = None
        self.forks = 0
        self._req = self._rep = None

    def _start(self):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                devnull = os.open(os.devnull, os.O_RDWR)
                for std in (0, 1, 2):
                    os.dup2(devnull, std)
                _close_inherited_fds((req_r, rep_w))
                _serve(req_r, rep_w)
            finally:
                os._exit(0)
        os.close(req_r)
        os.close(rep_w)
        self.pid, self._req, self._rep = pid, req_w, rep_r
        self.forks += 1

    def write(self, path, data, timeout):
        """Write data to path in the helper; return its errno (0 on success)."""
        if self.pid is None:
            self._start()
        pid = self.pid
        body = path.encode('utf-8') + b'\0' + data
        try:
            _write_all(self._req, b'%d\n' % len(body) + body)
        except OSError:  # the helper is gone: start another one and retry once
            self._abandon(reap=True)
            self._start()
            pid = self.pid
            _write_all(self._req, b'%d\n' % len(body) + body)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._abandon(reap=False)
                raise WriteTimeout(path, timeout, pid)
            if select.select([self._rep], [], [], left)[0]:
                break
        out = _read_line(self._rep)
        try:
            return int(out.decode('ascii'))
        except ValueError:  # the helper died without an answer
            self._abandon(reap=True)
            return errno.EIO

    def _abandon(self, reap):
        for fd in (self._req, self._rep):
            if fd is not None:
                os.close(fd)
        if reap and self.pid is not None:
            os.waitpid(self.pid, 0)
        self.pid = self._req = self._rep = None

    def close(self):
        """Let the helper end (EOF on its requests) and reap it."""
        self._abandon(reap=True)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_line(fd):
    out = b''
    while not out.endswith(b'\n'):
        b = os.read(fd, 1)
        if not b:
            break
        out += b
    return out.strip()


def _serve(req, rep):  # pragma: no cover - runs in the helper process
    """The helper's loop: '<length>\\n<path>\\0<data>' in, '<errno>\\n' out, until EOF."""
    while True:
        head = _read_line(req)
        if not head:
            return
        want = int(head)
        body = b''
        while len(body) < want:
            chunk = os.read(req, want - len(body))
            if not chunk:
                return
            body += chunk
        path, dummy, data = body.partition(b'\0')
        code = write_once(path.decode('utf-8'), data)
        _write_all(rep, b'%d\n' % code)

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real KernelFS on ordinary files: reads, bounded writes, the kernel log cursor."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import time

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import (
    BoundedWriter, PCI, KernelError, KernelFS, WriteTimeout)


def test_read_missing_is_none_and_strips(tmp_path):
    (tmp_path / 'a').write_text('0x8086\n')
    fs = KernelFS(str(tmp_path), str(tmp_path))
    assert fs.read('a') == '0x8086'
    assert fs.read('missing') is None
    assert fs.listdir('missing') == []
    assert fs.link_name('a') is None


def test_unreadable_attribute_raises_named_error_or_none(tmp_path):
    os.mkdir(str(tmp_path / 'dir'))
    fs = KernelFS(str(tmp_path), str(tmp_path))
    with pytest.raises(KernelError) as e:
        fs.read('dir')  # EISDIR stands in for EACCES/EIO of a real attribute
    assert e.value.path.endswith('/dir')
    assert fs.read_optional('dir') is None


def empty_file(path):
    """An empty file standing in for a sysfs attribute (a path object)."""
    path.write_text('')
    return path


def test_bounded_writes_share_one_helper_process(tmp_path):
    target = empty_file(tmp_path / 'attr')
    writer = BoundedWriter()
    try:
        for i in range(20):
            assert writer.write(str(target), b'vfio-pci%d' % i, 5) == 0
            assert target.read_text() == 'vfio-pci%d' % i
        assert writer.write(str(tmp_path / 'nodir' / 'x'), b'1', 5) == errno.ENOENT
        assert writer.forks == 1
    finally:
        writer.close()
    assert writer.pid is None


def test_bounded_write_times_out_on_a_blocking_write_and_the_next_write_works(tmp_path):
    fifo = str(tmp_path / 'unbind')
    os.mkfifo(fifo)  # opening a FIFO with no reader blocks, like unbind of a held device
    target = empty_file(tmp_path / 'driver_override')
    writer = BoundedWriter()
    try:
        assert writer.write(str(target), b'x', 5) == 0
        t0 = time.monotonic()
        with pytest.raises(WriteTimeout) as e:
            writer.write(fifo, b'0000:00:04.0', 0.5)
        assert time.monotonic() - t0 < 2.5  # ends within its bound (plus scheduling slack)
        assert 'still blocked after 0.5s' in str(e.value)
        stuck = e.value.pid
        # the stuck helper is left alone; the next write gets a new one
        assert writer.write(str(target), b'vfio-pci', 5) == 0
        assert target.read_text() == 'vfio-pci' and writer.forks == 2 and writer.pid != stuck
    finally:
        writer.close()
        # release the stuck helper so the test leaves nothing behind
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)
        os.waitpid(stuck, 0)


def test_bounded_write_helper_holds_no_inherited_descriptor(tmp_path):
    """A helper stuck in the kernel must not keep the caller's pipes (Ansible's stdout) open."""
    r, w = os.pipe()
    target = empty_file(tmp_path / 'attr')
    writer = BoundedWriter()
    try:
        assert writer.write(str(target), b'1', 5) == 0  # the helper is running now
        os.close(w)
        assert os.read(r, 1) == b''  # EOF: nobody else holds the write end
    finally:
        os.close(r)
        writer.close()


def test_kernelfs_bounded_writes_fork_once(tmp_path):
    (tmp_path / 'a').write_text('')
    fs = KernelFS(str(tmp_path), str(tmp_path))
    for value in ('1', '2', '3'):
        fs.write('a', value, timeout=5)
    assert fs._writer.forks == 1 and (tmp_path / 'a').read_text() == '3'
    fs.close()
    assert fs._writer is None


def test_write_with_timeout_raises_kernel_error(tmp_path):
    fs = KernelFS(str(tmp_path), str(tmp_path))
    with pytest.raises(KernelError) as e:
        fs.write('nope/bind', '0000:00:04.0', timeout=5)
    assert e.value.errno == errno.ENOENT and 'nope/bind' in str(e.value)


def test_kernel_log_cursor_without_kmsg(tmp_path):
    fs = KernelFS(str(tmp_path), str(tmp_path), kmsg_path=str(tmp_path / 'none'))
    cur = fs.kernel_log_cursor()
    assert cur is None and fs.kernel_log_since(cur) == []


@pytest.mark.parametrize('raw, canonical', [
    ('0000:01:00.0', '0000:01:00.0'), ('01:00.0', '0000:01:00.0'), ('0000:AF:1F.7', '0000:af:1f.7'),
    ('10000:01:00.0', '10000:01:00.0'), ('01:00.8', None), ('01:20.0', None), ('0000:01:00', None),
    ('', None), ('0000:01:00.0\n', None), ('../01:00.0', None),
])
def test_pci_addresses(raw, canonical):
    assert PCI.normalize_address(raw) == canonical


def test_bus_paths_and_alias():
    assert PCI.device_dir('0000:01:00.0') == 'bus/pci/devices/0000:01:00.0'
    assert PCI.vfio_alias('pci:v00008086d') == 'vfio_pci:v00008086d'
    assert PCI.normalize_address('../x') is None

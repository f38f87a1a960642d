# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The real KernelFS on ordinary files: reads, bounded writes, the kernel log cursor."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

import pytest

from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import (
    PCI, KernelError, KernelFS, WriteTimeout, bounded_write)


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


def test_bounded_write_success_and_errno(tmp_path):
    target = tmp_path / 'attr'
    target.write_text('')
    assert bounded_write(str(target), b'vfio-pci', 5) == 0
    assert target.read_text() == 'vfio-pci'
    assert bounded_write(str(tmp_path / 'nodir' / 'x'), b'1', 5) == errno.ENOENT


def test_bounded_write_times_out_on_a_blocking_write(tmp_path):
    fifo = str(tmp_path / 'unbind')
    os.mkfifo(fifo)  # opening a FIFO with no reader blocks, like unbind of a held device
    with pytest.raises(WriteTimeout) as e:
        bounded_write(fifo, b'0000:00:04.0', 0.5)
    assert 'still blocked after 0.5s' in str(e.value)
    # release the child so the test leaves nothing behind
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.close(fd)
    os.waitpid(e.value.pid, 0)


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

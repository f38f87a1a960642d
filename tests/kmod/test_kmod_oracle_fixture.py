# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The oracle fixture's own rules: loud on CI, a skip elsewhere; the synthetic .ko."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import subprocess

import pytest


def test_missing_oracle_fails_on_ci_and_skips_elsewhere(monkeypatch, oracle_unavailable):
    monkeypatch.setenv('CI', 'true')
    with pytest.raises(pytest.fail.Exception):
        oracle_unavailable('no network')
    monkeypatch.delenv('CI')
    with pytest.raises(pytest.skip.Exception):
        oracle_unavailable('no network')


def test_download_failure_is_an_oracle_error(monkeypatch, tmp_path, oracle_lib):
    def no_network(release=None):
        raise oracle_lib.OracleError('apt-get update failed: network unreachable')
    monkeypatch.setattr(oracle_lib, 'CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setattr(oracle_lib, 'LAB_CACHE_DIR', str(tmp_path / 'lab'))
    monkeypatch.setattr(oracle_lib, 'ensure_kmod', lambda install=True: ('depmod', 'modprobe'))
    monkeypatch.setattr(oracle_lib, '_download', no_network)
    with pytest.raises(oracle_lib.OracleError, match='network unreachable'):
        oracle_lib.ensure_oracle()


def test_synthetic_module_is_read_by_kmod(tmp_path, kmod_tools, oracle_lib):
    """depmod and modinfo accept the minimal ELF .ko and see its .modinfo aliases."""
    root = str(tmp_path)
    rel = '6.0.0-kotest'
    oracle_lib.write_module(root + '/lib/modules/' + rel, 'kernel/x/mlx5-vfio-pci.ko',
                            [oracle_lib.vfio_alias(0x15B3, 0x101E)])
    subprocess.check_output([kmod_tools[0], '-b', root, rel], stderr=subprocess.STDOUT)
    with open(root + '/lib/modules/%s/modules.alias' % rel) as f:
        assert 'alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci\n' in f.read()
    with open(root + '/lib/modules/%s/modules.dep' % rel) as f:
        assert f.read() == 'kernel/x/mlx5-vfio-pci.ko:\n'

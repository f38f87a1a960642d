# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a module's main() in-process with given arguments and return its JSON result.

ansible-core 2.19+ has ``ansible.module_utils.testing.patch_module_args``; on older lines (2.16,
the oldest that meta/runtime.yml admits, run by ``make matrix``) the same is done the way it was
done there: the arguments go into ``basic._ANSIBLE_ARGS`` as the JSON that AnsiballZ would pass.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import os

import pytest

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args=None):
        old = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({'ANSIBLE_MODULE_ARGS': dict(args or {})}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = old


def path_args(host):
    """The module arguments that point a module at a FakeHost."""
    return dict(sysfs_path=host.sys, procfs_path=host.proc, modules_dir=host.moddir, modprobe_config_dirs=[host.confdir])


def host_args(host, **kw):
    """path_args, and the lock file and journal in the FakeHost's tree."""
    return dict(path_args(host), lock_file=os.path.join(host.root, 'lock'),
                journal_file=os.path.join(host.root, 'journal.json'), **kw)


def run_module(mod, args, capsys, check_mode=False, diff=False):
    """mod.main() with args (check mode and diff on request); the result it printed, parsed."""
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    if diff:
        args = dict(args, _ansible_diff=True)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            mod.main()
    return json.loads(capsys.readouterr().out)

# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every module shares (documented once in the host_paths doc fragment and its lock part),
and the run of a module that changes the host, from its parameters to exit_json/fail_json."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import (
    DEFAULT_MODPROBE_CONFIG_DIRS, Resolver)
from ansible_collections.hypervisor.vfio.plugins.module_utils.devices import running_kernel_release
from ansible_collections.hypervisor.vfio.plugins.module_utils.execute import EngineFailed
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import KernelFS
from ansible_collections.hypervisor.vfio.plugins.module_utils.plan import RequestError


def host_path_argument_spec():
    return dict(
        sysfs_path=dict(type='path', default='/sys'),
        procfs_path=dict(type='path', default='/proc'),
        modules_dir=dict(type='path', default='/lib/modules'),
        rootfs_path=dict(type='path', default='/'),
        kernel_release=dict(type='str'),
        modprobe_config_dirs=dict(type='list', elements='path', default=list(DEFAULT_MODPROBE_CONFIG_DIRS)),
    )


def engine_argument_spec(**options):
    """The argument spec of a module that changes the host: its own options, the lock options
    (doc fragment hypervisor.vfio.host_paths.lock) and the host paths (hypervisor.vfio.host_paths)."""
    spec = dict(options,
                lock_file=dict(type='path', default='/run/hypervisor-vfio.lock'),
                lock_timeout=dict(type='int', default=300),
                return_facts=dict(type='bool', default=False))
    spec.update(host_path_argument_spec())
    return spec


def run_module(module, who, work, finish=None):
    """End a module that changes the host with the result of ``work()``.

    An invalid request (RequestError) or option (ValueError) fails saying that nothing was
    changed; an EngineFailed (BindFailed, SriovFailed) fails with what is known of the run.
    ``finish(result)`` completes a successful result (outside the refusals above); the
    result's ``warnings_list`` become warnings, and its diff is shown in diff mode only.
    """
    try:
        result = work()
    except RequestError as e:
        module.fail_json(msg='%s: invalid request, nothing was changed: %s' % (who, e))
    except ValueError as e:
        module.fail_json(msg='%s: %s; nothing was changed' % (who, e))
    except EngineFailed as e:
        details = dict(e.result)
        details.pop('warnings_list', None)
        module.fail_json(msg=str(e), **details)
    if finish is not None:
        finish(result)
    for warning in result.pop('warnings_list', ()):
        module.warn(warning)
    if not module._diff:
        result.pop('diff')
    module.exit_json(**result)


class HostContext:
    """The kernel access object and the resolver, built once from the shared options."""

    def __init__(self, params, fs=None):
        self.fs = fs or KernelFS(params['sysfs_path'], params['procfs_path'])
        self.kernel_release = params.get('kernel_release') or running_kernel_release(self.fs)
        if '/' in self.kernel_release or self.kernel_release in ('.', '..'):
            raise ValueError('kernel_release %r is not a kernel release name' % self.kernel_release)
        self.modules_dir = params['modules_dir']
        self.rootfs_path = params.get('rootfs_path') or '/'
        self.resolver = Resolver(self.modules_dir, self.kernel_release, params['modprobe_config_dirs'])

    def warnings(self):
        if not self.resolver.tree.alias_file_found:
            return ['%s has no modules.alias: no VFIO variant can be resolved for kernel %s '
                    '(is the kernel installed? set modules_dir/kernel_release)'
                    % (os.path.join(self.modules_dir, self.kernel_release), self.kernel_release)]
        return []

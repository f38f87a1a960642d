# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options every module shares (documented once in the host_paths doc fragment)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.hypervisor.vfio.plugins.module_utils.aliases import (
    DEFAULT_MODPROBE_CONFIG_DIRS, Resolver)
from ansible_collections.hypervisor.vfio.plugins.module_utils.devices import running_kernel_release
from ansible_collections.hypervisor.vfio.plugins.module_utils.kernel import KernelFS


def host_path_argument_spec():
    return dict(
        sysfs_path=dict(type='path', default='/sys'),
        procfs_path=dict(type='path', default='/proc'),
        modules_dir=dict(type='path', default='/lib/modules'),
        rootfs_path=dict(type='path', default='/'),
        kernel_release=dict(type='str'),
        modprobe_config_dirs=dict(type='list', elements='path', default=list(DEFAULT_MODPROBE_CONFIG_DIRS)),
    )


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

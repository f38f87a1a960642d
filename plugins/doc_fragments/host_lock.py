# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Options shared by the modules that change the host (vfio_bind, vfio_sriov)."""

    DOCUMENTATION = r'''
options:
  lock_file:
    description:
      - File locked to serialize concurrent runs on the host; M(hypervisor.vfio.vfio_bind) and
        M(hypervisor.vfio.vfio_sriov) share it.
    type: path
    default: /run/hypervisor-vfio.lock
  lock_timeout:
    description: Seconds to wait for another run to release O(lock_file).
    type: int
    default: 300
  return_facts:
    description:
      - Also return C(ansible_facts.vfio), the facts M(hypervisor.vfio.vfio_facts) gives, read from sysfs
        after the call, so that later tasks see the new state (drivers, new VFs) and can verify it without
        another module run.
    type: bool
    default: false
'''

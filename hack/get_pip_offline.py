# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for the get-pip.py bootstrap that ansible-test downloads.

ansible-test bootstraps pip into each of its (empty) virtual environments by running a
get-pip.py script that it fetches from its CI file host and caches at
``~/.ansible/test/cache/get_pip_<version>.py``.  That host is not reachable here, so
hack/ansible-test-gate copies this file to that cache path beforehand.  Like get-pip.py it
takes pip-install arguments (``pip==X.Y --no-setuptools --no-wheel ...``): it installs the
interpreter's bundled pip with ``ensurepip``, then installs the requested packages with that
pip from the configured package index.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import subprocess
import sys


def main():
    """Bootstrap pip with ensurepip, then pip-install the requested packages."""
    # get-pip.py options that only steer its own wheel selection; plain pip does not know them.
    args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
    if args:
        subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--upgrade'] + args)


if __name__ == '__main__':
    main()

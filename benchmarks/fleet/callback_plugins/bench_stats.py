# -*- coding: utf-8 -*-
# Copyright: hypervisor.vfio contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-host time and module invocations of one playbook run, for benchmarks/fleet.py.

Enabled by benchmarks/fleet.py only (ANSIBLE_CALLBACK_PLUGINS + ANSIBLE_CALLBACKS_ENABLED);
writes JSON to $BENCH_STATS_FILE when the play ends:
{"hosts": {host: {"busy_s", "invocations", "changed", "failed", "tasks", "task_s"}}, "wall_s"}
(task_s: seconds per task name, to see where the time goes).
busy_s sums, per host, the time from each task's start to that host's result; invocations
counts module runs on the host (each loop item is one; controller-only actions such as
set_fact, assert or debug are not invocations).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: bench_stats
type: aggregate
short_description: per-host time and module invocations of a playbook run (benchmarks only)
description:
  - Writes per-host busy time, module invocations and changed counts to the JSON file named by
    the environment variable E(BENCH_STATS_FILE) when the playbook ends.
requirements:
  - enabled in the callbacks_enabled setting
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase

# Actions the controller runs itself: no module is executed on the managed host.
LOCAL_ACTIONS = frozenset((
    'set_fact', 'assert', 'debug', 'fail', 'meta', 'add_host', 'group_by', 'include_vars',
    'include_tasks', 'import_tasks', 'include_role', 'import_role', 'set_stats', 'pause',
    'validate_argument_spec',
))


def _short(action):
    return action.rsplit('.', 1)[-1]


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_stats'
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._start = time.monotonic()
        self._task_start = None
        self._hosts = {}

    def _host(self, result):
        name = result._host.get_name()
        return self._hosts.setdefault(name, {'busy_s': 0.0, 'invocations': 0, 'changed': 0, 'failed': 0,
                                             'tasks': 0})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start = time.monotonic()

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start = time.monotonic()

    def _done(self, result, failed=False, skipped=False):
        h = self._host(result)
        spent = time.monotonic() - (self._task_start or self._start)
        h['busy_s'] += spent
        name = result._task.get_name()
        h.setdefault('task_s', {})[name] = h.get('task_s', {}).get(name, 0.0) + spent
        h['tasks'] += 1
        res = result._result
        local = _short(result._task.action) in LOCAL_ACTIONS
        if not skipped and not local and 'results' not in res:
            h['invocations'] += 1
        if res.get('changed'):
            h['changed'] += 1
        if failed:
            h['failed'] += 1

    def v2_runner_on_ok(self, result):
        self._done(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, failed=not ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._done(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._done(result, failed=True)

    def v2_runner_item_on_ok(self, result):
        if _short(result._task.action) not in LOCAL_ACTIONS:
            self._host(result)['invocations'] += 1

    def v2_runner_item_on_failed(self, result):
        self.v2_runner_item_on_ok(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('BENCH_STATS_FILE')
        if not path:
            return
        with open(path, 'w') as f:
            json.dump({'hosts': self._hosts, 'wall_s': time.monotonic() - self._start}, f, indent=1)

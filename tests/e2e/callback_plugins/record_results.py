# A test-only callback: records every task result and the final per-host
# stats as JSON, for the e2e tests to assert on. ansible-core 2.19 has no
# json callback (it lives in the ansible.posix collection), and the PLAY RECAP
# of the default one is for people. Enabled by tests/e2e/ansible_run.py next
# to the default stdout callback, so the human output stays in the logs.
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: record_results
    type: notification
    short_description: write task results and stats to the JSON file $RECORD_RESULTS_PATH
    description: Test helper of this project's e2e suite.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "record_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = os.environ.get("RECORD_RESULTS_PATH")
        self.results = []
        self.stats = {}
        self.task_started = time.monotonic()

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.task_started = time.monotonic()

    def v2_playbook_on_handler_task_start(self, task):
        self.task_started = time.monotonic()

    def _record(self, result, status):
        data = {k: v for k, v in result._result.items() if not k.startswith("_ansible")}
        self.results.append({
            "host": result._host.get_name(),
            "task": result._task.get_name(),
            "action": result._task.action,
            "status": status,
            "changed": bool(data.get("changed", False)),
            # Seconds from the task's start to this host's result (the slowest
            # host of a task is the task's time).
            "seconds": round(time.monotonic() - self.task_started, 3),
            "result": data,
        })
        self._write()

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, "unreachable")

    def v2_runner_item_on_ok(self, result, **kwargs):
        self._record(result, "ok")

    def v2_runner_item_on_failed(self, result, **kwargs):
        self._record(result, "failed")

    def v2_playbook_on_stats(self, stats):
        self.stats = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._write()

    def _write(self):
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump({"results": self.results, "stats": self.stats}, f, default=str)
        os.replace(tmp, self.path)

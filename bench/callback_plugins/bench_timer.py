# bench/run.py's per-task timer: what ansible.posix's profile_tasks prints
# (ansible-core 2.19 ships no profile_tasks), written as JSON for the report.
# A task's time is from its start to the start of the next task (the linear
# strategy runs a task on every host before the next one starts), so the
# times of a run add up to its wall time but for start-up and the recap.
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: bench_timer
    type: aggregate
    short_description: per-task wall times as JSON in $BENCH_TIMER_PATH
    description: Benchmark helper of this project (bench/run.py).
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timer"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path = os.environ.get("BENCH_TIMER_PATH")
        self.started = time.monotonic()
        self.tasks = []
        self.current = None

    def _start(self, task, handler=False):
        now = time.monotonic()
        self._close(now)
        role = task._role.get_name() if task._role else ""
        self.current = {
            "task": task.get_name(),
            "role": role,
            "action": task.action,
            "handler": handler,
            "start": now - self.started,
            "results": {},
        }

    def _close(self, now):
        if self.current is not None:
            self.current["seconds"] = now - self.started - self.current["start"]
            self.tasks.append(self.current)
            self.current = None

    def _count(self, status):
        if self.current is not None:
            self.current["results"][status] = self.current["results"].get(status, 0) + 1

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task):
        self._start(task, handler=True)

    def v2_runner_on_ok(self, result, **kwargs):
        self._count("changed" if result._result.get("changed") else "ok")

    def v2_runner_on_skipped(self, result, **kwargs):
        self._count("skipped")

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._count("failed")

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._count("unreachable")

    def v2_playbook_on_stats(self, stats):
        now = time.monotonic()
        self._close(now)
        if not self.path:
            return
        data = {
            "seconds": now - self.started,
            "tasks": self.tasks,
            "hosts": {h: stats.summarize(h) for h in sorted(stats.processed)},
        }
        with open(self.path, "w") as f:
            json.dump(data, f, indent=1)

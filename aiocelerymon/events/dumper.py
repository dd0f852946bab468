"""``events --dump`` lines, formatted exactly as Celery 5.6+'s ``celery events --dump`` prints.

Per event (after receiver processing): ``<hostname> [<UTC timestamp>] <kind>: k=v, ...`` with
the remaining fields sorted; task events show ``name(uuid) args=... kwargs=...`` remembered from
``task-received``/``task-sent`` (celery/events/dumper.py). Note Celery's quirk, kept here: with no
fields a trailing space remains after the kind.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["Dumper", "humanize_type"]

_HUMAN_TYPES = {
    "worker-offline": "shutdown",
    "worker-online": "started",
    "worker-heartbeat": "heartbeat",
}
#: Celery remembers 4095 task descriptions.
_TASK_NAMES_LIMIT = 0xFFF


def humanize_type(type_: str) -> str:
    """``worker-online`` -> ``started``; ``task-succeeded`` -> ``task succeeded``."""
    return _HUMAN_TYPES.get(type_.lower()) or type_.lower().replace("-", " ")


class Dumper:
    """Formats events as ``celery events --dump`` does and writes them to ``out``."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out
        self._tasks: OrderedDict[str, str] = OrderedDict()

    def _split(
        self, event: dict[str, Any]
    ) -> tuple[Any, datetime, str, str | None, dict[str, Any]]:
        """``(hostname, timestamp, type, task description or None, remaining fields)``."""
        ev = dict(event)
        stamp = datetime.fromtimestamp(ev.pop("timestamp"), UTC)
        type_ = ev.pop("type").lower()
        hostname = ev.pop("hostname")
        task = None
        if type_.startswith("task-"):
            task_id = ev.pop("uuid")
            if type_ in ("task-received", "task-sent"):
                task = (
                    f"{ev.pop('name')}({task_id}) args={ev.pop('args')} kwargs={ev.pop('kwargs')}"
                )
                self._remember(task_id, task)
            else:
                task = self._tasks.get(task_id, "")
        return hostname, stamp, type_, task, ev

    @staticmethod
    def _line(hostname: Any, timestamp: Any, type_: str, task: str | None, ev: Any) -> str:
        fields = ", ".join(f"{key}={ev[key]}" for key in sorted(ev))
        sep = ":" if fields else ""
        if task is None:
            return f"{hostname} [{timestamp}] {humanize_type(type_)}{sep} {fields}"
        return f"{hostname} [{timestamp}] {humanize_type(type_)}{sep} {task} {fields}"

    def format(self, event: dict[str, Any]) -> str:
        """The dump line of one processed event (the dict is not modified)."""
        return self._line(*self._split(event))

    def format_task_event(
        self, hostname: Any, timestamp: Any, type: str, task: str, event: dict[str, Any]
    ) -> None:
        """Write a task event's line: Celery's public hook, which ``on_event`` calls for every
        task event (``task`` is ``"name(uuid) args=... kwargs=..."`` or ``""``, ``event`` the
        fields left); override it to change how task events are shown.
        """
        self.say(self._line(hostname, timestamp, type, task, event))

    def _remember(self, task_id: str, text: str) -> None:
        self._tasks[task_id] = text
        self._tasks.move_to_end(task_id)
        while len(self._tasks) > _TASK_NAMES_LIMIT:
            self._tasks.popitem(last=False)

    def say(self, line: str) -> None:
        """Write a line and flush (so the output can be piped)."""
        print(line, file=self.out, flush=True)

    def on_event(self, event: dict[str, Any]) -> None:
        """Handler for a receiver: print the event's dump line (task events through
        :meth:`format_task_event`, as Celery's dumper)."""
        hostname, stamp, type_, task, fields = self._split(event)
        if task is not None:
            self.format_task_event(hostname, stamp, type_, task, fields)
        else:
            self.say(self._line(hostname, stamp, type_, None, fields))

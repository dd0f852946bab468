"""A worker's revoked set: Celery's ``worker_state.revoked`` (a ``LimitedSet``), for a Node.

Same limits and the same environment variables as a Celery worker (celery/worker/state.py):
at most ``CELERY_WORKER_REVOKES_MAX`` ids (50000), and once the set is full, ids older than
``CELERY_WORKER_REVOKE_EXPIRES`` seconds (10800) go first. As in ``LimitedSet``, expiry is
applied when the set is purged (when it reaches its limit, and before ``hello`` answers), so
membership alone never ages an id out; ids are kept and listed oldest first, and revoking an
id again makes it the newest.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

__all__ = ["REVOKES_MAX", "REVOKE_EXPIRES", "RevokedSet"]


def _env_number(name: str, default: float, kind: Callable[[str], float]) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {raw!r}")
    return value


#: Celery's ``REVOKES_MAX``: ids kept at most.
REVOKES_MAX = int(_env_number("CELERY_WORKER_REVOKES_MAX", 50000, int))
#: Celery's ``REVOKE_EXPIRES``: seconds an id lives once the set is full.
REVOKE_EXPIRES = _env_number("CELERY_WORKER_REVOKE_EXPIRES", 10800.0, float)


class RevokedSet:
    """Task ids with their revoke time (``time.monotonic``), oldest first.

    Args:
        maxlen: ids kept at most (0: unbounded).
        expires: seconds after which a purge drops an id (0: never).
        clock: the time source (for tests).
    """

    def __init__(
        self,
        maxlen: int = REVOKES_MAX,
        expires: float = REVOKE_EXPIRES,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxlen < 0 or expires < 0:
            raise ValueError("maxlen and expires must not be negative")
        self.maxlen = maxlen
        self.expires = expires
        self._clock = clock
        self._data: OrderedDict[str, float] = OrderedDict()

    def add(self, task_id: str) -> None:
        """Revoke ``task_id`` now (again: it becomes the newest)."""
        self._data.pop(task_id, None)
        self._data[task_id] = self._clock()
        if self.maxlen and len(self._data) >= self.maxlen:
            self.purge()

    def update(self, task_ids: Iterable[str]) -> None:
        """Add every id, in order (as ``LimitedSet.update`` with an iterable)."""
        for task_id in task_ids:
            self.add(task_id)

    def discard(self, task_id: str) -> None:
        self._data.pop(task_id, None)

    def purge(self) -> None:
        """Drop the oldest ids over ``maxlen``, then those older than ``expires``."""
        data = self._data
        if self.maxlen:
            while len(data) > self.maxlen:
                data.popitem(last=False)
        if self.expires:
            now = self._clock()
            while data:
                oldest = next(iter(data.values()))
                if oldest + self.expires > now:
                    break
                data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"<RevokedSet {len(self._data)}/{self.maxlen or 'unbounded'}>"

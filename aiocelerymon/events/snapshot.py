"""The camera: Celery's ``Polaroid``, async. Takes snapshots of a State at a fixed frequency.

Subclass :class:`Camera` and override :meth:`on_shutter` (and optionally :meth:`on_cleanup`);
both may be coroutines. Like Celery (celery/events/snapshot.py) a shutter runs every ``freq``
seconds, at most ``maxrate`` times (a token bucket, ``"10/s"``, ``"100/m"``, ``"1/h"`` or a
number per second), ``cleanup`` runs every ``cleanup_freq`` seconds, and ``clear_after`` clears
the State after each shot.

Celery's own cameras (``celery.events.snapshot.Polaroid`` subclasses) run too, through
:func:`camera_factory`: their ``shutter``/``on_shutter``/``on_cleanup``, ``maxrate`` and
``clear_after`` are theirs; only the timers are ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from aiocelerymon.wire.rate import parse_rate

__all__ = [
    "Camera",
    "PolaroidCamera",
    "TokenBucket",
    "camera_factory",
    "evcam_banner",
    "is_celery_camera",
    "parse_rate",
]

log = logging.getLogger("aiocelerymon.events")


class TokenBucket:
    """A token bucket refilled at ``rate`` tokens per second, holding at most ``capacity``."""

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._stamp = time.monotonic()

    def can_consume(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if available."""
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= tokens:
            self._tokens -= tokens
            return True
        return False


class Camera:
    """Periodic snapshots of a State. Run it with ``async with camera:`` or :meth:`run`."""

    clear_after = False

    def __init__(
        self,
        state: Any,
        freq: float = 1.0,
        maxrate: str | float | None = None,
        cleanup_freq: float = 3600.0,
    ) -> None:
        self.state = state
        self.freq = freq
        self.cleanup_freq = cleanup_freq
        rate = parse_rate(maxrate)
        self.maxrate = TokenBucket(rate) if rate else None
        self.shots = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def on_shutter(self, state: Any) -> None:
        """Called with the State at every shot; override (sync or async)."""

    async def on_cleanup(self) -> None:
        """Called every ``cleanup_freq`` seconds; override (sync or async)."""

    async def capture(self) -> None:
        """Take one shot now (subject to ``maxrate``)."""
        if self.maxrate is None or self.maxrate.can_consume():
            await _call(self.on_shutter, self.state)
            self.shots += 1
            if self.clear_after:
                self.state.clear()

    async def shutter(self) -> None:
        """Alias of :meth:`capture`, Celery's name."""
        await self.capture()

    async def cleanup(self) -> None:
        """Run :meth:`on_cleanup`."""
        await _call(self.on_cleanup)

    async def _every(self, interval: float, action: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except Exception:
                log.exception("camera %s failed", getattr(action, "__name__", action))

    async def start(self) -> None:
        """Start the shutter and cleanup timers."""
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._every(self.freq, self.capture)),
                loop.create_task(self._every(self.cleanup_freq, self.cleanup)),
            ]

    async def aclose(self) -> None:
        """Stop the timers and take a last shot, as Celery's Polaroid does on shutdown."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks:
            await self.capture()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _call(fn: Any, *args: Any) -> None:
    outcome = fn(*args)
    if inspect.isawaitable(outcome):
        await outcome


#: Celery's camera base class, named without importing Celery.
_POLAROID = "celery.events.snapshot.Polaroid"


def is_celery_camera(cls: Any) -> bool:
    """Whether ``cls`` is a ``celery.events.snapshot.Polaroid`` subclass (Celery's cameras)."""
    return isinstance(cls, type) and any(
        f"{klass.__module__}.{klass.__qualname__}" == _POLAROID for klass in cls.__mro__
    )


class PolaroidCamera(Camera):
    """A Celery camera (a ``Polaroid`` instance) driven by this Camera's timers.

    Each shot calls the Polaroid's own ``capture()``, Celery's ``state.freeze_while(shutter,
    clear_after=...)``: its ``maxrate``, ``shutter_signal`` and ``on_shutter(state)`` apply as
    in ``celery events --camera``. It runs in the event loop, so the State does not change
    during a shot: Celery's camera holds the State's lock for the same reason, and events wait
    on the broker meanwhile.
    """

    def __init__(
        self, polaroid: Any, state: Any, freq: float = 1.0, cleanup_freq: float = 3600.0
    ) -> None:
        super().__init__(state, freq=freq, maxrate=None, cleanup_freq=cleanup_freq)
        self.polaroid = polaroid

    async def capture(self) -> None:
        self.polaroid.capture()
        self.shots += 1

    async def cleanup(self) -> None:
        self.polaroid.cleanup()

    def __repr__(self) -> str:
        return f"<PolaroidCamera {type(self.polaroid).__qualname__} every {self.freq}s>"


def camera_factory(cls: Any, app: Any = None) -> Callable[..., Camera] | None:
    """What builds a camera of class ``cls`` as ``factory(state, freq=, maxrate=)``:
    ``cls`` itself for a :class:`Camera`, an adapter for a Celery ``Polaroid`` subclass
    (constructed as Celery's ``evcam`` does, with ``app``), ``None`` for anything else.
    """
    if isinstance(cls, type) and issubclass(cls, Camera):
        return cls
    if not is_celery_camera(cls):
        return None

    def make(
        state: Any,
        freq: float = 1.0,
        maxrate: str | float | None = None,
        cleanup_freq: float = 3600.0,
    ) -> Camera:
        polaroid = cls(state, freq=freq, maxrate=maxrate, cleanup_freq=cleanup_freq, app=app)
        return PolaroidCamera(polaroid, state, freq=freq, cleanup_freq=cleanup_freq)

    return make


def evcam_banner(camera: str, freq: float) -> str:
    """The line ``celery events --camera`` prints first (celery/events/snapshot.py evcam)."""
    return f"-> evcam: Taking snapshots with {camera} (every {freq} secs.)"

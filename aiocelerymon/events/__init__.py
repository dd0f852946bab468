"""Celery's event stream: receiver, State, dispatcher, camera and dump format, async."""

from __future__ import annotations

from aiocelerymon.events._events import Events
from aiocelerymon.events.dispatcher import EventDispatcher
from aiocelerymon.events.dumper import Dumper
from aiocelerymon.events.receiver import EventReceiver, EventSettings, StreamGap
from aiocelerymon.events.snapshot import Camera
from aiocelerymon.events.state import State, Task, Worker

__all__ = [
    "Camera",
    "Dumper",
    "EventDispatcher",
    "EventReceiver",
    "EventSettings",
    "Events",
    "State",
    "StreamGap",
    "Task",
    "Worker",
]

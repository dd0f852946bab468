"""Celery's own cameras (``Polaroid`` subclasses) run on our State and timers (issue 12)."""

from __future__ import annotations

from typing import Any

from celery.events.snapshot import Polaroid

from aiocelerymon.events.snapshot import PolaroidCamera, camera_factory, is_celery_camera
from aiocelerymon.events.state import State
from tests.unit.events.test_state import received


async def test_a_polaroid_runs_with_its_own_maxrate_signal_and_clear_after() -> None:
    shots: list[int] = []
    signalled: list[Any] = []

    class Cam(Polaroid):
        clear_after = True

        def on_shutter(self, state: Any) -> None:
            shots.append(len(state.tasks))

    def on_signal(sender: Any, **kwargs: Any) -> None:
        signalled.append(sender)

    state = State()
    factory = camera_factory(Cam)
    assert factory is not None and is_celery_camera(Cam) and not is_celery_camera(State)
    assert camera_factory(State) is None
    camera = factory(state, freq=60.0, maxrate="1/h")
    assert isinstance(camera, PolaroidCamera)
    Polaroid.shutter_signal.connect(on_signal)
    try:
        state.event(received("u1"))
        await camera.capture()
        state.event(received("u2"))
        await camera.capture()  # over the Polaroid's own maxrate (1/h): no shot
    finally:
        Polaroid.shutter_signal.disconnect(on_signal)
    assert shots == [1]
    assert signalled == [state]
    # Celery's freeze_while(clear_after=True) cleared after each capture (ready tasks only).
    assert state.event_count == 0 and len(state.tasks) == 2

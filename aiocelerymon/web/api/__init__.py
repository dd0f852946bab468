"""The Flower 2.2-compatible HTTP API (flower/urls.py), route for route."""

from __future__ import annotations

from starlette.routing import BaseRoute

from aiocelerymon.web.api import control, tasks, workers

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    return [*workers.routes(), *tasks.routes(), *control.routes()]

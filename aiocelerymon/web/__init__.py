"""The web monitor (``aiocelerymon serve``): a Flower-compatible API, live push, the page.

``create_app(monitor)`` is a Starlette app, to serve with uvicorn or to mount inside a user's
own Starlette/FastAPI service; it reads the cluster from a :class:`~aiocelerymon.pipeline.Monitor`.
"""

from __future__ import annotations

from aiocelerymon.web.app import WebContext, create_app

__all__ = ["WebContext", "create_app"]

"""What the API handlers share: the context, Flower's error texts, the replies table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request

if TYPE_CHECKING:
    from aiocelerymon.web.app import WebContext


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.aiocelerymon
    return ctx


def path_param(request: Request, name: str) -> str:
    return str(request.path_params[name])


def flat_replies(replies: Any, expected: list[str] | None) -> dict[str, Any]:
    """``{node: reply or None}``: every addressed/expected node, None where nobody answered."""
    flat: dict[str, Any] = {}
    for reply in replies or ():
        if isinstance(reply, dict):
            flat.update(reply)
    for node in expected or ():
        flat.setdefault(node, None)
    return flat

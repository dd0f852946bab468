"""One audit line per control action: who, what, where, and what every node replied."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import HTTPConnection

__all__ = ["audit_log", "who"]

log = logging.getLogger("aiocelerymon.web.audit")

#: Reply texts are cut to this many characters: a line per action, not a dump.
MAX_REPLY_TEXT = 200


def who(request: HTTPConnection) -> str:
    """The principal's display name; ``anonymous`` when no security layer set one."""
    user = request.scope.get("user")
    name = getattr(user, "display_name", None)
    if not name or not getattr(user, "is_authenticated", False):
        return "anonymous"
    return str(name)


def _summary(replies: Mapping[str, Any] | None) -> str:
    if not replies:
        return "none"
    parts = []
    for node, value in sorted(replies.items()):
        if value is None:
            text = "no reply"
        elif isinstance(value, Mapping) and "error" in value:
            text = f"error: {value['error']}"
        elif isinstance(value, Mapping) and "ok" in value:
            text = f"ok: {value['ok']}"
        else:
            text = f"{value}"
        parts.append(f"{node}={text[:MAX_REPLY_TEXT]!r}")
    return ", ".join(parts)


def audit_log(
    request: HTTPConnection,
    action: str,
    destination: Sequence[str] | str | None,
    replies: Mapping[str, Any] | None,
) -> None:
    """Write ``user=... action=... destination=... replies=...`` to ``aiocelerymon.web.audit``.

    ``replies`` maps each node to its reply (``{"ok": ...}``, ``{"error": ...}``) or None for
    a node that did not answer. Arguments are logged with ``%r``, so a control character in
    a worker or task name cannot forge a second line.
    """
    if isinstance(destination, str):
        where = destination
    elif destination:
        where = ",".join(destination)
    else:
        where = "*"
    client = request.client.host if request.client else "-"
    log.info(
        "user=%r client=%s action=%r destination=%r replies=%s",
        who(request),
        client,
        action,
        where,
        _summary(replies),
    )

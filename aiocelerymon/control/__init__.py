"""Remote control: Celery's pidbox protocol, client side (and, in :mod:`.node`, node side)."""

from __future__ import annotations

from aiocelerymon.control._control import (
    Control,
    Inspect,
    NodeReplies,
    NoReplies,
    Replies,
    is_error,
)
from aiocelerymon.control._mailbox import ControlSettings, Mailbox
from aiocelerymon.control.node import Node, NodeClient, NodeNameInUseError

__all__ = [
    "Control",
    "ControlSettings",
    "Inspect",
    "Mailbox",
    "NoReplies",
    "Node",
    "NodeClient",
    "NodeNameInUseError",
    "NodeReplies",
    "Replies",
    "is_error",
]

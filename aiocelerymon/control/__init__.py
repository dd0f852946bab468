"""Remote control: Celery's pidbox protocol, client side (and, in :mod:`.node`, node side)."""

from __future__ import annotations

from aiocelerymon.control._control import Control, Inspect, NodeReplies, Replies, is_error
from aiocelerymon.control._mailbox import ControlSettings, Mailbox

__all__ = ["Control", "ControlSettings", "Inspect", "Mailbox", "NodeReplies", "Replies", "is_error"]

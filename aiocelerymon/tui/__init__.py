"""The live terminal monitor (``aiocelerymon events``); needs the ``tui`` extra (textual)."""

from __future__ import annotations

from aiocelerymon.tui.app import MonitorApp

__all__ = ["MonitorApp"]

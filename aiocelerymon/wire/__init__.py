"""Celery and kombu vocabulary: names, codecs, clocks, envelopes. Pure, no I/O."""

from __future__ import annotations

from aiocelerymon.wire.clock import LamportClock
from aiocelerymon.wire.entities import Binding, Delivery, Exchange, ExchangeKind, Message

__all__ = ["Binding", "Delivery", "Exchange", "ExchangeKind", "LamportClock", "Message"]

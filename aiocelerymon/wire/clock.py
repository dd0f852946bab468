"""Lamport clock with ``kombu.clocks.LamportClock`` semantics."""

from __future__ import annotations

__all__ = ["LamportClock"]


class LamportClock:
    """A logical clock: ``forward()`` on send, ``adjust(received)`` on receive.

    Single-threaded asyncio code needs no lock; kombu's mutex guards threads only.
    """

    __slots__ = ("value",)

    def __init__(self, initial: int = 0) -> None:
        self.value = initial

    def adjust(self, other: int) -> int:
        """Merge a received clock: ``max(own, other) + 1`` (kombu's rule)."""
        # Not max(): this runs for every received event, and the builtin call costs 3x.
        own = self.value
        value = self.value = (other if other > own else own) + 1
        return value

    def forward(self) -> int:
        """Advance for a local event and return the new value."""
        self.value += 1
        return self.value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<LamportClock: {self.value}>"

"""The shop's health check: which of the expected workers do not answer."""

from __future__ import annotations

from collections.abc import Collection

from aiocelerymon import Client


async def missing_workers(
    client: Client, expected: Collection[str], timeout: float = 2.0
) -> set[str]:
    """The names in ``expected`` that did not answer a ping within ``timeout`` seconds."""
    replies = await client.control.ping(destination=sorted(expected), timeout=timeout)
    answered = {node for reply in replies for node in reply}
    return set(expected) - answered

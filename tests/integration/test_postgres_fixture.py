"""The plugin's ``postgres_url``: a fresh, empty database per test on one session server."""

from __future__ import annotations

import asyncpg
import pytest

from aiocelerymon.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration

_SEEN: list[str] = []


@pytest.mark.parametrize("round_", [1, 2])
async def test_each_test_gets_its_own_empty_database(
    postgres_url: str, postgres_server: PostgresServer, round_: int
) -> None:
    assert postgres_url not in _SEEN
    _SEEN.append(postgres_url)
    connection = await asyncpg.connect(postgres_url, timeout=10)
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        )
        assert tables == []  # nothing left over from the other round
        await connection.execute("CREATE TABLE leftover (n int)")
    finally:
        await connection.close()
    if round_ == 2 and postgres_server.owned:
        # The first round's database was dropped when that test ended.
        names = postgres_server.sql("SELECT datname FROM pg_database")
        assert _SEEN[0].rsplit("/", 1)[1] not in names.split()

"""The store contract against real PostgreSQL (the plugin's ``postgres_server``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aiocelerymon.store import Batch
from aiocelerymon.store.postgresql import PostgreSQLStore
from tests.support.store_contract import C, StoreContract, q, task

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgreSQLStore]:
    s = PostgreSQLStore(postgres_url)
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


class TestPostgreSQLStore(StoreContract):
    async def test_search_uses_the_trigram_index(self, store: PostgreSQLStore) -> None:
        assert store.trigram  # the server the suite starts has pg_trgm (Debian's contrib)
        await store.write(Batch(tasks=[task(f"t{i}", args=f"('k{i}',)") for i in range(50)]))
        assert [r.uuid for r in await store.query_tasks(q(search="k42"))] == ["t42"]

    async def test_two_stores_open_one_new_database_at_once(self, postgres_url: str) -> None:
        import asyncio

        a, b = PostgreSQLStore(postgres_url), PostgreSQLStore(postgres_url)
        await asyncio.gather(a.open(), b.open())
        try:
            await a.write(Batch(tasks=[task("t1")]))
            assert (await b.get_task(C, "t1")) is not None
        finally:
            await a.aclose()
            await b.aclose()

"""The store contract against the SQLite adapter (a file per test), and its own details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiocelerymon.store import Batch, open_store, store_for_url
from aiocelerymon.store.sqlite import SQLiteStore
from tests.support.store_contract import C, StoreContract, q, task


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "sub" / "history.sqlite3")
    await s.open()
    try:
        yield s
    finally:
        await s.aclose()


class TestSQLiteStore(StoreContract):
    async def test_reopen_keeps_the_data(self, store: SQLiteStore) -> None:
        await store.write(Batch(tasks=[task("t1", state="FAILURE", traceback="Traceback ...")]))
        await store.aclose()
        again = SQLiteStore(store.path)
        await again.open()  # the schema is created only if missing
        try:
            got = await again.get_task(C, "t1")
            assert got is not None and got.fields["traceback"] == "Traceback ..."
            found = await again.query_tasks(q(search="Traceback"))
            assert found == []  # the traceback is stored, not searched (the exception is)
        finally:
            await again.aclose()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///history.db", "history.db"),
        ("sqlite:////var/lib/x.db", "/var/lib/x.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite://", ":memory:"),
        ("/tmp/x.sqlite3", "/tmp/x.sqlite3"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    store = store_for_url(url)
    assert isinstance(store, SQLiteStore) and store.path == path


def test_postgres_url_is_redacted() -> None:
    store = store_for_url("postgresql://app:s3cret@db.example:5432/history")
    assert "s3cret" not in store.url and "s3cret" not in repr(store)
    assert store.url == "postgresql://app:**@db.example:5432/history"


@pytest.mark.parametrize("url", ["mysql://x/y", "", "  "])
def test_unknown_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        store_for_url(url)


async def test_memory_database() -> None:
    store = await open_store("sqlite://:memory:")
    try:
        await store.write(Batch(tasks=[task("t1")]))
        assert await store.count_tasks(C) == 1
    finally:
        await store.aclose()

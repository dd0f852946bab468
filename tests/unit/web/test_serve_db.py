"""``serve --db``: checked before anything binds; an explicit store that cannot be opened is an
error that names it without its password."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aiocelerymon import cli
from aiocelerymon.cli._common import EX_FAILURE, EX_USAGE
from aiocelerymon.cli.serve import default_db_path
from aiocelerymon.testing.brokers import free_port


async def serve(*argv: str) -> tuple[int, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = await cli.run(["-b", "memory://serve-db", "serve", "--port", "0", *argv],
                         stdout=stdout, stderr=stderr)  # fmt: skip
    return code, stdout.getvalue() + stderr.getvalue()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DB", "DB_MAX_AGE", "DB_MAX_TASKS", "DB_FIELD_LIMIT"):
        monkeypatch.delenv(f"AIOCELERYMON_{name}", raising=False)
        monkeypatch.delenv(f"FLOWER_{name}", raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--db", "mysql://db/x"], "unsupported store URL"),
        (["--db", ""], "empty URL"),
        (["--db-max-age", "-1"], "--db-max-age"),
        (["--db-max-tasks", "many"], "--db-max-tasks"),
        (["--db-field-limit", "0"], "--db-field-limit"),
    ],
)
async def test_bad_db_options_are_usage_errors(argv, message):
    code, output = await serve(*argv)
    assert code == EX_USAGE, output
    assert message in output and "Traceback" not in output


async def test_an_unreachable_database_fails_without_showing_its_password(monkeypatch):
    monkeypatch.setenv("AIOCELERYMON_DB", f"postgresql://app:pw-s3cret@127.0.0.1:{free_port()}/h")
    code, output = await serve()
    assert code == EX_FAILURE, output
    assert "Cannot open the task history postgresql://app:**@127.0.0.1" in output
    assert "pw-s3cret" not in output


def test_default_db_path_is_in_the_users_data_dir(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "aiocelerymon" / "history.sqlite3"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert (
        default_db_path() == Path.home() / ".local" / "share" / "aiocelerymon" / "history.sqlite3"
    )


async def test_cluster_names_tell_key_prefixes_and_exchanges_apart():
    import aiocelerymon
    from aiocelerymon.cli.serve import cluster_name

    plain = aiocelerymon.Client("redis://u:pw@127.0.0.1:6379/3")
    prefixed = aiocelerymon.Client(
        "redis://u:pw@127.0.0.1:6379/3", broker_transport_options={"global_keyprefix": "staging:"}
    )
    exchange = aiocelerymon.Client("redis://u:pw@127.0.0.1:6379/3", event_exchange="ev2")
    names = {cluster_name(c) for c in (plain, prefixed, exchange)}
    assert len(names) == 3
    assert cluster_name(plain) == "redis://u:**@127.0.0.1:6379/3"
    assert all("pw" not in name for name in names)

"""The project's tests use the shipped pytest plugin (aiocelerymon.testing.plugin) for brokers.

Installed (nox: ``pip install -e .``), pytest loads it through the ``pytest11`` entry point;
run from a checkout with ``PYTHONPATH=.`` there is no entry point, so it is registered here.
Registering it a second time (under its module name) would make pytest raise.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiocelerymon.testing import plugin

# `aiocelerymon serve` keeps task history in $XDG_DATA_HOME by default, keyed by broker URL.
# Brokers started by the suite reuse URLs (Redis databases cycle), so a test must never read
# another test's history: the session gets its own data directory, each test its own below it
# (servers started by module fixtures share their module's).
_SESSION_DATA = tempfile.mkdtemp(prefix="aiocelerymon-test-data-")
os.environ["XDG_DATA_HOME"] = _SESSION_DATA
atexit.register(shutil.rmtree, _SESSION_DATA, ignore_errors=True)  # left nothing behind


@pytest.fixture(scope="module", autouse=True)
def _module_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    before = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if before is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = before


@pytest.fixture(autouse=True)
def _own_data_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    yield


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin unless the entry point (or ``-p``) did already."""
    if not config.pluginmanager.is_registered(plugin) and not config.pluginmanager.is_blocked(
        "aiocelerymon"
    ):
        config.pluginmanager.register(plugin, "aiocelerymon")

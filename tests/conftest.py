"""The project's tests use the shipped pytest plugin (aiocelerymon.testing.plugin) for brokers.

Installed (nox: ``pip install -e .``), pytest loads it through the ``pytest11`` entry point;
run from a checkout with ``PYTHONPATH=.`` there is no entry point, so it is registered here.
Registering it a second time (under its module name) would make pytest raise.
"""

from __future__ import annotations

import pytest

from aiocelerymon.testing import plugin


def pytest_configure(config: pytest.Config) -> None:
    """Register the plugin unless the entry point (or ``-p``) did already."""
    if not config.pluginmanager.is_registered(plugin) and not config.pluginmanager.is_blocked(
        "aiocelerymon"
    ):
        config.pluginmanager.register(plugin, "aiocelerymon")

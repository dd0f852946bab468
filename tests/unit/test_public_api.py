"""The public surface is small, sorted and importable: a change to it must be deliberate."""

from __future__ import annotations

import importlib

import pytest

PUBLIC_MODULES = [
    "aiocelerymon",
    "aiocelerymon.control",
    "aiocelerymon.events",
    "aiocelerymon.exceptions",
    "aiocelerymon.transports",
    "aiocelerymon.wire",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted_and_importable(name):
    module = importlib.import_module(name)
    exported = module.__all__
    assert list(exported) == sorted(exported)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.{attr} is in __all__ but missing"

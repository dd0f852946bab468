"""Fixtures shared by the interop modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.interop import SharedClusters, Variant


@pytest.fixture(scope="session")
def shared_clusters(request: pytest.FixtureRequest) -> Iterator[SharedClusters]:
    """Clusters of two real workers per broker variant, for the whole session."""
    # The servers of the variants this run uses, requested now: a fixture asked for later (at
    # a cluster's first use) would be torn down before this one, its workers still running.
    wanted = {
        param.broker
        for item in request.session.items
        if (callspec := getattr(item, "callspec", None)) is not None
        for param in callspec.params.values()
        if isinstance(param, Variant)
    }
    for broker, fixture in (("redis", "redis_server"), ("amqp", "rabbit_server")):
        if broker in wanted:
            request.getfixturevalue(fixture)
    clusters = SharedClusters(request)
    try:
        yield clusters
    finally:
        clusters.close()

"""Fixtures shared by the interop modules, and the order that keeps shared clusters apart.

The shared clusters of the default variants live on Redis db 0 and RabbitMQ ``/``, where the
other modules' own clusters run too: left running, they would answer those modules'
broadcasts. So the tests on shared clusters run first, and the shared workers are stopped
before the first test that does not use them.
"""

from __future__ import annotations

from collections.abc import Iterator

import celery
import pytest

from tests.support.interop import SharedClusters, Variant

_open: list[SharedClusters] = []


def _not_for_this_run(item: pytest.Item) -> bool:
    """A test marked for other Celery minors, or for another broker variant than its own.

    Such tests are deselected, never skipped: a skip in CI must mean something could not run.
    """
    minors = item.get_closest_marker("celery_minors")
    if minors is not None and ".".join(celery.__version__.split(".")[:2]) not in minors.args:
        return True
    only = item.get_closest_marker("only_variant")
    callspec = getattr(item, "callspec", None)
    if only is not None and callspec is not None:
        variants = [p for p in callspec.params.values() if isinstance(p, Variant)]
        return bool(variants) and all(v.id not in only.args for v in variants)
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect what is not for this run; then tests on shared clusters first (a stable sort:
    every other order is kept)."""
    dropped = [item for item in items if _not_for_this_run(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
    items.sort(key=lambda item: "shared_clusters" not in getattr(item, "fixturenames", ()))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Stop the shared workers before a test that has clusters of its own."""
    if "shared_clusters" not in getattr(item, "fixturenames", ()):
        for clusters in _open:
            clusters.close()


@pytest.fixture(scope="session")
def shared_clusters(request: pytest.FixtureRequest) -> Iterator[SharedClusters]:
    """Clusters of two real workers per broker variant, while the tests that share them run."""
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
    _open.append(clusters)
    try:
        yield clusters
    finally:
        _open.remove(clusters)
        clusters.close()

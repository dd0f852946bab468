"""Our async remote-control client returns exactly what Celery's own client returns.

Every inspect and control command is sent twice to the same pair of real Celery workers: once
through ``aiocelerymon.Client().control`` and once through ``celery.Celery().control`` (run in a
thread), and the JSON is compared. Only values that legitimately change between two calls are
masked (uptime, rusage, Lamport clocks, pool pids, memory samples, objgraph file names), and task
ids where the two sides had to use different tasks (terminate). The four broker variants of
tests/support/interop.py. Runs with whatever Celery the environment has; nox runs it per minor::

    nox -R -s "interop(celery='5.5')" -- tests/integration/interop/test_control_interop.py -q

Where Celery's client and ours differ on purpose (the total deadline, early finish, ``missing``,
an exact ``limit``) the tests compare what both return and assert our extras separately.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import celery
import pytest

from aiocelerymon import Client
from aiocelerymon.control import Inspect, Replies
from tests.support.celery_worker import CeleryWorker
from tests.support.interop import VARIANTS, Variant, variant_url, workers

pytestmark = [pytest.mark.integration, pytest.mark.interop]

T = TypeVar("T")

#: Celery's default inspect timeout (an idle gap between replies, kombu ``_collect``).
THEIR_TIMEOUT = 1.0
#: Our timeout is a total deadline; our calls finish early once both workers answered.
OUR_TIMEOUT = 10.0
#: Upper bound for anything that waits on a worker (start, task state, process exit).
DEADLINE = 60.0
ADD = "tests.integration.celery_app.add"
SLEEP = "tests.integration.celery_app.sleep"
UNKNOWN_TASK = "tests.integration.celery_app.no_such_task"


@dataclass
class Cluster:
    """Two real workers and a Celery client app configured like our client."""

    variant: Variant
    url: str
    workers: list[CeleryWorker]
    app: Any  # celery.Celery
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes(self) -> list[str]:
        return [w.hostname for w in self.workers]

    @property
    def alpha(self) -> str:
        return self.workers[0].hostname

    @property
    def beta(self) -> str:
        return self.workers[1].hostname

    def client(self) -> Client:
        return self.variant.client(self.url)

    async def theirs(self, call: Callable[[Any], T]) -> T:
        """Run ``call(app.control)`` in a thread: Celery's client is blocking."""
        return await asyncio.to_thread(call, EarlyFinish(self.app.control, len(self.nodes)))

    async def inspect_theirs(self, call: Callable[[Any], T], **kwargs: Any) -> T:
        """``call(app.control.inspect(timeout=THEIR_TIMEOUT, **kwargs))``, in a thread."""
        return await self.theirs(lambda control: call(their_inspect(control, **kwargs)))

    async def send(self, name: str, node: str, *args: Any, **options: Any) -> str:
        """Send a task to ``node`` only (its ``worker_direct`` queue); returns the task id."""
        from celery.utils.nodenames import worker_direct

        def send() -> str:
            result = self.app.send_task(name, args=args, queue=worker_direct(node), **options)
            return str(result.id)

        return await asyncio.to_thread(send)


class EarlyFinish:
    """Celery's ``app.control``, told how many replies a call to the whole cluster gets.

    Celery waits out its timeout (an idle gap: 1 s) after the last reply unless it knows how
    many to expect (``limit``; it sets ``limit=len(destination)`` itself for addressed calls).
    Given ``limit`` = the number of workers, it returns once both answered, as ours does with
    ``expected=``: the same replies, without a second of waiting in each of ~250 calls. Calls
    that name a destination, a pattern or a limit of their own are left alone.
    """

    def __init__(self, control: Any, expected: int) -> None:
        self._control = control
        self._expected = expected

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._control, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            replying = name in ("inspect", "ping") or kwargs.get("reply")
            addressed = {"destination", "pattern", "limit"} & kwargs.keys()
            if replying and not addressed:
                kwargs["limit"] = self._expected
            return attr(*args, **kwargs)

        return call


def celery_app(variant: Variant, url: str) -> Any:
    app = celery.Celery("aiocm-interop-client", broker=url, set_as_current=False)
    app.conf.update(control_exchange=variant.namespace)
    if variant.transport_options:
        app.conf.broker_transport_options = variant.transport_options
    return app


def worker_config(variant: Variant, **extra: Any) -> dict[str, Any]:
    # Each worker also consumes <nodename>.dq2, so a test can put a task on one node.
    return variant.config(**{"worker_direct": True, "worker_pool_restarts": True, **extra})


@pytest.fixture(scope="module", params=VARIANTS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    variant: Variant = request.param
    config = worker_config(variant)
    hostnames = [f"alpha.{variant.id}@interop", f"beta.{variant.id}@interop"]
    with (
        variant_url(request, variant) as url,
        workers(variant, url, hostnames, config=config, events=False) as started,
    ):
        app = celery_app(variant, url)
        try:
            yield Cluster(variant, url, started, app, config)
        finally:
            app.close()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    async with cluster.client() as c:
        yield c


def ours_inspect(client: Client, cluster: Cluster, **kwargs: Any) -> Inspect:
    """Our Inspect addressed like Celery's broadcast, finishing once both workers answered."""
    kwargs.setdefault("timeout", OUR_TIMEOUT)
    if "destination" not in kwargs and "pattern" not in kwargs and "limit" not in kwargs:
        kwargs.setdefault("expected", cluster.nodes)
    return client.control.inspect(**kwargs)


def their_inspect(control: Any, **kwargs: Any) -> Any:
    kwargs.setdefault("timeout", THEIR_TIMEOUT)
    return control.inspect(**kwargs)


async def both(ours: Awaitable[T], theirs: Awaitable[Any]) -> tuple[T, Any]:
    """Run our call and Celery's at the same time (for commands that change no state)."""
    mine, celerys = await asyncio.gather(ours, theirs)
    return mine, celerys


# --------------------------------------------------------------------------------------------
# Normalisation: only what changes between two calls is masked, keeping its type visible.


def _mask(value: Any, *paths: str) -> Any:
    masked = copy.deepcopy(value)
    for path in paths:
        *parents, last = path.split(".")
        target = masked
        for part in parents:
            if not isinstance(target, dict) or part not in target:
                break
            target = target[part]
        else:
            if isinstance(target, dict) and last in target:
                item = target[last]
                if isinstance(item, list):  # pids: only the count is stable
                    target[last] = f"<{len(item)} x {type(item[0]).__name__ if item else '-'}>"
                else:
                    target[last] = f"<{type(item).__name__}>"
    return masked


VOLATILE: dict[str, Callable[[Any], Any]] = {
    "stats": lambda v: _mask(v, "uptime", "rusage", "clock", "pool.processes"),
    "clock": lambda v: _mask(v, "clock"),
    "hello": lambda v: _mask(v, "clock"),
    # A sample string like "12.3MB" with psutil, None without.
    "memsample": lambda v: _mask({"v": v}, "v")["v"],
    "memdump": lambda v: v if "psutil not installed" in str(v) else _mask({"v": v}, "v")["v"],
    "objgraph": lambda v: _mask(v, "filename"),
}


def normalize(command: str, flat: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{node: value}`` with the volatile parts of each value masked."""
    if flat is None:
        return None
    fix = VOLATILE.get(command, lambda v: v)
    return {node: fix(value) for node, value in flat.items()}


def by_node(replies: list[dict[str, Any]] | None) -> dict[str, Any]:
    """A broadcast reply list as ``{node: value}``; arrival order differs between calls."""
    assert replies is not None
    flat: dict[str, Any] = {}
    for body in replies:
        assert isinstance(body, dict) and len(body) == 1, body
        flat.update(body)
    assert len(flat) == len(replies), f"duplicate node names in {replies}"
    return flat


def each(nodes: list[str], value: Any) -> dict[str, Any]:
    """``{node: value}`` for every node (the same reply from each)."""
    return dict.fromkeys(nodes, value)


def mask_ids(flat: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """Replace task ids (which had to differ between the two sides) by placeholders."""

    def mask(value: Any) -> Any:
        if isinstance(value, str):
            for task_id, placeholder in ids.items():
                value = value.replace(task_id, placeholder)
            return value
        if isinstance(value, dict):
            return {mask(k): mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    masked: dict[str, Any] = mask(flat)
    return masked


# --------------------------------------------------------------------------------------------
# Inspect commands on an idle cluster


@dataclass(frozen=True)
class InspectCase:
    command: str
    ours: Callable[[Inspect], Awaitable[Any]]
    theirs: Callable[[Any], Any]


INSPECT_CASES = [
    InspectCase("ping", lambda i: i.ping(), lambda i: i.ping()),
    InspectCase("stats", lambda i: i.stats(), lambda i: i.stats()),
    InspectCase("active", lambda i: i.active(), lambda i: i.active()),
    InspectCase("active", lambda i: i.active(safe=True), lambda i: i.active(safe=True)),
    InspectCase("reserved", lambda i: i.reserved(), lambda i: i.reserved()),
    InspectCase("scheduled", lambda i: i.scheduled(), lambda i: i.scheduled()),
    InspectCase("revoked", lambda i: i.revoked(), lambda i: i.revoked()),
    InspectCase("registered", lambda i: i.registered(), lambda i: i.registered()),
    InspectCase(
        "registered",
        lambda i: i.registered("rate_limit", "time_limit", "exchange"),
        lambda i: i.registered("rate_limit", "time_limit", "exchange"),
    ),
    InspectCase("active_queues", lambda i: i.active_queues(), lambda i: i.active_queues()),
    InspectCase(
        "query_task",
        lambda i: i.query_task("00000000-0000-4000-8000-000000000000"),
        lambda i: i.query_task("00000000-0000-4000-8000-000000000000"),
    ),
    InspectCase("conf", lambda i: i.conf(), lambda i: i.conf()),
    InspectCase("conf", lambda i: i.conf(with_defaults=True), lambda i: i.conf(with_defaults=True)),
    InspectCase("clock", lambda i: i.clock(), lambda i: i.clock()),
    InspectCase("report", lambda i: i.report(), lambda i: i.report()),
    InspectCase("memsample", lambda i: i.memsample(), lambda i: i.memsample()),
    InspectCase("memdump", lambda i: i.memdump(), lambda i: i.memdump()),
    InspectCase("memdump", lambda i: i.memdump(samples=3), lambda i: i.memdump(samples=3)),
    # objgraph is not installed on the workers: both sides get the same error reply.
    InspectCase("objgraph", lambda i: i.objgraph(), lambda i: i.objgraph()),
    InspectCase(
        "hello",
        lambda i: i.hello("aiocm-peer@interop"),
        lambda i: i.hello("aiocm-peer@interop"),
    ),
]
INSPECT_IDS = [
    "ping",
    "stats",
    "active",
    "active-safe",
    "reserved",
    "scheduled",
    "revoked",
    "registered",
    "registered-items",
    "active_queues",
    "query_task-unknown",
    "conf",
    "conf-defaults",
    "clock",
    "report",
    "memsample",
    "memdump",
    "memdump-3",
    "objgraph",
    "hello",
]


@pytest.mark.parametrize("case", INSPECT_CASES, ids=INSPECT_IDS)
async def test_inspect_command_matches_celery(
    case: InspectCase, cluster: Cluster, client: Client
) -> None:
    ours, theirs = await both(
        case.ours(ours_inspect(client, cluster)),
        cluster.theirs(lambda control: case.theirs(their_inspect(control))),
    )
    assert ours is not None and set(ours) == set(cluster.nodes)
    assert normalize(case.command, ours) == normalize(case.command, theirs)
    assert ours.missing == frozenset() and ours.duplicates == frozenset() and ours.complete


async def test_objgraph_error_is_data(cluster: Cluster, client: Client) -> None:
    replies = await ours_inspect(client, cluster).objgraph()
    assert replies is not None
    assert set(replies.errors) == set(cluster.nodes)
    assert all("objgraph" in message for message in replies.errors.values())


# --------------------------------------------------------------------------------------------
# Inspect commands while tasks are active, reserved and scheduled


async def poll(
    client: Client, node: str, command: str, done: Callable[[Any], bool], **arguments: Any
) -> Any:
    """Ask ``node`` until its reply satisfies ``done`` (remote state has no event to await)."""
    inspect = client.control.inspect(destination=[node], timeout=5.0)
    async with asyncio.timeout(DEADLINE):
        while True:
            reply = await inspect.call(command, **arguments)
            if reply and node in reply and done(reply[node]):
                return reply[node]
            await asyncio.sleep(0.05)  # pacing between two remote polls, not synchronisation


def has_task(task_id: str, *, scheduled: bool = False) -> Callable[[Any], bool]:
    def done(items: Any) -> bool:
        requests = [i["request"] for i in items] if scheduled else items
        ids: list[str] = [r["id"] for r in requests]
        return task_id in ids

    return done


def idle(items: Any) -> bool:
    return isinstance(items, list) and not items


async def wait_idle(client: Client, cluster: Cluster) -> None:
    for node in cluster.nodes:
        await poll(client, node, "active", idle)
        await poll(client, node, "reserved", idle)


@contextlib.asynccontextmanager
async def busy_cluster(cluster: Cluster, client: Client) -> AsyncIterator[dict[str, str]]:
    """alpha runs one task, holds one reserved and one scheduled; beta runs one task."""
    ids: dict[str, str] = {}
    try:
        ids["active"] = await cluster.send(SLEEP, cluster.alpha, 60)
        await poll(client, cluster.alpha, "active", has_task(ids["active"]))
        ids["reserved"] = await cluster.send(SLEEP, cluster.alpha, 60)
        await poll(client, cluster.alpha, "reserved", has_task(ids["reserved"]))
        ids["scheduled"] = await cluster.send(ADD, cluster.alpha, 2, 2, countdown=600)
        await poll(client, cluster.alpha, "scheduled", has_task(ids["scheduled"], scheduled=True))
        ids["beta"] = await cluster.send(SLEEP, cluster.beta, 60)
        await poll(client, cluster.beta, "active", has_task(ids["beta"]))
        yield ids
    finally:
        # Celery's own client cleans up, so a bug of ours cannot leave the workers busy.
        waiting = [i for k, i in ids.items() if k in ("reserved", "scheduled")]
        running = [i for k, i in ids.items() if k in ("active", "beta")]
        if waiting:
            await cluster.theirs(lambda control: control.revoke(waiting))
        if running:
            await cluster.theirs(lambda control: control.terminate(running, signal="SIGKILL"))
        await wait_idle(client, cluster)


async def test_task_inspection_matches_celery(cluster: Cluster, client: Client) -> None:
    async with busy_cluster(cluster, client) as ids:
        all_ids = list(ids.values())
        cases: list[tuple[str, Callable[[Inspect], Awaitable[Any]], Callable[[Any], Any]]] = [
            ("active", lambda i: i.active(), lambda i: i.active()),
            ("active", lambda i: i.active(safe=True), lambda i: i.active(safe=True)),
            ("reserved", lambda i: i.reserved(), lambda i: i.reserved()),
            ("scheduled", lambda i: i.scheduled(), lambda i: i.scheduled()),
            ("query_task", lambda i: i.query_task(*all_ids), lambda i: i.query_task(*all_ids)),
            ("stats", lambda i: i.stats(), lambda i: i.stats()),
        ]
        for command, ours_call, their_call in cases:
            ours, theirs = await both(
                ours_call(ours_inspect(client, cluster)),
                cluster.inspect_theirs(their_call),
            )
            assert normalize(command, ours) == normalize(command, theirs), command
        active = await ours_inspect(client, cluster).active()
        assert active is not None
        assert [t["id"] for t in active[cluster.alpha]] == [ids["active"]]
        assert [t["id"] for t in active[cluster.beta]] == [ids["beta"]]
        scheduled = await ours_inspect(client, cluster).scheduled()
        assert scheduled is not None
        assert [t["request"]["id"] for t in scheduled[cluster.alpha]] == [ids["scheduled"]]
        queried = await ours_inspect(client, cluster).query_task(*all_ids)
        assert queried is not None
        assert queried[cluster.alpha][ids["active"]][0] == "active"
        assert queried[cluster.alpha][ids["reserved"]][0] == "reserved"
        assert set(queried[cluster.beta]) == {ids["beta"]}


async def test_query_task_with_a_list_like_celery(cluster: Cluster, client: Client) -> None:
    task_id = "00000000-0000-4000-8000-000000000001"
    ours, theirs = await both(
        ours_inspect(client, cluster).query_task([task_id]),
        cluster.theirs(lambda control: their_inspect(control).query_task([task_id])),
    )
    assert ours == theirs


# --------------------------------------------------------------------------------------------
# Targeting: destination, pattern + matcher, limit, callback


async def test_destination(cluster: Cluster, client: Client) -> None:
    for destination in ([cluster.alpha], [cluster.beta], cluster.nodes):
        ours, theirs = await both(
            client.control.inspect(destination=destination, timeout=OUR_TIMEOUT).ping(),
            cluster.inspect_theirs(lambda i: i.ping(), destination=destination),
        )
        assert ours == theirs == {node: {"ok": "pong"} for node in destination}
        assert ours is not None and ours.missing == frozenset()
    # An empty destination list means everyone, as in kombu.
    ours, theirs = await both(
        ours_inspect(client, cluster, destination=[], expected=cluster.nodes).ping(),
        cluster.theirs(lambda control: their_inspect(control, destination=[]).ping()),
    )
    assert ours == theirs == {node: {"ok": "pong"} for node in cluster.nodes}


async def test_nobody_at_destination(cluster: Cluster, client: Client) -> None:
    ghost = "ghost@nowhere"
    ours_replies = await client.control.broadcast(
        "ping", destination=[ghost], reply=True, timeout=THEIR_TIMEOUT
    )
    ours, theirs = await both(
        client.control.inspect(destination=[ghost], timeout=THEIR_TIMEOUT).ping(),
        cluster.theirs(lambda control: their_inspect(control, destination=[ghost]).ping()),
    )
    # Celery's None; ours is as falsy and == None, and still says who did not answer.
    assert theirs is None and ours == theirs and not ours
    assert ours.missing == frozenset({ghost}) and not ours.complete
    assert ours_replies == [] and ours_replies is not None
    assert ours_replies.missing == frozenset({ghost}) and not ours_replies.complete


@pytest.mark.parametrize(
    ("pattern", "matcher", "expected"),
    [
        ("alpha.*", "glob", "alpha"),
        ("*@interop", "glob", "both"),
        (r"beta\.", "pcre", "beta"),
        (r"(alpha|beta)\.", "pcre", "both"),
        ("nobody*", "glob", "none"),
    ],
)
async def test_pattern_and_matcher(
    cluster: Cluster, client: Client, pattern: str, matcher: str, expected: str
) -> None:
    want = {"alpha": [cluster.alpha], "beta": [cluster.beta], "both": cluster.nodes, "none": []}
    ours, theirs = await both(
        client.control.inspect(pattern=pattern, matcher=matcher, timeout=THEIR_TIMEOUT).ping(),
        cluster.theirs(
            lambda control: their_inspect(control, pattern=pattern, matcher=matcher).ping()
        ),
    )
    assert ours == theirs
    assert sorted(ours or {}) == sorted(want[expected])
    ours_list, theirs_list = await both(
        client.control.broadcast(
            "ping", reply=True, pattern=pattern, matcher=matcher, timeout=THEIR_TIMEOUT
        ),
        cluster.theirs(
            lambda control: control.broadcast(
                "ping", reply=True, pattern=pattern, matcher=matcher, timeout=THEIR_TIMEOUT
            )
        ),
    )
    assert by_node(ours_list) == by_node(theirs_list)


async def test_pattern_without_matcher(cluster: Cluster, client: Client) -> None:
    ours, theirs = await both(
        client.control.inspect(pattern="alpha.*", timeout=THEIR_TIMEOUT).ping(),
        cluster.theirs(lambda control: their_inspect(control, pattern="alpha.*").ping()),
    )
    assert theirs == {cluster.alpha: {"ok": "pong"}}
    assert ours == theirs


async def test_inspect_ping_with_destination_argument(cluster: Cluster, client: Client) -> None:
    theirs = await cluster.theirs(
        lambda control: their_inspect(control).ping(destination=[cluster.alpha])
    )
    assert theirs == {cluster.alpha: {"ok": "pong"}}
    ours = await client.control.inspect(timeout=OUR_TIMEOUT).ping(destination=[cluster.alpha])
    assert ours == theirs


async def test_limit(cluster: Cluster, client: Client) -> None:
    """``limit=1``: we return exactly one reply; Celery returns *at least* one.

    kombu's ``_collect`` counts ``drain_events`` calls, not messages: on AMQP one drain can
    deliver both replies, and Celery then returns two (seen with py-amqp on every version).
    """
    ours, theirs = await both(
        client.control.inspect(limit=1, timeout=OUR_TIMEOUT).ping(),
        cluster.theirs(lambda control: their_inspect(control, limit=1).ping()),
    )
    assert ours is not None and theirs is not None
    assert len(ours) == 1 and 1 <= len(theirs) <= 2
    # Which node answers first is a race on both sides: compare the shape.
    assert set(ours) <= set(cluster.nodes) and set(theirs) <= set(cluster.nodes)
    assert all(value == {"ok": "pong"} for value in [*ours.values(), *theirs.values()])
    ours_list, theirs_list = await both(
        client.control.ping(limit=1, timeout=OUR_TIMEOUT),
        cluster.theirs(lambda control: control.ping(limit=1, timeout=THEIR_TIMEOUT)),
    )
    assert len(ours_list) == 1 and 1 <= len(theirs_list) <= 2
    if cluster.variant.broker == "redis":
        # kombu's Redis channel hands over one message per drain: Celery is exact there.
        assert len(theirs) == len(theirs_list) == 1


async def test_callback_sees_each_reply(cluster: Cluster, client: Client) -> None:
    seen_ours: list[dict[str, Any]] = []
    seen_theirs: list[dict[str, Any]] = []
    ours, theirs = await both(
        client.control.inspect(
            callback=seen_ours.append, expected=cluster.nodes, timeout=OUR_TIMEOUT
        ).ping(),
        cluster.theirs(lambda control: their_inspect(control, callback=seen_theirs.append).ping()),
    )
    assert ours == theirs
    assert by_node(seen_ours) == by_node(seen_theirs) == ours


async def test_control_ping_and_broadcast_lists(cluster: Cluster, client: Client) -> None:
    ours, theirs = await both(
        client.control.ping(expected=cluster.nodes, timeout=OUR_TIMEOUT),
        cluster.theirs(lambda control: control.ping(timeout=THEIR_TIMEOUT)),
    )
    assert isinstance(ours, Replies) and isinstance(theirs, list)
    assert len(ours) == len(theirs) == 2
    assert by_node(ours) == by_node(theirs)


async def test_unknown_command_is_an_error_reply(cluster: Cluster, client: Client) -> None:
    command = "aiocm_no_such_command"
    ours, theirs = await both(
        client.control.broadcast(command, reply=True, expected=cluster.nodes, timeout=OUR_TIMEOUT),
        cluster.theirs(
            lambda control: control.broadcast(command, reply=True, timeout=THEIR_TIMEOUT)
        ),
    )
    assert by_node(ours) == by_node(theirs)
    error = f"KeyError({command!r})"
    assert ours is not None and ours.errors == dict.fromkeys(cluster.nodes, error)
    ours_flat, theirs_flat = await both(
        ours_inspect(client, cluster).call(command, token=1),
        cluster.theirs(lambda control: their_inspect(control)._request(command, token=1)),
    )
    assert ours_flat == theirs_flat == each(cluster.nodes, {"error": error})
    assert ours_flat is not None and ours_flat.errors == dict.fromkeys(cluster.nodes, error)


async def test_bad_arguments_are_error_replies(cluster: Cluster, client: Client) -> None:
    # rate_limit has required arguments: the worker answers TypeError instead of raising.
    ours, theirs = await both(
        client.control.broadcast(
            "rate_limit", {"bogus": 1}, reply=True, expected=cluster.nodes, timeout=OUR_TIMEOUT
        ),
        cluster.theirs(
            lambda control: control.broadcast(
                "rate_limit", {"bogus": 1}, reply=True, timeout=THEIR_TIMEOUT
            )
        ),
    )
    assert by_node(ours) == by_node(theirs)
    assert ours is not None and set(ours.errors) == set(cluster.nodes)
    assert all(e.startswith("TypeError(") for e in ours.errors.values())


# --------------------------------------------------------------------------------------------
# Control commands (they change worker state: each side runs from the same starting state)


async def call_ours(
    client: Client, cluster: Cluster, method: str, *args: Any, **kw: Any
) -> Replies:
    """``client.control.<method>(*args, **kw)`` with replies, ending once both workers answered."""
    replies = await getattr(client.control, method)(
        *args, **kw, reply=True, expected=cluster.nodes, timeout=OUR_TIMEOUT
    )
    assert isinstance(replies, Replies)
    assert replies.missing == frozenset() and replies.complete
    return replies


async def call_theirs(cluster: Cluster, method: str, *args: Any, **kw: Any) -> Any:
    """``app.control.<method>(*args, **kw)`` with replies, in a thread."""

    def call(control: Any) -> Any:
        return getattr(control, method)(*args, **kw, reply=True, timeout=THEIR_TIMEOUT)

    return await cluster.theirs(call)


async def control_both(
    cluster: Cluster, client: Client, method: str, *args: Any, **kw: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same control call through our client, then Celery's (never at the same time)."""
    ours = await call_ours(client, cluster, method, *args, **kw)
    theirs = await call_theirs(cluster, method, *args, **kw)
    return by_node(ours), by_node(theirs)


async def test_enable_disable_events(cluster: Cluster, client: Client) -> None:
    # The workers run without -E: task events start disabled. Each side runs the whole
    # sequence from that state.
    steps = [
        ("enable_events", "task events enabled"),
        ("enable_events", "task events already enabled"),
        ("disable_events", "task events disabled"),
        ("disable_events", "task events already disabled"),
    ]
    ours = [by_node(await call_ours(client, cluster, method)) for method, _ in steps]
    theirs = [by_node(await call_theirs(cluster, method)) for method, _ in steps]
    assert ours == theirs
    assert ours == [each(cluster.nodes, {"ok": text}) for _, text in steps]


async def wait_pool_size(client: Client, cluster: Cluster, size: int) -> None:
    """Growing and shrinking are asynchronous: wait until every pool has ``size`` processes."""

    def sized(stats: Any) -> bool:
        return len(stats["pool"]["processes"]) == size

    for node in cluster.nodes:
        await poll(client, node, "stats", sized)


async def test_pool_grow_shrink(cluster: Cluster, client: Client) -> None:
    # One step at a time from a settled pool: a shrink while new processes still start up
    # answers "All processes busy" instead, on either side.
    replies: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
    size = 1
    for method, step in (("pool_grow", 1), ("pool_shrink", -1)):
        replies["ours"].append(by_node(await call_ours(client, cluster, method, 1)))
        size += step
        await wait_pool_size(client, cluster, size)
        replies["theirs"].append(by_node(await call_theirs(cluster, method, 1)))
        size += step
        await wait_pool_size(client, cluster, size)
    assert replies["ours"] == replies["theirs"]
    assert replies["ours"] == [
        each(cluster.nodes, {"ok": "pool will grow"}),
        each(cluster.nodes, {"ok": "pool will shrink"}),
    ]


async def test_autoscale_not_enabled(cluster: Cluster, client: Client) -> None:
    ours, theirs = await control_both(cluster, client, "autoscale", 4, 1)
    assert ours == theirs
    assert ours == each(cluster.nodes, {"error": "ValueError('Autoscale not enabled')"})


@pytest.mark.parametrize(
    ("task_name", "rate"),
    [(ADD, "10/m"), (ADD, 0), (ADD, None), (UNKNOWN_TASK, "1/s"), (ADD, "abc")],
    ids=["set", "zero", "none", "unknown-task", "invalid"],
)
async def test_rate_limit(cluster: Cluster, client: Client, task_name: str, rate: Any) -> None:
    try:
        ours, theirs = await control_both(cluster, client, "rate_limit", task_name, rate)
        assert ours == theirs
    finally:
        await call_theirs(cluster, "rate_limit", ADD, None)


async def test_rate_limit_shows_in_registered(cluster: Cluster, client: Client) -> None:
    await control_both(cluster, client, "rate_limit", ADD, "5/s")
    try:
        ours, theirs = await both(
            ours_inspect(client, cluster).registered("rate_limit"),
            cluster.theirs(lambda control: their_inspect(control).registered("rate_limit")),
        )
        assert ours == theirs
        assert ours is not None and f"{ADD} [rate_limit=5/s]" in ours[cluster.alpha]
    finally:
        await call_theirs(cluster, "rate_limit", ADD, None)


@pytest.mark.parametrize(
    ("task_name", "soft", "hard"),
    [(SLEEP, 10.0, 20.0), (SLEEP, None, None), (UNKNOWN_TASK, 1, 2)],
    ids=["set", "unset", "unknown-task"],
)
async def test_time_limit(
    cluster: Cluster, client: Client, task_name: str, soft: float | None, hard: float | None
) -> None:
    ours, theirs = await control_both(cluster, client, "time_limit", task_name, soft, hard)
    assert ours == theirs


async def test_heartbeat(cluster: Cluster, client: Client) -> None:
    ours, theirs = await control_both(cluster, client, "heartbeat")
    assert ours == theirs


async def test_add_and_cancel_consumer(cluster: Cluster, client: Client) -> None:
    queue = f"aiocm-extra-{cluster.variant.id}"

    def consuming(items: Any) -> bool:
        return any(q["name"] == queue for q in items)

    def not_consuming(items: Any) -> bool:
        return not consuming(items)

    for side in ("ours", "theirs"):
        if side == "ours":
            added = await call_ours(client, cluster, "add_consumer", queue)
        else:
            added = await call_theirs(cluster, "add_consumer", queue)
        assert by_node(added) == each(cluster.nodes, {"ok": f"add consumer {queue}"}), side
        for node in cluster.nodes:
            await poll(client, node, "active_queues", consuming)
        ours_q, theirs_q = await both(
            ours_inspect(client, cluster).active_queues(),
            cluster.theirs(lambda control: their_inspect(control).active_queues()),
        )
        assert ours_q == theirs_q, side
        if side == "ours":
            gone = await call_ours(client, cluster, "cancel_consumer", queue)
        else:
            gone = await call_theirs(cluster, "cancel_consumer", queue)
        assert by_node(gone) == each(cluster.nodes, {"ok": f"no longer consuming from {queue}"})
        for node in cluster.nodes:
            await poll(client, node, "active_queues", not_consuming)


async def test_revoke(cluster: Cluster, client: Client) -> None:
    one = str(uuid.uuid4())
    many = [str(uuid.uuid4()) for _ in range(3)]
    for task_id in (one, many):
        ours, theirs = await control_both(cluster, client, "revoke", task_id)
        assert ours == theirs
        assert ours[cluster.alpha]["ok"].endswith("flagged as revoked")
    ours_revoked, theirs_revoked = await both(
        ours_inspect(client, cluster).revoked(),
        cluster.theirs(lambda control: their_inspect(control).revoked()),
    )
    assert ours_revoked is not None and theirs_revoked is not None
    assert {n: sorted(v) for n, v in ours_revoked.items()} == {
        n: sorted(v) for n, v in theirs_revoked.items()
    }
    assert {one, *many} <= set(ours_revoked[cluster.alpha])
    # terminate=True for a task nobody runs.
    ours, theirs = await control_both(
        cluster, client, "revoke", one, terminate=True, signal="SIGKILL"
    )
    assert ours == theirs == each(cluster.nodes, {"ok": "terminate: tasks unknown"})


@pytest.mark.parametrize(
    ("headers", "terminate"),
    [({"aiocm": "v1"}, False), ({"aiocm": ["v2", "v3"]}, True)],
    ids=["flag", "terminate"],
)
async def test_revoke_by_stamped_headers(
    cluster: Cluster, client: Client, headers: dict[str, Any], terminate: bool
) -> None:
    ours, theirs = await control_both(
        cluster, client, "revoke_by_stamped_headers", headers, terminate=terminate
    )
    assert ours == theirs
    assert "ok" in ours[cluster.alpha]


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [
        ("revoke", (), {"terminate": True, "signal": "SIGKILL"}),
        ("terminate", (), {}),
        # The worker's own `terminate` command (the clients send revoke + terminate=True).
        ("broadcast", ("terminate",), {}),
    ],
    ids=["revoke-terminate-sigkill", "terminate", "wire-terminate-command"],
)
async def test_terminate_running_task(
    cluster: Cluster, client: Client, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Each side terminates its own running task on alpha; only the task ids differ."""
    results = []
    for side in ("ours", "theirs"):
        task_id = await cluster.send(SLEEP, cluster.alpha, 60)
        await poll(client, cluster.alpha, "active", has_task(task_id))
        if method == "broadcast":
            call_args: tuple[Any, ...] = (*args, {"signal": "SIGKILL", "task_id": [task_id]})
        else:
            call_args = (task_id,)
        if side == "ours":
            reply = await call_ours(client, cluster, method, *call_args, **kwargs)
        else:
            reply = await call_theirs(cluster, method, *call_args, **kwargs)
        results.append(mask_ids(by_node(reply), {task_id: "<task>"}))
        await poll(client, cluster.alpha, "active", idle)
    assert results[0] == results[1]
    assert results[0][cluster.alpha] == {"ok": "terminate: <task>"}
    assert results[0][cluster.beta] == {"ok": "terminate: tasks unknown"}
    await wait_idle(client, cluster)


async def test_pool_restart(cluster: Cluster, client: Client) -> None:
    ours, theirs = await control_both(cluster, client, "pool_restart")
    assert ours == theirs == each(cluster.nodes, {"ok": "reload started"})
    ping = await ours_inspect(client, cluster).ping()
    assert ping == each(cluster.nodes, {"ok": "pong"})


# --------------------------------------------------------------------------------------------
# shutdown: never answers, the worker exits. Dedicated throwaway workers, one per side.


async def test_shutdown_gets_no_reply_and_the_worker_exits(cluster: Cluster) -> None:
    variant = cluster.variant
    # No pool restarts here, so pool_restart's error reply can be compared too.
    config = worker_config(variant, worker_pool_restarts=False)
    hostnames = [f"gamma.{variant.id}@interop", f"delta.{variant.id}@interop"]
    with contextlib.ExitStack() as stack:
        # Started off the loop: the helper waits for their ping answers with a loop of its own.
        start = workers(variant, cluster.url, hostnames, config=config, events=False)
        gamma, delta = await asyncio.to_thread(stack.enter_context, start)
        async with cluster.client() as client:
            ours = await client.control.pool_restart(
                reply=True, destination=hostnames, timeout=OUR_TIMEOUT
            )
            theirs = await cluster.theirs(
                lambda c: c.pool_restart(destination=hostnames, reply=True, timeout=THEIR_TIMEOUT)
            )
            assert by_node(ours) == by_node(theirs)
            assert by_node(ours) == each(
                hostnames, {"error": "ValueError('Pool restarts not enabled')"}
            )

            ours = await client.control.shutdown(
                destination=[gamma.hostname], reply=True, timeout=THEIR_TIMEOUT
            )
            theirs = await cluster.theirs(
                lambda c: c.shutdown(destination=[delta.hostname], reply=True, timeout=1.0)
            )
            assert ours == theirs == []
            assert ours is not None and ours.missing == frozenset({gamma.hostname})
            for worker in (gamma, delta):
                code = await asyncio.to_thread(wait_exit, worker.process)
                assert code == 0, worker.log()
                assert "Got shutdown from remote" in worker.log()
            # A cast (no reply wanted) returns None, as Celery's does.
            assert await client.control.shutdown(destination=["ghost@nowhere"]) is None
            assert await cluster.theirs(lambda c: c.shutdown(destination=["ghost@nowhere"])) is None


def wait_exit(process: subprocess.Popen[str]) -> int:
    return process.wait(DEADLINE)

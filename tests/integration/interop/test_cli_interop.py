"""``python -m aiocelerymon`` prints what ``celery`` prints, against the same real workers.

Each case runs the same command line through ``python -m celery -A tests.integration.celery_app``
and ``python -m aiocelerymon -A tests.integration.celery_app`` at the same time (both as
subprocesses with the same environment) and compares stdout line for line, modulo the order in
which the two workers' replies arrived and values that change between two calls (Lamport
clocks; ``stats`` is compared by its keys). Also ``--json``, exit codes and stderr of the
failure cases. The four broker variants of tests/support/interop.py. Runs with whatever
Celery the environment has; nox runs it per minor::

    nox -R -s "interop(celery='5.5')" -- tests/integration/interop/test_cli_interop.py -q
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.celery_worker import APP_MODULE, REPO_ROOT, CeleryWorker, celery_env
from tests.support.interop import VARIANTS, SharedClusters, Variant

pytestmark = [pytest.mark.integration, pytest.mark.interop]

DEADLINE = 60.0
ADD = "tests.integration.celery_app.add"
#: Broadcasts (no -d) wait out the timeout; addressed calls finish once both nodes answered.
BROADCAST_TIMEOUT = "3"
ADDRESSED_TIMEOUT = "20"
_HEADER = re.compile(r"^(?:->  | )(\S+): (?:OK|ERROR)$")


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@dataclass
class Cluster:
    variant: Variant
    url: str
    workers: list[CeleryWorker]
    env: dict[str, str]

    @property
    def nodes(self) -> str:
        return ",".join(w.hostname for w in self.workers)

    def run(self, tool: str, args: list[str]) -> Run:
        proc = subprocess.run(
            [sys.executable, "-m", tool, "-A", APP_MODULE, *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def both(self, *args: str) -> tuple[Run, Run]:
        """The same command line through celery and through aiocelerymon, concurrently."""
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            theirs = pool.submit(self.run, "celery", list(args))
            ours = pool.submit(self.run, "aiocelerymon", list(args))
            return theirs.result(), ours.result()


@pytest.fixture(scope="module", params=VARIANTS)
def cluster(request: pytest.FixtureRequest, shared_clusters: SharedClusters) -> Cluster:
    variant: Variant = request.param
    url, started = shared_clusters.get(variant)
    env = celery_env({**variant.config(), "broker_url": url})
    # Colour handling is part of the comparison: NO_COLOR (or its absence) must act alike.
    env.pop("NO_COLOR", None)
    return Cluster(variant, url, started, env)


# -- parsing the text output -----------------------------------------------------------------


def split_output(text: str) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """``([(header, body lines), ...] sorted by node, trailing lines)``.

    A reply is its header (``->  node: OK``) and the indented lines after it; the first empty
    line starts the summary (bodies are indented, so never empty).
    """
    blocks: list[tuple[str, list[str]]] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines) and _HEADER.match(lines[index]):
        header, body = lines[index], []
        index += 1
        while index < len(lines) and lines[index] and not _HEADER.match(lines[index]):
            body.append(lines[index])
            index += 1
        blocks.append((header, body))
    return sorted(blocks), lines[index:]


def _digits(lines: list[str]) -> list[str]:
    return [re.sub(r"\d+", "N", line) for line in lines]


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def _json_shape(lines: list[str]) -> Any:
    return _shape(json.loads("\n".join(lines)))


def assert_same_text(theirs: Run, ours: Run, normalize: Callable[[list[str]], Any] | None) -> None:
    assert (ours.code, theirs.code) == (0, 0), (theirs.err, ours.err)
    their_blocks, their_tail = split_output(theirs.out)
    our_blocks, our_tail = split_output(ours.out)
    assert our_tail == their_tail, (theirs.out, ours.out)
    assert [h for h, _ in our_blocks] == [h for h, _ in their_blocks], (theirs.out, ours.out)
    for (header, our_body), (_, their_body) in zip(our_blocks, their_blocks, strict=True):
        assert len(our_body) == len(their_body), (header, their_body, our_body)
        if normalize is None:
            assert our_body == their_body, (header, their_body, our_body)
        else:
            assert normalize(our_body) == normalize(their_body), (header, their_body, our_body)


# -- text output -----------------------------------------------------------------------------

EXACT: list[Any] = [
    ["status"],
    ["-q", "status"],
    ["inspect", "ping"],
    ["-q", "inspect", "ping"],
    ["inspect", "registered"],
    ["inspect", "registered", "rate_limit", "serializer"],
    ["inspect", "active"],
    ["inspect", "reserved"],
    ["inspect", "scheduled"],
    ["inspect", "active_queues"],
    ["inspect", "conf"],
    ["inspect", "conf", "true"],  # Celery's JSON carries Infinity here
    ["-C", "inspect", "conf"],
    ["inspect", "report"],
    ["inspect", "query_task", "no-such-task-id"],
    ["control", "rate_limit", ADD, "10/m"],
    ["control", "rate_limit", "tests.integration.celery_app.nosuch", "10/m"],
    ["control", "time_limit", ADD, "30", "60"],
    ["control", "revoke", "cli-interop-task-id"],
    ["control", "enable_events"],
    ["control", "heartbeat"],
    ["control", "rate_limit", ADD],
]


def _addressed(args: list[str], nodes: str) -> list[str]:
    """Broadcast ping/status as given; address everything else to both workers (early finish)."""
    if args[-1] in ("status", "ping"):
        return [*args, "-t", BROADCAST_TIMEOUT]
    return [*args, "-d", nodes, "-t", ADDRESSED_TIMEOUT]


def _id(args: list[str]) -> str:
    return " ".join(args).replace(ADD, "add")


@pytest.mark.parametrize("args", EXACT, ids=_id)
def test_text_output_is_identical(cluster: Cluster, args: list[str]) -> None:
    theirs, ours = cluster.both(*_addressed(args, cluster.nodes))
    assert_same_text(theirs, ours, None)
    if args[-1] == "status" or args[:2] == ["inspect", "ping"]:
        assert len(split_output(ours.out)[0]) == 2


def test_clock_output_modulo_values(cluster: Cluster) -> None:
    theirs, ours = cluster.both("inspect", "clock", "-d", cluster.nodes, "-t", ADDRESSED_TIMEOUT)
    assert_same_text(theirs, ours, _digits)


@pytest.mark.parametrize("colour", [[], ["-C"]], ids=["default", "no-color"])
def test_stats_output_modulo_values(cluster: Cluster, colour: list[str]) -> None:
    theirs, ours = cluster.both(
        *colour, "inspect", "stats", "-d", cluster.nodes, "-t", ADDRESSED_TIMEOUT
    )

    def shape(lines: list[str]) -> Any:
        # The body is the JSON object indented by 4, ended by an indented blank line when
        # Celery highlights it with pygments; the layout must match, then the keys.
        return [line == "    " for line in lines], _json_shape(lines)

    assert_same_text(theirs, ours, shape)


# -- --json ----------------------------------------------------------------------------------


def _by_node(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(replies, key=lambda reply: next(iter(reply)))


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "registered"],
        ["inspect", "active_queues"],
        ["inspect", "conf"],
        ["control", "rate_limit", ADD, "10/m"],
        ["control", "enable_events"],
    ],
    ids=_id,
)
def test_json_output_is_identical(cluster: Cluster, args: list[str]) -> None:
    theirs, ours = cluster.both(*args, "--json", "-d", cluster.nodes, "-t", ADDRESSED_TIMEOUT)
    assert (ours.code, theirs.code) == (0, 0), (theirs.err, ours.err)
    assert ours.out.count("\n") == theirs.out.count("\n") == 1
    their_value, our_value = json.loads(theirs.out), json.loads(ours.out)
    if args[0] == "control":
        assert isinstance(our_value, list)
        assert _by_node(our_value) == _by_node(their_value)
    else:
        assert isinstance(our_value, dict)
        assert our_value == their_value


def test_json_stats_and_status(cluster: Cluster) -> None:
    theirs, ours = cluster.both("inspect", "stats", "-j", "-d", cluster.nodes, "-t", "20")
    assert _shape(json.loads(ours.out)) == _shape(json.loads(theirs.out))
    assert set(json.loads(ours.out)) == set(cluster.nodes.split(","))

    theirs, ours = cluster.both("status", "--json", "-t", BROADCAST_TIMEOUT)
    their_json, their_tail = theirs.out.split("\n", 1)
    assert json.loads(ours.out) == json.loads(their_json)
    # Celery prints its summary after the JSON; ours goes to stderr, so stdout is JSON only.
    assert their_tail == ours.err == "\n2 nodes online.\n"


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "ping", "-d", "nobody@nowhere"],
        ["status", "-d", "nobody@nowhere"],
        ["control", "heartbeat", "-d", "nobody@nowhere", "--json"],
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_nobody_replies(cluster: Cluster, args: list[str]) -> None:
    theirs, ours = cluster.both(*args, "-t", "1")
    assert ours.code == theirs.code == 69
    assert ours.out == theirs.out == ""
    assert ours.err == theirs.err == "Error: No nodes replied within time constraint\n"


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "nosuch"],
        ["control", "ping"],
        ["inspect", "hello"],
        ["control", "rate_limit", "a", "b", "c"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_like_celery(cluster: Cluster, args: list[str]) -> None:
    theirs, ours = cluster.both(*args)
    assert ours.code == theirs.code == 2
    assert ours.out == theirs.out == ""
    # Same layout (usage line, hint, blank line, error); the wording of the error is ours.
    assert [ln.split(" ", 1)[0] for ln in ours.err.splitlines()] == [
        ln.split(" ", 1)[0] for ln in theirs.err.splitlines()
    ]


def test_list_names_the_same_commands(cluster: Cluster) -> None:
    for kind in ("inspect", "control"):
        theirs, ours = cluster.both(kind, "--list")
        assert ours.code == theirs.code == 0

        def names_(text: str) -> list[str]:
            return [ln.split()[0] for ln in text.splitlines() if re.match(r"^  \S", ln)]

        assert names_(ours.out) == names_(theirs.out)
        assert ours.out.splitlines()[0] == theirs.out.splitlines()[0]

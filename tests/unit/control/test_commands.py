"""The command catalogue: Celery's registry metadata, and CLI words -> wire arguments."""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

import pytest

from aiocelerymon.control import commands
from aiocelerymon.control.commands import (
    COMMANDS,
    ArgumentError,
    Command,
    UnknownCommandError,
    command_from_meta,
    commands_of_kind,
    lookup,
    parse_cli_arguments,
    strtobool,
)

INSPECT = {
    "active", "active_queues", "clock", "conf", "memdump", "memsample", "objgraph", "ping",
    "query_task", "registered", "report", "reserved", "revoked", "scheduled", "stats",
}  # fmt: skip
CONTROL = {
    "add_consumer", "autoscale", "cancel_consumer", "disable_events", "election",
    "enable_events", "heartbeat", "pool_grow", "pool_restart", "pool_shrink", "rate_limit",
    "revoke", "revoke_by_stamped_headers", "shutdown", "terminate", "time_limit",
}  # fmt: skip


# -- the catalogue -------------------------------------------------------------------------


def test_every_builtin_is_listed_by_kind_and_hello_is_hidden() -> None:
    assert set(commands_of_kind("inspect")) == INSPECT
    assert set(commands_of_kind("control")) == CONTROL
    assert set(COMMANDS) == INSPECT | CONTROL | {"hello"}
    assert not COMMANDS["hello"].visible
    assert list(commands_of_kind("inspect")) == sorted(INSPECT)


def test_entries_are_consistent() -> None:
    for name, info in COMMANDS.items():
        assert info.name == name
        assert info.help and "\n" not in info.help
        # A command with positional words says how to write them.
        assert bool(info.signature) == bool(info.args or info.variadic), name
        assert len({a for a, _ in info.args}) == len(info.args)


def test_lookup_by_name_and_alias() -> None:
    assert lookup("dump_tasks") is COMMANDS["registered"]
    assert lookup("dump_active") is COMMANDS["active"]
    assert lookup("ping") is COMMANDS["ping"]
    with pytest.raises(UnknownCommandError, match="nosuch"):
        lookup("nosuch")


@pytest.mark.parametrize(
    ("words", "value"),
    [
        *[("true", True), ("Yes", True), ("on", True), ("1", True)],
        *[("false", False), ("NO", False), ("off", False), ("0", False)],
    ],
)
def test_strtobool(words: str, value: bool) -> None:
    assert strtobool(words) is value


def test_strtobool_refuses_other_words() -> None:
    with pytest.raises(ValueError, match="maybe"):
        strtobool("maybe")


# -- words -> arguments (celery/bin/control.py behaviour, wire reference §4.3) ------------


@pytest.mark.parametrize(
    ("command", "words", "expected"),
    [
        ("revoke", ["a", "b"], {"task_id": ["a", "b"]}),
        ("revoke", [], {"task_id": []}),
        ("terminate", ["KILL", "a"], {"signal": "KILL", "task_id": ["a"]}),
        ("terminate", ["KILL", "a", "b"], {"signal": "KILL", "task_id": ["a", "b"]}),
        # Celery hands the last consumed word to the variadic argument as well.
        ("terminate", ["KILL"], {"signal": "KILL", "task_id": ["KILL"]}),
        ("terminate", [], {"task_id": []}),
        ("registered", [], {"taskinfoitems": []}),
        ("registered", ["rate_limit", "queue"], {"taskinfoitems": ["rate_limit", "queue"]}),
        ("query_task", ["a", "b"], {"ids": ["a", "b"]}),
        ("conf", [], {}),
        ("conf", ["true"], {"with_defaults": True}),
        ("conf", ["off"], {"with_defaults": False}),
        ("rate_limit", ["tasks.add", "5/s"], {"task_name": "tasks.add", "rate_limit": "5/s"}),
        ("rate_limit", ["tasks.add"], {"task_name": "tasks.add"}),
        ("time_limit", ["t", "10", "20"], {"task_name": "t", "soft": 10.0, "hard": 20.0}),
        ("time_limit", ["t", "1.5"], {"task_name": "t", "soft": 1.5}),
        ("memdump", ["5"], {"samples": 5}),
        ("objgraph", ["Foo", "3", "4"], {"type": "Foo", "num": 3, "max_depth": 4}),
        ("pool_grow", ["2"], {"n": 2}),
        ("pool_shrink", [], {}),
        ("autoscale", ["10", "3"], {"max": 10, "min": 3}),
        (
            "add_consumer",
            ["q", "ex", "topic", "rk"],
            {"queue": "q", "exchange": "ex", "exchange_type": "topic", "routing_key": "rk"},
        ),
        ("cancel_consumer", ["q"], {"queue": "q"}),
        ("revoke_by_stamped_headers", ["k=v", "x=y"], {"headers": ["k=v", "x=y"]}),
        # No typed arguments and no variadic: extra words are ignored.
        ("ping", ["extra", "words"], {}),
        ("pool_restart", ["mod"], {}),
        ("stats", [], {}),
    ],
)
def test_parse_cli_arguments(command: str, words: list[str], expected: dict[str, Any]) -> None:
    assert parse_cli_arguments(command, words) == expected
    assert COMMANDS[command].parse_cli_arguments(words) == expected


def test_types_are_converted() -> None:
    args = parse_cli_arguments("time_limit", ["t", "10", "20"])
    assert type(args["soft"]) is float and type(args["hard"]) is float
    assert type(parse_cli_arguments("pool_grow", ["3"])["n"]) is int


@pytest.mark.parametrize(
    ("command", "words", "match"),
    [
        ("rate_limit", ["a", "b", "c"], "takes arguments"),
        ("cancel_consumer", ["q", "extra"], "takes arguments"),
        ("conf", ["maybe"], "with_defaults"),
        ("pool_grow", ["x"], "'n'"),
        ("time_limit", ["t", "soon"], "'soft'"),
    ],
)
def test_bad_words_are_refused(command: str, words: list[str], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        parse_cli_arguments(command, words)


def test_unknown_command_and_custom_catalogue() -> None:
    with pytest.raises(UnknownCommandError):
        parse_cli_arguments("nosuch", [])
    custom = Command("greet", "control", "Say hello.", args=(("who", str),), variadic="extra")
    table = {**COMMANDS, "greet": custom}
    assert parse_cli_arguments("greet", ["me", "a", "b"], table) == {
        "who": "me",
        "extra": ["a", "b"],
    }
    assert "greet" in commands_of_kind("control", table)


def test_command_from_meta_reads_registry_entries() -> None:
    meta = SimpleNamespace(
        type="inspect",
        visible=True,
        args=[("n", int)],
        variadic=None,
        signature="[n]",
        alias="old_name",
        help="First line.\n\nMore.",
        default_timeout=2.0,
    )
    info = command_from_meta("mine", meta)
    assert info == Command(
        "mine",
        "inspect",
        "First line.",
        args=(("n", int),),
        signature="[n]",
        aliases=("old_name",),
        default_timeout=2.0,
    )
    assert parse_cli_arguments(info, ["4"]) == {"n": 4}


# -- against Celery's own registry ---------------------------------------------------------


def _celery_builtins() -> dict[str, Any]:
    from celery.worker import control

    # Only Celery's own handlers: an app in this process may have registered others.
    return {
        name: meta
        for name, meta in control.Panel.meta.items()
        if getattr(control.Panel.data.get(name), "__module__", None) == control.__name__
    }


def _converter_name(convert: Any) -> str:
    return getattr(convert, "__name__", repr(convert))


def test_matches_celery_worker_registry() -> None:
    """Names, kinds, visibility, typed arguments, variadic and aliases equal Celery's."""
    celery = _celery_builtins()
    assert set(celery) == set(COMMANDS)
    for name, meta in celery.items():
        ours = COMMANDS[name]
        assert ours.kind == meta.type, name
        assert ours.visible == meta.visible, name
        assert ours.variadic == meta.variadic, name
        assert [(a, _converter_name(t)) for a, t in ours.args] == [
            (a, _converter_name(t)) for a, t in (meta.args or [])
        ], name
        assert ours.aliases == ((meta.alias,) if meta.alias else ()), name
        assert ours.default_timeout == meta.default_timeout, name


def test_aliases_are_callable_on_celery_workers() -> None:
    from celery.worker import control

    for info in COMMANDS.values():
        for alias in info.aliases:
            assert control.Panel.data[alias] is control.Panel.data[info.name]


def test_parsing_matches_celerys_cli() -> None:
    """Every example gives the same arguments as celery's own CLI helper."""
    from celery.bin import control as bin_control

    examples = {
        "revoke": [["a", "b"], []],
        "terminate": [["KILL", "a", "b"], ["KILL"], []],
        "registered": [[], ["x"]],
        "query_task": [["a"]],
        "conf": [[], ["true"], ["no"]],
        "rate_limit": [["t", "1/s"], ["t"]],
        "time_limit": [["t", "1", "2"]],
        "objgraph": [["T", "1", "2"], []],
        "memdump": [["3"]],
        "autoscale": [["4", "2"]],
        "add_consumer": [["q", "e", "direct", "k"]],
        "ping": [["ignored"]],
    }
    for command, cases in examples.items():
        for words in cases:
            expected = bin_control._compile_arguments(command, list(words))
            assert parse_cli_arguments(command, words) == expected, (command, words)


def test_module_is_pure_data() -> None:
    source = importlib.import_module(commands.__name__).__file__
    assert source is not None
    with open(source, encoding="utf-8") as fh:
        text = fh.read()
    for forbidden in ("import asyncio", "aiocelerymon.transports", "import celery"):
        assert forbidden not in text

"""The catalogue of Celery's remote-control commands, and how CLI words become their arguments.

Pure data, no I/O. Every built-in command a Celery 5.5-5.7 worker registers is listed with the
metadata the worker registry carries (kind, visibility, aliases, the typed positional arguments
the ``celery inspect|control`` CLI accepts and the name that collects any remaining words), so a
command line can be turned into exactly the arguments Celery's own CLI would send. Help texts
and signatures are ours. ``tests/unit/control/test_commands.py`` checks the metadata against
``celery.worker.control.Panel.meta`` whenever Celery is importable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "COMMANDS",
    "ArgumentError",
    "Command",
    "CommandKind",
    "Converter",
    "UnknownCommandError",
    "command_from_meta",
    "commands_of_kind",
    "lookup",
    "parse_cli_arguments",
    "strtobool",
]

CommandKind = Literal["inspect", "control"]
#: Turns one command-line word into the value sent on the wire (``str``, ``int``, ...).
Converter = Callable[[str], Any]

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def strtobool(word: str) -> bool:
    """Read a yes/no word as Celery's CLI does: true/false, yes/no, on/off, 1/0, any case.

    Raises:
        ValueError: any other word.
    """
    folded = word.lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no, on/off, 1/0), got {word!r}")


class UnknownCommandError(ValueError):
    """No command of that name (and kind) is known."""

    def __init__(self, name: str, kind: CommandKind | None = None) -> None:
        self.name = name
        self.kind = kind
        super().__init__(f"unknown {kind + ' ' if kind else ''}command {name!r}")


class ArgumentError(ValueError):
    """Command-line words that do not fit the command's arguments."""


@dataclass(frozen=True, slots=True)
class Command:
    """One remote-control command.

    Attributes:
        name: the method name on the wire.
        kind: ``inspect`` (read-only queries) or ``control`` (changes something).
        help: one line for ``--list``.
        args: ``(argument name, converter)`` for the CLI's positional words, in order.
        variadic: the argument that receives the words left after ``args``, as a list.
        signature: how the positional words are written, for ``--list``.
        aliases: other names the worker answers to (not offered by the CLI).
        visible: listed and accepted by the CLI (``hello`` is not).
        default_timeout: the worker registry's suggested timeout (Celery's clients ignore it).
        answers: whether workers reply (``shutdown`` exits without a word).
    """

    name: str
    kind: CommandKind
    help: str
    args: tuple[tuple[str, Converter], ...] = ()
    variadic: str | None = None
    signature: str | None = None
    aliases: tuple[str, ...] = ()
    visible: bool = True
    default_timeout: float = 1.0
    answers: bool = True

    def parse_cli_arguments(self, words: Sequence[str]) -> dict[str, Any]:
        """See :func:`parse_cli_arguments`."""
        return _compile(self, words)


def _inspect(name: str, help: str, **kwargs: Any) -> Command:
    return Command(name, "inspect", help, **kwargs)


def _control(name: str, help: str, **kwargs: Any) -> Command:
    return Command(name, "control", help, **kwargs)


_BUILTINS: tuple[Command, ...] = (
    # -- inspect -------------------------------------------------------------------------------
    _inspect("active", "Tasks each worker is executing right now.", aliases=("dump_active",)),
    _inspect("active_queues", "Queues each worker consumes from."),
    _inspect("clock", "Each worker's Lamport clock value."),
    _inspect(
        "conf",
        "Each worker's configuration, secrets masked; `true` adds the defaults.",
        args=(("with_defaults", strtobool),),
        signature="[with_defaults=false]",
        aliases=("dump_conf",),
    ),
    _inspect("hello", "Mingle handshake between workers.", visible=False),
    _inspect(
        "memdump",
        "Memory usage recorded by earlier memsample calls.",
        args=(("samples", int),),
        signature="[samples=10]",
    ),
    _inspect("memsample", "Take a sample of each worker's resident memory (needs psutil)."),
    _inspect(
        "objgraph",
        "Render a graph of objects of one type, to hunt leaks (needs objgraph).",
        args=(("type", str), ("num", int), ("max_depth", int)),
        signature="[type=Request [num=200 [max_depth=10]]]",
        default_timeout=60.0,
    ),
    _inspect("ping", "Check which workers answer.", default_timeout=0.2),
    _inspect(
        "query_task",
        "State and details of the given task ids, where a worker knows them.",
        variadic="ids",
        signature="[task_id ...]",
    ),
    _inspect(
        "registered",
        "Task names each worker knows, optionally with the given task attributes.",
        variadic="taskinfoitems",
        signature="[attribute ...]",
        aliases=("dump_tasks",),
    ),
    _inspect("report", "Versions and settings of each worker, for bug reports."),
    _inspect(
        "reserved",
        "Tasks received and waiting to run (neither active nor scheduled).",
        aliases=("dump_reserved",),
    ),
    _inspect("revoked", "Task ids each worker holds as revoked.", aliases=("dump_revoked",)),
    _inspect("scheduled", "Tasks waiting for their ETA or countdown.", aliases=("dump_schedule",)),
    _inspect("stats", "Counters, pool, broker and resource usage of each worker."),
    # -- control -------------------------------------------------------------------------------
    _control(
        "add_consumer",
        "Start consuming from a queue (declared as needed).",
        args=(("queue", str), ("exchange", str), ("exchange_type", str), ("routing_key", str)),
        signature="<queue> [exchange [exchange_type [routing_key]]]",
    ),
    _control(
        "autoscale",
        "Set the autoscaler's maximum and minimum pool size.",
        args=(("max", int), ("min", int)),
        signature="[max [min]]",
    ),
    _control(
        "cancel_consumer",
        "Stop consuming from a queue.",
        args=(("queue", str),),
        signature="<queue>",
    ),
    _control("disable_events", "Switch task events off."),
    _control("election", "Start a leader election among workers (internal)."),
    _control("enable_events", "Switch task events on."),
    _control("heartbeat", "Emit a worker-heartbeat event now."),
    _control(
        "pool_grow",
        "Add processes or threads to the pool.",
        args=(("n", int),),
        signature="[n=1]",
    ),
    _control("pool_restart", "Restart the pool's processes (needs worker_pool_restarts)."),
    _control(
        "pool_shrink",
        "Remove processes or threads from the pool.",
        args=(("n", int),),
        signature="[n=1]",
    ),
    _control(
        "rate_limit",
        "Change how often a task type may start, e.g. 10/m (0 removes the limit).",
        args=(("task_name", str), ("rate_limit", str)),
        signature="<task_name> <rate, e.g. 10/s, 10/m, 10/h>",
    ),
    _control(
        "revoke",
        "Discard the given tasks when they arrive or before they start.",
        variadic="task_id",
        signature="[task_id ...]",
    ),
    _control(
        "revoke_by_stamped_headers",
        "Revoke tasks whose stamped headers match key=value.",
        variadic="headers",
        signature="[key=value ...]",
    ),
    _control("shutdown", "Stop workers (they do not answer).", answers=False),
    _control(
        "terminate",
        "Revoke tasks and send a signal to the processes running them.",
        args=(("signal", str),),
        variadic="task_id",
        signature="<signal> [task_id ...]",
    ),
    _control(
        "time_limit",
        "Change a task type's soft and hard time limits, in seconds.",
        args=(("task_name", str), ("soft", float), ("hard", float)),
        signature="<task_name> <soft_seconds> [hard_seconds]",
    ),
)

#: Every built-in command by name (aliases not included; see :func:`lookup`).
COMMANDS: Mapping[str, Command] = MappingProxyType({c.name: c for c in _BUILTINS})
_ALIASES: Mapping[str, str] = MappingProxyType(
    {alias: c.name for c in _BUILTINS for alias in c.aliases}
)


def lookup(name: str, catalogue: Mapping[str, Command] | None = None) -> Command:
    """The command called ``name`` or one of its aliases.

    Raises:
        UnknownCommandError: no such command.
    """
    table = COMMANDS if catalogue is None else catalogue
    command = table.get(name)
    if command is None:
        command = next((c for c in table.values() if name in c.aliases), None)
    if command is None:
        raise UnknownCommandError(name)
    return command


def commands_of_kind(
    kind: CommandKind, catalogue: Mapping[str, Command] | None = None
) -> dict[str, Command]:
    """The visible commands of one kind, sorted by name: what the CLI offers and lists."""
    table = COMMANDS if catalogue is None else catalogue
    return {
        name: table[name]
        for name in sorted(table)
        if table[name].kind == kind and table[name].visible
    }


def command_from_meta(name: str, meta: Any) -> Command:
    """A :class:`Command` from one entry of a worker registry (``Panel.meta[name]``).

    Used for custom commands an app registers with ``@inspect_command``/``@control_command``:
    the entry is read by attribute (``type``, ``visible``, ``args``, ``variadic``,
    ``signature``, ``alias``, ``help``, ``default_timeout``), nothing is imported.
    """
    kind = getattr(meta, "type", "control")
    alias = getattr(meta, "alias", None)
    help_text = (getattr(meta, "help", None) or "").strip().splitlines()
    return Command(
        name=name,
        kind="inspect" if kind == "inspect" else "control",
        help=help_text[0] if help_text else "",
        args=tuple(
            (str(arg), convert if convert is not None else str)
            for arg, convert in (getattr(meta, "args", None) or ())
        ),
        variadic=getattr(meta, "variadic", None) or None,
        signature=getattr(meta, "signature", None) or None,
        aliases=(alias,) if alias else (),
        visible=bool(getattr(meta, "visible", True)),
        default_timeout=float(getattr(meta, "default_timeout", None) or 1.0),
    )


def _compile(command: Command, words: Sequence[str]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    rest = list(words)
    if command.args:
        index = 0
        for index, word in enumerate(words):
            if index >= len(command.args):
                if command.variadic:
                    break
                raise ArgumentError(
                    f"Command {command.name!r} takes arguments: {command.signature or ''}".rstrip()
                )
            name, convert = command.args[index]
            try:
                arguments[name] = convert(word)
            except (TypeError, ValueError) as exc:
                raise ArgumentError(
                    f"Invalid value for {name!r} of command {command.name!r}: {exc}"
                ) from exc
        # Celery keeps the words from the last one it looked at: when every word was taken
        # by a typed argument, the last of them is also handed to the variadic argument
        # (`control terminate KILL` sends task_id ["KILL"]). Mirrored, so we send the same.
        rest = rest[index:]
    if command.variadic:
        arguments[command.variadic] = rest
    return arguments


def parse_cli_arguments(
    command: str | Command,
    words: Iterable[str],
    catalogue: Mapping[str, Command] | None = None,
) -> dict[str, Any]:
    """Turn ``celery inspect|control COMMAND WORDS...`` words into the wire arguments.

    Words fill the command's typed arguments in order; the rest go to its variadic argument as
    a list (always present for variadic commands, possibly empty). Commands without either
    ignore extra words; commands with typed arguments and no variadic refuse them. Examples::

        revoke a b            -> {"task_id": ["a", "b"]}
        terminate KILL a      -> {"signal": "KILL", "task_id": ["a"]}
        registered            -> {"taskinfoitems": []}
        conf true             -> {"with_defaults": True}
        time_limit t 10 20    -> {"task_name": "t", "soft": 10.0, "hard": 20.0}

    Raises:
        UnknownCommandError: ``command`` is not in the catalogue (aliases are accepted).
        ArgumentError: too many words, or a word the argument's converter refuses.
    """
    info = command if isinstance(command, Command) else lookup(command, catalogue)
    return _compile(info, list(words))

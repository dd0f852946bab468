"""``GET /api/tasks``: Flower 2.2's filters, search language and orderings, over the State.

The query language is Flower's (flower/utils/search.py): terms are AND-ed, ``OR`` and
parentheses group, ``"quoted phrases"`` keep spaces, ``field:value`` narrows a term to one of
``name state worker args kwargs result exception`` (``state`` exact, ``kwargs:key=value`` an exact
pair, the rest case-insensitive substrings of at least 3 characters); free terms match the
uuid and the exception too (the exception is ours: Flower does not search it). Flower keeps
an inverted index updated per event; here a query scans the State's tasks once (≈100k
dictionary reads), which keeps ingestion free of any indexing cost. With task history on, the
store answers the same query in SQL for the tasks no longer in memory.
"""

from __future__ import annotations

import datetime
import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiocelerymon.store import kwargs_pairs

__all__ = ["SORT_KEYS", "QuerySyntaxError", "TaskQuery", "parse_query", "parse_time"]

SORT_KEYS = frozenset({"name", "state", "received", "started"})
SEARCH_FIELDS = frozenset({"name", "state", "worker", "args", "kwargs", "result", "exception"})
MIN_SUBSTRING = 3
MAX_QUERY_LENGTH = 2048
MAX_TOKENS = 128
MAX_DEPTH = 5


class QuerySyntaxError(ValueError):
    def __init__(self, message: str, position: int | None = None) -> None:
        detail = message if position is None else f"{message} at position {position}"
        super().__init__(f"{detail}.")


# -- the query language -----------------------------------------------------------------------

Node = tuple[Any, ...]  # ("all",) | ("term", field, value) | ("and"|"or", children)


def _tokenize(raw: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    i, n = 0, len(raw)
    while i < n:
        if raw[i].isspace():
            i += 1
            continue
        start = i
        if raw[i] in "()":
            tokens.append(("LPAREN" if raw[i] == "(" else "RPAREN", raw[i], start))
            i += 1
        else:
            chars: list[str] = []
            quoted = in_quote = False
            while i < n:
                c = raw[i]
                if c == "\\" and i + 1 < n and raw[i + 1] in '"\\':
                    chars.append(raw[i + 1])
                    i += 2
                    continue
                if c == '"':
                    quoted, in_quote = True, not in_quote
                    i += 1
                    continue
                if not in_quote and (c.isspace() or c in "()"):
                    break
                chars.append(c)
                i += 1
            if in_quote:
                raise QuerySyntaxError("Unterminated quoted phrase", start)
            value = "".join(chars)
            if not value:
                raise QuerySyntaxError("Empty search term", start)
            if not quoted and value in ("AND", "OR"):
                tokens.append((value, value, start))
            elif not quoted and value == "NOT":
                raise QuerySyntaxError("NOT is not supported", start)
            else:
                tokens.append(("TERM", value, start))
        if len(tokens) > MAX_TOKENS:
            raise QuerySyntaxError(f"Query exceeds {MAX_TOKENS} tokens")
    tokens.append(("EOF", "", n))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]]) -> None:
        self.tokens = tokens
        self.i = 0

    @property
    def kind(self) -> str:
        return self.tokens[self.i][0]

    def parse(self) -> Node:
        if self.kind == "EOF":
            return ("all",)
        node = self.parse_or(0)
        if self.kind != "EOF":
            _, value, pos = self.tokens[self.i]
            raise QuerySyntaxError(f"Unexpected {value!r}", pos)
        return node

    def parse_or(self, depth: int) -> Node:
        children = [self.parse_and(depth)]
        while self.kind == "OR":
            pos = self.tokens[self.i][2]
            self.i += 1
            if self.kind in ("EOF", "RPAREN", "AND", "OR"):
                raise QuerySyntaxError("OR must be followed by a search term", pos)
            children.append(self.parse_and(depth))
        return children[0] if len(children) == 1 else ("or", tuple(children))

    def parse_and(self, depth: int) -> Node:
        children = [self.parse_primary(depth)]
        while self.kind not in ("EOF", "RPAREN", "OR"):
            if self.kind == "AND":
                pos = self.tokens[self.i][2]
                self.i += 1
                if self.kind in ("EOF", "RPAREN", "AND", "OR"):
                    raise QuerySyntaxError("AND must be followed by a search term", pos)
            children.append(self.parse_primary(depth))
        return children[0] if len(children) == 1 else ("and", tuple(children))

    def parse_primary(self, depth: int) -> Node:
        kind, value, pos = self.tokens[self.i]
        if kind == "LPAREN":
            if depth >= MAX_DEPTH:
                raise QuerySyntaxError(f"Query nesting exceeds {MAX_DEPTH} levels", pos)
            self.i += 1
            if self.kind == "RPAREN":
                raise QuerySyntaxError("Empty group", pos)
            node = self.parse_or(depth + 1)
            if self.kind != "RPAREN":
                raise QuerySyntaxError("Missing closing parenthesis", pos)
            self.i += 1
            return node
        if kind != "TERM":
            raise QuerySyntaxError("Expected a search term", pos)
        self.i += 1
        return _term(value, pos)


def _term(value: str, pos: int) -> Node:
    field: str | None = None
    if ":" in value:
        head, rest = value.split(":", 1)
        if head.casefold() in SEARCH_FIELDS:
            field, value = head.casefold(), rest
    if field is None and value.startswith("-"):
        raise QuerySyntaxError("Negation with '-' is not supported", pos)
    if not value:
        raise QuerySyntaxError("Search qualifier requires a value", pos)
    exact = field == "state" or (field == "kwargs" and "=" in value)
    if not exact and len(value.strip()) < MIN_SUBSTRING:
        raise QuerySyntaxError(
            f"Substring search terms must contain at least {MIN_SUBSTRING} characters", pos
        )
    return ("term", field, value.casefold())


@lru_cache(maxsize=256)
def parse_query(raw: str) -> Node:
    query = raw.strip()
    if len(query) > MAX_QUERY_LENGTH:
        raise QuerySyntaxError(f"Query exceeds {MAX_QUERY_LENGTH} characters")
    return _Parser(_tokenize(query)).parse()


def parse_time(value: str | None) -> float | None:
    """Flower's ``YYYY-MM-DD HH:MM`` in local time; ``ValueError`` otherwise."""
    if not value:
        return None
    return time.mktime(datetime.datetime.strptime(value, "%Y-%m-%d %H:%M").timetuple())


# -- matching ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").casefold()
    return str(value).casefold()


_kwargs_pairs = kwargs_pairs


def _worker_name(task: Any) -> Any:
    worker = task.worker
    return getattr(worker, "hostname", worker) or ""


def _field(task: Any, field: str) -> str:
    if field == "worker":
        return _text(_worker_name(task))
    return _text(getattr(task, field, None))


def _matches(node: Node, task: Any) -> bool:
    kind = node[0]
    if kind == "all":
        return True
    if kind == "and":
        return all(_matches(child, task) for child in node[1])
    if kind == "or":
        return any(_matches(child, task) for child in node[1])
    _, field, value = node
    if field == "state":
        return bool(_text(task.state) == value)
    if field == "kwargs" and "=" in value:
        key, _, item = value.partition("=")
        return f"{key.strip()}={item.strip()}" in _kwargs_pairs(task.kwargs)
    if field is None:
        return any(
            value in _text(v)
            for v in (task.uuid, task.name, task.state, _worker_name(task), task.args,
                      task.kwargs, task.result, task.exception)
        )  # fmt: skip
    return value in _field(task, field)


def _sort_key(task: Any, sort_by: str) -> tuple[Any, ...]:
    value = getattr(task, sort_by, None)
    if value is None:
        return (False, "", str(task.uuid))
    if sort_by in ("received", "started"):
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = 0.0
    else:
        value = _text(value)
    return (True, value, str(task.uuid))


@dataclass(frozen=True)
class TaskQuery:
    """One ``/api/tasks`` request's filters, parsed and checked."""

    limit: int | None = None
    offset: int = 0
    sort_by: str | None = None
    worker: str | None = None
    taskname: str | None = None
    state: str | None = None
    received_start: float | None = None
    received_end: float | None = None
    started_start: float | None = None
    started_end: float | None = None
    search: str = ""

    def __post_init__(self) -> None:
        if self.sort_by and self.sort_by.lstrip("-") not in SORT_KEYS:
            raise ValueError(
                f"Invalid sort_by '{self.sort_by}', expected one of {', '.join(sorted(SORT_KEYS))}"
            )
        parse_query(self.search)  # raises QuerySyntaxError

    def _filters(self) -> list[Callable[[Any], bool]]:
        checks: list[Callable[[Any], bool]] = []
        if self.taskname:
            name = self.taskname.casefold()
            checks.append(lambda t: _text(t.name) == name)
        if self.worker:
            worker = self.worker.casefold()
            checks.append(lambda t: _text(_worker_name(t)) == worker)
        if self.state:
            state = self.state.casefold()
            checks.append(lambda t: _text(t.state) == state)
        for attr, lo, hi in (
            ("received", self.received_start, self.received_end),
            ("started", self.started_start, self.started_end),
        ):
            if lo is not None or hi is not None:
                checks.append(_in_range(attr, lo, hi))
        node = parse_query(self.search)
        if node[0] != "all":
            checks.append(lambda t: _matches(node, t))
        return checks

    def run(self, tasks: Iterable[Any]) -> list[Any]:
        """The page of matching tasks, ordered as Flower orders them."""
        return self.page(self.matching(tasks))

    def matching(self, tasks: Iterable[Any]) -> list[Any]:
        """Every task that passes the filters and the search, unordered."""
        checks = self._filters()
        if not checks:
            return list(tasks)
        if len(checks) == 1:
            return list(filter(checks[0], tasks))
        return [t for t in tasks if all(check(t) for check in checks)]

    def page(self, selected: list[Any]) -> list[Any]:
        """The requested page of already ``matching`` tasks, in Flower's order."""
        sort_by, descending = self.sort_by, False
        if sort_by:
            descending = sort_by.startswith("-")
            sort_by = sort_by.lstrip("-")
            field = sort_by

            def key(t: Any) -> tuple[Any, ...]:
                return _sort_key(t, field)
        else:
            descending = True  # newest first, by the last event's timestamp

            def key(t: Any) -> tuple[Any, ...]:
                return (t.timestamp or 0, str(t.uuid))

        offset = max(self.offset, 0)
        end = None if self.limit is None else offset + max(self.limit, 0)
        if end is not None and end < len(selected):
            pick = heapq.nlargest if descending else heapq.nsmallest
            ordered = pick(end, selected, key=key)
        else:
            ordered = sorted(selected, key=key, reverse=descending)
        return ordered[offset:end]


def _in_range(attr: str, lo: float | None, hi: float | None) -> Callable[[Any], bool]:
    # As Flower: a task without the timestamp is kept (it may simply not have got there yet).
    def check(task: Any) -> bool:
        value = getattr(task, attr, None)
        if value is None:
            return True
        try:
            value = float(value)
        except (TypeError, ValueError):
            return True
        return (lo is None or value >= lo) and (hi is None or value <= hi)

    return check

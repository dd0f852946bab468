"""What every result backend reader shares: settings, the record, JSON-only decoding."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

import orjson

from aiocelerymon.exceptions import AiocelerymonError, ConfigurationError, DecodeError

#: celery.states.READY_STATES; PROPAGATE_STATES are the ones ``AsyncResult.get()`` raises for.
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
PROPAGATE_STATES = frozenset({"FAILURE", "REVOKED"})

#: How to store JSON instead (shown whenever a pickled value is refused).
JSON_HINT = (
    "aiocelerymon never unpickles (a pickle can run any code). Store results as JSON: "
    "result_serializer='json' and result_accept_content=['json'] on the workers "
    "(the default since Celery 4); Celery's database backend before 5.7 pickles every result "
    "whatever result_serializer says (a PickleType column), so use Celery >= 5.7 or the "
    "Redis backend there"
)


class ResultBackendError(AiocelerymonError):
    """The result backend cannot be read (unreachable, unsupported or misconfigured)."""


class PickledResultError(ResultBackendError, DecodeError):
    """A stored value is a pickle: refused, never unpickled."""


@dataclass(frozen=True)
class ResultSettings:
    """Celery's result settings, by their names (``app.conf`` can be passed through)."""

    result_backend: str | None = None
    result_backend_transport_options: Mapping[str, Any] = field(default_factory=dict)
    #: ``{"task": ..., "group": ...}`` table names of the database backend.
    database_table_names: Mapping[str, str] = field(default_factory=dict)
    database_table_schemas: Mapping[str, str] = field(default_factory=dict)
    connect_timeout: float = 4.0

    @classmethod
    def from_conf(cls, conf: Any, **overrides: Any) -> ResultSettings:
        """From a Celery app's ``conf`` (``result_backend`` honours CELERY_RESULT_BACKEND)."""
        values: dict[str, Any] = {
            # A property on Celery's Settings: CELERY_RESULT_BACKEND first, then the config.
            "result_backend": getattr(conf, "result_backend", None) or None,
            "result_backend_transport_options": conf.get("result_backend_transport_options") or {},
            "database_table_names": conf.get("database_table_names") or {},
            "database_table_schemas": conf.get("database_table_schemas") or {},
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class TaskResult:
    """One task's stored state, as Celery's ``AsyncResult`` sees it (PENDING when unknown)."""

    task_id: str
    status: str = "PENDING"
    #: The return value; for FAILURE/REVOKED Celery's exception dict
    #: (``exc_type``, ``exc_message``, ``exc_module``).
    result: Any = None
    traceback: str | None = None
    date_done: str | None = None
    children: list[Any] | None = None
    #: ``result_extended`` fields, None when the workers do not store them.
    name: str | None = None
    args: Any = None
    kwargs: Any = None
    worker: str | None = None
    retries: int | None = None
    queue: str | None = None
    #: Why ``result`` is None although a value is stored: it is pickled (never unpickled).
    refused: str | None = None

    @property
    def value(self) -> Any:
        """``result``, or :class:`PickledResultError` when the stored value was refused."""
        if self.refused is not None:
            raise PickledResultError(self.refused)
        return self.result

    @property
    def ready(self) -> bool:
        """Celery's ``AsyncResult.ready()``."""
        return self.status in READY_STATES

    @property
    def failed(self) -> bool:
        """True for the states ``AsyncResult.get()`` raises for (FAILURE, REVOKED)."""
        return self.status in PROPAGATE_STATES

    def to_dict(self) -> dict[str, Any]:
        """The record with Celery's meta keys (``task_id``, ``status``, ``result``, ...)."""
        return {
            "task_id": self.task_id,
            "status": self.status,
            "result": self.result,
            "traceback": self.traceback,
            "children": self.children,
            "date_done": self.date_done,
            "name": self.name,
            "args": self.args,
            "kwargs": self.kwargs,
            "worker": self.worker,
            "retries": self.retries,
            "queue": self.queue,
            **({"refused": self.refused} if self.refused is not None else {}),
        }

    @classmethod
    def from_meta(cls, task_id: str, meta: Mapping[str, Any]) -> TaskResult:
        """From Celery's meta dict (the Redis backend's value)."""
        children = meta.get("children")
        return cls(
            task_id=str(meta.get("task_id") or task_id),
            status=str(meta.get("status") or "PENDING"),
            result=meta.get("result"),
            traceback=_text(meta.get("traceback")),
            date_done=iso_date(meta.get("date_done")),
            children=list(children) if isinstance(children, list) else None,
            name=_text(meta.get("name")),
            args=meta.get("args"),
            kwargs=meta.get("kwargs"),
            worker=_text(meta.get("worker")),
            retries=meta.get("retries") if isinstance(meta.get("retries"), int) else None,
            queue=_text(meta.get("queue")),
        )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def iso_date(value: Any) -> str | None:
    """``date_done`` as ISO 8601 text, whichever form the backend stored."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def decode_json(payload: bytes | str | None, what: str) -> Any:
    """Decode one stored value; JSON only.

    Raises:
        PickledResultError: the value is a pickle (protocol 2+ starts with 0x80).
        DecodeError: anything else that is not JSON (msgpack, yaml, ...).
    """
    if payload is None:
        return None
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    if raw[:1] == b"\x80":
        raise PickledResultError(f"{what} is pickled. {JSON_HINT}.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise DecodeError(
            f"{what} is not JSON (result_serializer must be 'json'; msgpack and yaml are not read)"
        ) from None


class ResultBackend(Protocol):
    """One result backend reader (an adapter: its driver stays inside it)."""

    async def get(self, task_id: str) -> TaskResult:
        """The stored state of ``task_id`` (PENDING when nothing is stored)."""
        ...

    async def aclose(self) -> None:
        """Close the connection, if any."""
        ...


#: URL scheme -> adapter module (imported on first use, so its driver is only needed then).
_ADAPTERS = {
    "redis": "aiocelerymon.results.redis",
    "rediss": "aiocelerymon.results.redis",
    "redis+socket": "aiocelerymon.results.redis",
    "db+sqlite": "aiocelerymon.results.database",
    "db+postgresql": "aiocelerymon.results.database",
    "db+postgres": "aiocelerymon.results.database",
}
#: Celery backends that store nothing we can read later.
_UNREADABLE = {
    "rpc": "the rpc:// backend sends results to the caller's reply queue and stores nothing",
    "disabled": "results are disabled",
}


def _scheme(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme.startswith("db+"):
        # db+postgresql+psycopg2://: SQLAlchemy's dialect+driver; we bring our own driver.
        dialect = scheme[3:].split("+", 1)[0]
        return f"db+{dialect}"
    return scheme


def open_backend(settings: ResultSettings) -> ResultBackend:
    """The reader for ``settings.result_backend`` (nothing is connected yet).

    Raises:
        ConfigurationError: no backend configured, or one we cannot read.
        ResultBackendError: the adapter's driver is not installed.
    """
    url = settings.result_backend
    if not url:
        raise ConfigurationError(
            "no result backend is configured (the app's result_backend, --result-backend or "
            "CELERY_RESULT_BACKEND)"
        )
    scheme = _scheme(url)
    if scheme in _UNREADABLE:
        raise ConfigurationError(f"cannot read results from {scheme}://: {_UNREADABLE[scheme]}")
    module_name = _ADAPTERS.get(scheme)
    if module_name is None:
        raise ConfigurationError(
            f"unsupported result backend {scheme!r}; aiocelerymon reads redis://, rediss://, "
            "redis+socket://, db+sqlite:// and db+postgresql://"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = "redis" if scheme.startswith("redis") else scheme.removeprefix("db+")
        raise ResultBackendError(
            f"reading {scheme}:// results needs {exc.name or 'its driver'}: "
            f"pip install 'aiocelerymon[{extra}]'"
        ) from exc
    backend: ResultBackend = module.open_backend(settings)
    return backend


class Results:
    """``client.results``: read task results from the configured result backend."""

    def __init__(self, settings: ResultSettings) -> None:
        self.settings = settings
        self._backend: ResultBackend | None = None

    @property
    def configured(self) -> bool:
        """True when a result backend URL is set."""
        return bool(self.settings.result_backend)

    async def get(self, task_id: str) -> TaskResult:
        """The stored state of ``task_id``; PENDING when nothing is stored (as in Celery).

        A pickled result is not read: the record's ``refused`` says why and ``value`` raises
        :class:`PickledResultError`; the other columns are still there when the backend keeps
        them apart (the database backend's ``status``, ``traceback``, ``date_done``).

        Raises:
            ConfigurationError: no readable backend configured.
            PickledResultError: the whole record is a pickle (Redis, result_serializer=pickle).
            ResultBackendError: the backend could not be reached or read.
        """
        if not task_id:
            raise ValueError("task_id must not be empty")
        if self._backend is None:
            self._backend = open_backend(self.settings)
        return await self._backend.get(task_id)

    async def aclose(self) -> None:
        """Close the backend connection (``get`` reconnects)."""
        backend, self._backend = self._backend, None
        if backend is not None:
            await backend.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

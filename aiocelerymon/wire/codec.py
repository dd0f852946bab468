"""Content types: JSON on orjson, a registry for more, and a hard refusal of pickle.

kombu's JSON is stdlib ``json`` with ``", "``/``": "`` separators; kombu parses compact JSON just
the same, so orjson's output is accepted byte-for-byte by every Celery 5 worker. Decoding never
runs pickle: ``application/x-python-serialize`` cannot even be registered.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from aiocelerymon.exceptions import ConfigurationError, ContentTypeRefusedError, DecodeError

__all__ = [
    "DEFAULT_ACCEPT",
    "JSON",
    "Serializer",
    "decode",
    "dumps",
    "encode",
    "loads",
    "normalize_accept",
    "register",
    "resolve",
]

JSON = "application/json"
_PICKLE = "application/x-python-serialize"
#: What a codec name looks like (every stdlib codec name and alias matches).
_ENCODING_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")

#: Celery's short names for content types (kombu.serialization registry names).
_ALIASES: dict[str, str] = {
    "json": JSON,
    "pickle": _PICKLE,
    "msgpack": "application/x-msgpack",
    "yaml": "application/x-yaml",
}


def _default(obj: Any) -> Any:
    # kombu's JSON encoder writes these as plain values too (sets only via Celery's result repr).
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """JSON-encode to UTF-8 bytes (non-string dict keys allowed, as with stdlib json)."""
    return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS)


def loads(data: bytes | str) -> Any:
    """Parse JSON; any failure is a :class:`DecodeError`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # kombu writes with stdlib json, which emits NaN/Infinity (e.g. `inspect conf true`
        # shows result_backend_max_retries=inf); orjson refuses them, stdlib reads them.
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            # RecursionError: orjson stops at 1024 levels of nesting; the stdlib then
            # recurses until Python's limit (~2 KB of "[[[...").
            raise DecodeError(f"invalid JSON body: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Serializer:
    """One registered content type."""

    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


_REGISTRY: dict[str, Serializer] = {JSON: Serializer(JSON, "utf-8", dumps, loads)}

#: What Celery accepts by default (``accept_content = ['json']``).
DEFAULT_ACCEPT: frozenset[str] = frozenset({JSON})


def resolve(name: str) -> str:
    """Map a short name (``json``) or a content type to the content type."""
    return _ALIASES.get(name, name)


def register(
    name: str,
    content_type: str,
    dumps: Callable[[Any], bytes],
    loads: Callable[[bytes], Any],
    content_encoding: str = "binary",
) -> None:
    """Register another serializer (e.g. msgpack). Pickle is refused."""
    if content_type == _PICKLE or name == "pickle":
        raise ConfigurationError("pickle is never deserialized by aiocelerymon")
    _ALIASES[name] = content_type
    _REGISTRY[content_type] = Serializer(content_type, content_encoding, dumps, loads)


def normalize_accept(accept: Iterable[str] | None) -> frozenset[str]:
    """Turn Celery's ``accept_content`` list into content types, refusing pickle and unknowns."""
    if accept is None:
        return DEFAULT_ACCEPT
    types = frozenset(resolve(name) for name in accept)
    if _PICKLE in types:
        raise ConfigurationError("pickle in accept_content: aiocelerymon never deserializes pickle")
    unknown = sorted(types - _REGISTRY.keys())
    if unknown:
        raise ConfigurationError(f"no serializer registered for {unknown!r}")
    return types


def encode(obj: Any, serializer: str = "json") -> tuple[bytes, str, str]:
    """Serialize ``obj``; returns ``(body, content_type, content_encoding)``."""
    content_type = resolve(serializer)
    try:
        ser = _REGISTRY[content_type]
    except KeyError:
        raise ConfigurationError(f"no serializer registered for {serializer!r}") from None
    return ser.dumps(obj), ser.content_type, ser.content_encoding


def decode(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None,
    accept: frozenset[str] = DEFAULT_ACCEPT,
) -> Any:
    """Deserialize a body that arrived with ``content_type``/``content_encoding``.

    Raises:
        ContentTypeRefusedError: the type is missing from ``accept`` (pickle always is).
        DecodeError: no content type, an unknown text encoding, or a malformed body.
    """
    if not content_type:
        # kombu hands such bodies over as raw bytes, which Celery then fails to dispatch.
        raise DecodeError("message has no content type")
    if content_type not in accept or content_type not in _REGISTRY:
        raise ContentTypeRefusedError(content_type, accept)
    ser = _REGISTRY[content_type]
    if content_encoding and content_encoding not in ("utf-8", "utf8", "binary"):
        if not _ENCODING_NAME.fullmatch(content_encoding):
            # Checked before codecs.lookup, whose cache keeps every name it is asked for:
            # arbitrary names from the wire would grow it without bound.
            raise DecodeError(f"unsupported content encoding {content_encoding!r:.60}")
        try:
            body = body.decode(codecs.lookup(content_encoding).name).encode("utf-8")
        except (LookupError, ValueError) as exc:
            # ValueError: every UnicodeError (punycode raises the bare base class), including
            # re-encoding a lone surrogate that raw_unicode_escape produced.
            raise DecodeError(f"cannot decode body as {content_encoding!r}: {exc}") from exc
    return ser.loads(body)

"""Request arguments read the way Flower's (Tornado's ``get_argument``) are, and JSON out."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

T = TypeVar("T")

#: Flower's ``strtobool`` (flower/utils/__init__.py), itself distutils' rule.
_TRUE = frozenset({"y", "yes", "t", "true", "on", "1"})
_FALSE = frozenset({"n", "no", "f", "false", "off", "0"})
#: Form bodies above this are refused (a control request carries a few short fields).
MAX_FORM_BYTES = 64 * 1024


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)  # Flower's safe_result: what JSON cannot carry is shown as its repr


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


class JSON(Response):
    """A JSON response through orjson; non-JSON values become their ``repr``."""

    media_type = "application/json; charset=UTF-8"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error(status: int, message: str) -> HTTPException:
    """Flower's ``HTTPError(status, message)``: the message as text/plain."""
    return HTTPException(status, message)


def strtobool(value: str) -> bool:
    folded = value.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(f"invalid truth value {value!r}")


class Arguments:
    """Query and (url-encoded) form arguments; the last value of a repeated name wins."""

    def __init__(self, request: Request, form: list[tuple[str, str]] | None = None) -> None:
        self.values: dict[str, list[str]] = {}
        for key, value in [*request.query_params.multi_items(), *(form or ())]:
            self.values.setdefault(key, []).append(value)

    @classmethod
    async def read(cls, request: Request) -> Arguments:
        """With the body's form fields too, as Tornado merges them for POST."""
        form: list[tuple[str, str]] = []
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.method == "POST" and ctype == "application/x-www-form-urlencoded":
            body = await request.body()
            if len(body) > MAX_FORM_BYTES:
                raise error(413, "Request body too large")
            try:
                form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            except (UnicodeDecodeError, ValueError) as exc:
                raise error(400, f"Invalid form body: {exc}") from exc
        return cls(request, form)

    def get(self, name: str) -> str | None:
        found = self.values.get(name)
        return found[-1].strip() if found else None

    def all(self, name: str) -> list[str]:
        """Every value of ``name``, comma-separated ones split (``?state=A,B&state=C``)."""
        return [p.strip() for v in self.values.get(name, ()) for p in v.split(",") if p.strip()]

    def typed(
        self, name: str, kind: Callable[[str], T], default: T, *, required: bool = False
    ) -> T:
        raw = self.get(name)
        if raw is None or raw == "":
            if required:
                raise error(400, f"Missing argument {name}")
            return default
        try:
            return strtobool(raw) if kind is bool else kind(raw)  # type: ignore[return-value]
        except (TypeError, ValueError, OverflowError) as exc:
            name_ = getattr(kind, "__name__", "value")
            raise error(400, f"Invalid argument '{raw}' of type '{name_}'") from exc

    def flag(self, name: str) -> bool:
        return self.typed(name, bool, False)

    def integer(self, name: str, default: int | None = None, *, required: bool = False) -> Any:
        value = self.typed(name, int, default, required=required)
        if value is not None and not -(2**63) <= value < 2**63:
            raise error(400, f"Invalid argument '{value}' of type 'int'")
        return value

    def number(self, name: str, default: float | None = None) -> float | None:
        value = self.typed(name, float, default)
        if value is not None and not math.isfinite(value):
            raise error(400, f"Invalid argument '{value}' of type 'float'")
        return value

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        return self.typed(name, str, default, required=required)

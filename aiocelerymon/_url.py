"""Broker URLs as Celery accepts them, with passwords kept out of every repr."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from aiocelerymon.exceptions import ConfigurationError

__all__ = ["BrokerURL", "TransportName", "parse_url"]

TransportName = Literal["amqp", "redis", "memory"]

#: Scheme -> (adapter, TLS, default port). ``pyamqp``/``librabbitmq`` are kombu aliases of amqp.
_SCHEMES: dict[str, tuple[TransportName, bool, int | None]] = {
    "amqp": ("amqp", False, 5672),
    "pyamqp": ("amqp", False, 5672),
    "librabbitmq": ("amqp", False, 5672),
    "amqps": ("amqp", True, 5671),
    "pyamqps": ("amqp", True, 5671),
    "redis": ("redis", False, 6379),
    "rediss": ("redis", True, 6379),
    "redis+socket": ("redis", False, None),
    "memory": ("memory", False, None),
}


@dataclass(frozen=True, slots=True)
class BrokerURL:
    """A parsed broker URL. ``str()`` and ``repr()`` never show the password."""

    scheme: str
    transport: TransportName
    hostname: str
    port: int | None
    username: str | None
    password: str | None = field(repr=False)
    path: str
    query: dict[str, str]
    ssl: bool

    @property
    def virtual_host(self) -> str:
        """AMQP vhost: the path without its leading slash, ``/`` when empty (kombu's rule)."""
        return unquote(self.path) or "/"

    @property
    def db(self) -> int:
        """Redis db from the path (``/3``) or ``?virtual_host=3`` (redis+socket), else 0."""
        raw = self.path or self.query.get("virtual_host", "") or self.query.get("db", "")
        raw = raw.strip("/")
        if not raw:
            return 0
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"Redis db must be an integer, got {raw!r}") from None

    @property
    def socket_path(self) -> str | None:
        """The Unix socket path of a ``redis+socket://`` URL."""
        return self.hostname if self.scheme == "redis+socket" else None

    def redacted(self) -> str:
        """The URL with the password replaced by ``**`` (as kombu's ``maybe_sanitize_url``)."""
        return self._render(None if self.password is None else "**")

    def unredacted(self) -> str:
        """The full URL, password included. Never log this."""
        return self._render(self.password)

    def _render(self, password: str | None) -> str:
        auth = ""
        if self.username is not None or password is not None:
            auth = quote(self.username or "", safe="")
            if password is not None:
                auth += ":" + (password if password == "**" else quote(password, safe=""))
            auth += "@"
        if self.scheme == "redis+socket":
            netloc, path = auth, self.hostname
        else:
            host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
            netloc = auth + host + (f":{self.port}" if self.port is not None else "")
            path = "/" + self.path
        query = "&".join(f"{k}={v}" for k, v in self.query.items())
        return f"{self.scheme}://{netloc}{path}" + (f"?{query}" if query else "")

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"BrokerURL({self.redacted()!r})"


def parse_url(url: str | BrokerURL) -> BrokerURL:
    """Parse a Celery broker URL (``amqp://``, ``redis://``, ``memory://``, ...).

    Raises:
        ConfigurationError: unknown scheme, several failover URLs, or a malformed port/db.
    """
    if isinstance(url, BrokerURL):
        return url
    if ";" in url:
        # Celery's failover lists are not supported yet; refusing beats silently using one.
        raise ConfigurationError("failover broker lists (';'-separated URLs) are not supported")
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise ConfigurationError(
            f"unsupported broker URL scheme {scheme!r}; expected one of {sorted(_SCHEMES)}"
        )
    scheme = scheme.lower()
    transport, ssl, default_port = _SCHEMES[scheme]
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if scheme == "redis+socket":
        # kombu accepts credentials here too: redis+socket://[user]:password@/path/to.sock
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        return BrokerURL(scheme, transport, parts.path, None, username, password, "", query, False)
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError("invalid port in broker URL") from None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return BrokerURL(
        scheme=scheme,
        transport=transport,
        hostname=parts.hostname or ("" if transport == "memory" else "localhost"),
        port=port if port is not None else (default_port if transport != "memory" else None),
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        path=path,
        query=query,
        ssl=ssl or query.get("ssl", "").lower() in ("1", "true", "yes"),
    )

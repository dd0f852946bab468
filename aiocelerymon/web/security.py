"""Secure by default: who may read, who may control, and what a browser may do for them.

:class:`SecurityMiddleware` is a pure ASGI middleware that knows nothing of the routes: the rule
is by method and path, relative to the URL prefix.

* ``GET``/``HEAD``/``OPTIONS`` and WebSocket upgrades need the role *viewer* or above;
  ``POST``/``PUT``/``PATCH``/``DELETE`` need *operator*, and are refused to all with ``read_only``.
* Public, whatever the auth: ``/healthcheck``, ``/login``, ``/logout``, ``/login.css`` (the
  middleware serves these three), anything under ``/static/``, and ``/metrics`` with
  ``metrics_public``. Only safe methods are public; anything else needs its role as usual.
* Credentials: HTTP Basic (``--basic-auth``, ``--auth-file``), bearer tokens (``--api-token``,
  ``--api-token-file``), or the session cookie of the login form. A request with an
  ``Authorization`` header is judged by that header alone.
* A cookie-authenticated unsafe request must carry the session's CSRF token in the
  ``X-CSRF-Token`` header (the page reads it from ``GET {prefix}/auth/session`` or from the
  ``aiocelerymon_csrf`` cookie). Any unsafe request or WebSocket whose ``Origin`` is another site
  (and not a ``--cors-origin``) is refused: browsers replay Basic credentials by themselves.
* With no credentials configured, everyone is an anonymous *operator*: the server is bound to
  loopback then (:func:`check_bind`), and the ``Host`` header must name loopback too, so a web
  page cannot reach it by DNS rebinding (unless ``--insecure-no-auth``).
* Failed authentications are slowed down (an exponential ``asyncio`` sleep on the failing request,
  per client address and per user) and answered 429 past ``failure_limit`` in ``failure_window``.
* Every response gets a CSP without inline script, frame denial, ``no-referrer`` and ``nosniff``;
  CORS headers only for the configured origins. ``X-Forwarded-For/Proto/Host/Prefix`` are honoured
  only from ``forwarded_allow_ips`` and removed otherwise.

On success ``scope["user"]`` is a :class:`Principal` (Starlette's ``request.user``) and
``scope["auth"]`` carries its scopes (``request.auth.scopes``).

Credentials files (``--auth-file``, ``--api-token-file``) hold one ``NAME:ROLE:HASH`` per line;
``#`` starts a comment. HASH is made by ``python -m aiocelerymon.web.passwords``::

    alice:operator:scrypt$16384$8$1$<salt>$<hash>
    bob:viewer:pbkdf2_sha256$600000$<salt>$<hash>
    ci-bot:operator:sha256$<64 hex digits>          # an API token (either file)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import enum
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import math
import os
import secrets
import stat
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

import anyio
import anyio.to_thread

from aiocelerymon.exceptions import ConfigurationError
from aiocelerymon.web import passwords

__all__ = [
    "ANONYMOUS",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "ApiToken",
    "FailureLimiter",
    "Grant",
    "InsecureBindError",
    "PasswordUser",
    "Principal",
    "Role",
    "SecurityMiddleware",
    "SecuritySettings",
    "add_security_options",
    "check_bind",
    "is_loopback",
    "load_credentials",
    "parse_api_token",
    "parse_basic_auth",
    "security_settings_from_args",
    "uvicorn_options",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("aiocelerymon.web.security")

SESSION_COOKIE: Final = "aiocelerymon_session"
CSRF_COOKIE: Final = "aiocelerymon_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FORM_FIELD: Final = "csrf_token"
REALM: Final = "aiocelerymon"

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths the middleware answers itself, relative to the URL prefix.
LOGIN_PATH, LOGOUT_PATH, LOGIN_CSS_PATH, SESSION_PATH = (
    "/login",
    "/logout",
    "/login.css",
    "/auth/session",
)
PUBLIC_PATHS = frozenset({"/healthcheck", LOGIN_PATH, LOGOUT_PATH, LOGIN_CSS_PATH})
STATIC_PREFIX = "/static/"
METRICS_PATH = "/metrics"
MAX_FORM_BYTES = 16 * 1024
MIN_TOKEN_LENGTH = 16
MIN_COOKIE_SECRET_LENGTH = 16

# No inline script or style anywhere; WebSockets to the same origin are 'self' (CSP level 3).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

_ENV_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_ENV_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


class InsecureBindError(ConfigurationError):
    """``serve`` was asked to listen beyond loopback with no authentication configured."""


# ------------------------------------------------------------------------------------------
# Who


class Role(enum.IntEnum):
    """What a principal may do; each role may do everything the lower ones may."""

    NONE = 0
    VIEWER = 1
    OPERATOR = 2

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``viewer`` or ``operator`` (any case).

        Raises:
            ConfigurationError: anything else.
        """
        folded = text.strip().lower()
        if folded in ("viewer", "operator"):
            return cls[folded.upper()]
        raise ConfigurationError(f"unknown role {text!r}; expected viewer or operator")


@dataclass(frozen=True, slots=True)
class Principal:
    """The one a request acts for: Starlette's ``request.user``.

    ``scheme`` says how it was authenticated: ``basic``, ``token``, ``session``, or ``none``.
    """

    name: str
    role: Role
    scheme: str = "none"

    @property
    def is_authenticated(self) -> bool:
        return self.scheme != "none"

    @property
    def display_name(self) -> str:
        return self.name

    @property
    def can_control(self) -> bool:
        return self.role >= Role.OPERATOR


@dataclass(frozen=True, slots=True)
class Grant:
    """Starlette's ``request.auth``: ``scopes`` such as ``("authenticated", "viewer")``."""

    scopes: tuple[str, ...]


#: Everyone, when no credentials are configured (loopback only, or ``--insecure-no-auth``).
ANONYMOUS: Final = Principal("anonymous", Role.OPERATOR, "none")
#: A caller of a public path when credentials are configured.
_UNAUTHENTICATED: Final = Principal("anonymous", Role.NONE, "none")


def _grant(principal: Principal) -> Grant:
    scopes = ["authenticated"] if principal.is_authenticated else []
    scopes += [str(role) for role in (Role.VIEWER, Role.OPERATOR) if principal.role >= role]
    return Grant(tuple(scopes))


# ------------------------------------------------------------------------------------------
# Credentials (their reprs never show a secret or a hash)


def _check_name(name: str, what: str) -> str:
    if not name or ":" in name or name != name.strip() or not name.isprintable():
        raise ConfigurationError(f"{what} must be non-empty, printable, without ':' or spaces")
    return name


class PasswordUser:
    """A user who logs in with a password (HTTP Basic or the login form)."""

    __slots__ = ("_digest", "_encoded", "name", "role")

    def __init__(
        self, name: str, role: Role, *, digest: bytes | None = None, encoded: str | None = None
    ) -> None:
        self.name = _check_name(name, "a user name")
        self.role = role
        self._digest = digest
        self._encoded = encoded

    @classmethod
    def plain(cls, name: str, password: str, role: Role = Role.OPERATOR) -> PasswordUser:
        """From a clear-text password (``--basic-auth``); only its SHA-256 is kept."""
        if not password:
            raise ConfigurationError(f"user {name!r}: an empty password is refused")
        return cls(name, role, digest=_sha256(password))

    @classmethod
    def hashed(cls, name: str, encoded: str, role: Role) -> PasswordUser:
        """From an encoded hash of :mod:`aiocelerymon.web.passwords` (a credentials file)."""
        passwords.check_password_hash(encoded)
        return cls(name, role, encoded=encoded)

    @property
    def slow(self) -> bool:
        """Whether :meth:`verify` runs a deliberately slow hash (call it in a thread)."""
        return self._encoded is not None

    def verify(self, password: str) -> bool:
        """Whether ``password`` is this user's (constant time)."""
        if self._encoded is not None:
            return passwords.verify_password(password, self._encoded)
        assert self._digest is not None
        return hmac.compare_digest(_sha256(password), self._digest)

    def fingerprint(self, key: bytes) -> str:
        """Changes when the password or role changes: sessions of the old one end."""
        material = self._digest if self._digest is not None else str(self._encoded).encode()
        mac = hmac.new(
            key, b"user\0" + self.name.encode() + b"\0" + str(self.role).encode(), "sha256"
        )
        mac.update(b"\0" + material)
        return mac.hexdigest()[:24]

    def __repr__(self) -> str:
        return f"PasswordUser(name={self.name!r}, role={str(self.role)!r})"


class ApiToken:
    """A bearer token (``Authorization: Bearer …``); only its SHA-256 is kept."""

    __slots__ = ("digest", "name", "role")

    def __init__(self, name: str, role: Role, digest: bytes) -> None:
        self.name = _check_name(name, "a token name")
        self.role = role
        self.digest = digest

    @classmethod
    def plain(cls, token: str, role: Role = Role.OPERATOR, name: str | None = None) -> ApiToken:
        """From the token itself (``--api-token``); named ``token-<8 hex of its hash>``."""
        if len(token) < MIN_TOKEN_LENGTH or not token.isprintable() or " " in token:
            raise ConfigurationError(
                f"an API token must be at least {MIN_TOKEN_LENGTH} printable characters without"
                " spaces (python -m aiocelerymon.web.passwords NAME --token makes one)"
            )
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        return cls(name or f"token-{digest.hex()[:8]}", role, digest)

    @classmethod
    def hashed(cls, name: str, encoded: str, role: Role) -> ApiToken:
        """From ``sha256$HEX`` (a credentials file)."""
        return cls(name, role, passwords.check_token_hash(encoded))

    def __repr__(self) -> str:
        return f"ApiToken(name={self.name!r}, role={str(self.role)!r})"


def _sha256(text: str) -> bytes:
    return hashlib.sha256(b"aiocelerymon-basic\0" + text.encode("utf-8", "surrogatepass")).digest()


def load_credentials(
    path: str | os.PathLike[str], *, tokens_only: bool = False
) -> tuple[list[PasswordUser], list[ApiToken]]:
    """Read a credentials file (``NAME:ROLE:HASH`` lines; see the module docstring).

    Raises:
        ConfigurationError: unreadable, or a bad line (named by number; a hash is never quoted).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read credentials file {str(file)!r}: {exc}") from exc
    if mode & stat.S_IROTH:
        logger.warning("credentials file %s is readable by every local user", file)
    users: list[PasswordUser] = []
    tokens: list[ApiToken] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{file}:{number}"
        fields = line.split(":")
        if len(fields) != 3:
            raise ConfigurationError(f"{where}: expected NAME:ROLE:HASH")
        name, role_text, encoded = (part.strip() for part in fields)
        try:
            role = Role.parse(role_text)
            if encoded.startswith("sha256$"):
                tokens.append(ApiToken.hashed(name, encoded, role))
            elif tokens_only:
                raise ConfigurationError("an API token file holds sha256$ token hashes only")
            else:
                users.append(PasswordUser.hashed(name, encoded, role))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    return users, tokens


def _split_role(value: str) -> tuple[str, Role | None]:
    head, sep, tail = value.rpartition(":")
    if sep and tail.strip().lower() in ("viewer", "operator"):
        return head, Role.parse(tail)
    return value, None


def parse_basic_auth(value: str, default_role: Role = Role.OPERATOR) -> PasswordUser:
    """``USER:PASS`` or ``USER:PASS:ROLE`` (``--basic-auth``); the error never quotes it."""
    rest, role = _split_role(value)
    name, sep, password = rest.partition(":")
    if not sep or not name or not password:
        raise ConfigurationError("--basic-auth expects USER:PASSWORD or USER:PASSWORD:ROLE")
    return PasswordUser.plain(name, password, role or default_role)


def parse_api_token(value: str, default_role: Role = Role.OPERATOR) -> ApiToken:
    """``TOKEN`` or ``TOKEN:ROLE`` (``--api-token``); the error never quotes it."""
    token, role = _split_role(value)
    return ApiToken.plain(token, role or default_role)


# ------------------------------------------------------------------------------------------
# Settings


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip().strip("/")
    return f"/{prefix}" if prefix else ""


def _normalise_origin(origin: str) -> str:
    origin = origin.strip().rstrip("/").lower()
    if origin == "*":
        return origin
    parts = urlsplit(origin)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
        or port == -1
    ):
        raise ConfigurationError(
            f"--cors-origin expects SCHEME://HOST[:PORT] (or *), got {origin!r}"
        )
    return origin


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    text = text.strip()
    if text == "*":
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError as exc:
        raise ConfigurationError(
            f"--forwarded-allow-ips expects IP addresses or networks (or *), got {text!r}"
        ) from exc


@dataclass(frozen=True, repr=False)
class SecuritySettings:
    """Everything :class:`SecurityMiddleware` enforces. Its repr shows no secret.

    Args:
        users: who may log in with a password.
        tokens: bearer tokens.
        read_only: refuse every unsafe request, whoever asks.
        cookie_secret: signs session cookies; ``None``: random per process (sessions end at
            restart, and do not work across replicas).
        session_max_age: seconds a login lasts.
        cors_origins: origins allowed to call the API from a browser (``*`` for any); none by
            default. Cookies are never allowed cross-origin: such callers use tokens.
        metrics_public: serve ``/metrics`` without auth.
        forwarded_allow_ips: proxies whose ``X-Forwarded-*`` headers are honoured (``*``: all).
        insecure_no_auth: allow a non-loopback bind with no credentials configured.
        url_prefix: the prefix every path of the app is under (``--url-prefix``).
        failure_limit, failure_window: more failed authentications than this within the window
            (per client address, or per user) are answered 429 without checking.
        failure_delay, failure_max_delay: a failure waits ``failure_delay * 2**(n-1)`` seconds,
            at most ``failure_max_delay``, before its answer.
    """

    users: Sequence[PasswordUser] = ()
    tokens: Sequence[ApiToken] = ()
    read_only: bool = False
    cookie_secret: str | bytes | None = field(default=None, compare=False)
    session_max_age: float = 12 * 3600.0
    cors_origins: Sequence[str] = ()
    metrics_public: bool = False
    forwarded_allow_ips: Sequence[str] = ()
    insecure_no_auth: bool = False
    url_prefix: str = ""
    failure_limit: int = 10
    failure_window: float = 300.0
    failure_delay: float = 0.5
    failure_max_delay: float = 5.0

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "users", tuple(self.users))
        put(self, "tokens", tuple(self.tokens))
        for kind, names in (
            ("user", [u.name for u in self.users]),
            ("token", [t.name for t in self.tokens]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ConfigurationError(f"{kind} {duplicates[0]!r} is configured twice")
        digests = [t.digest for t in self.tokens]
        if len(set(digests)) != len(digests):
            raise ConfigurationError("the same API token is configured twice")
        secret = self.cookie_secret
        if secret is None:
            key = secrets.token_bytes(32)
        else:
            raw = secret.encode() if isinstance(secret, str) else bytes(secret)
            if len(raw) < MIN_COOKIE_SECRET_LENGTH:
                raise ConfigurationError(
                    f"--cookie-secret must be at least {MIN_COOKIE_SECRET_LENGTH} characters"
                )
            key = hashlib.sha256(b"aiocelerymon-cookie\0" + raw).digest()
        put(self, "cookie_secret", key)
        put(self, "cors_origins", tuple(_normalise_origin(o) for o in self.cors_origins))
        allow = tuple(a.strip() for a in self.forwarded_allow_ips if a.strip())
        for item in allow:
            _parse_network(item)
        put(self, "forwarded_allow_ips", allow)
        put(self, "url_prefix", _normalise_prefix(self.url_prefix))
        for name in ("session_max_age", "failure_window"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        for name in ("failure_delay", "failure_max_delay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be a non-negative number of seconds")
        if self.failure_limit < 1:
            raise ConfigurationError("failure_limit must be at least 1")

    @property
    def auth_enabled(self) -> bool:
        """Whether any credentials are configured."""
        return bool(self.users or self.tokens)

    @property
    def cookie_key(self) -> bytes:
        """The key session cookies are signed with (derived from ``cookie_secret``)."""
        assert isinstance(self.cookie_secret, bytes)
        return self.cookie_secret

    def __repr__(self) -> str:
        users = [f"{u.name}:{u.role}" for u in self.users]
        tokens = [f"{t.name}:{t.role}" for t in self.tokens]
        return (
            f"SecuritySettings(users={users!r}, tokens={tokens!r}, read_only={self.read_only},"
            f" cookie_secret=<hidden>, cors_origins={list(self.cors_origins)!r},"
            f" metrics_public={self.metrics_public},"
            f" forwarded_allow_ips={list(self.forwarded_allow_ips)!r},"
            f" insecure_no_auth={self.insecure_no_auth}, url_prefix={self.url_prefix!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_options(
        cls,
        *,
        basic_auth: Iterable[str] = (),
        auth_file: str | os.PathLike[str] | None = None,
        api_tokens: Iterable[str] = (),
        api_token_file: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> SecuritySettings:
        """Build from the command-line forms (``USER:PASS[:ROLE]``, ``TOKEN[:ROLE]``, files)."""
        users = [parse_basic_auth(item) for item in basic_auth]
        tokens = [parse_api_token(item) for item in api_tokens]
        if auth_file is not None:
            more_users, more_tokens = load_credentials(auth_file)
            users += more_users
            tokens += more_tokens
        if api_token_file is not None:
            tokens += load_credentials(api_token_file, tokens_only=True)[1]
        return cls(users=users, tokens=tokens, **options)


# ------------------------------------------------------------------------------------------
# Binding


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that leave every security decision to us.

    uvicorn's own proxy-header handling trusts ``127.0.0.1`` by default, which would let any
    local process (or a local proxy passing headers through) choose the client address and
    scheme before :class:`SecurityMiddleware` sees them; ``--forwarded-allow-ips`` is ours.
    """
    return {"proxy_headers": False, "server_header": False}


def is_loopback(address: str) -> bool:
    """Whether ``address`` (an IP or host name) can only be reached from this machine."""
    host = address.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(address: str, settings: SecuritySettings) -> None:
    """Refuse to listen beyond loopback with no credentials configured.

    Raises:
        InsecureBindError: ``address`` is not loopback, no credentials are configured, and
            ``insecure_no_auth`` was not given.
    """
    if is_loopback(address) or settings.auth_enabled:
        return
    if settings.insecure_no_auth:
        logger.warning(
            "serving on %s with no authentication (--insecure-no-auth): anyone who can reach"
            " it can control the workers",
            address,
        )
        return
    raise InsecureBindError(
        f"refusing to listen on {address!r} with no authentication: anyone who can reach it"
        " could shut the workers down. Configure --basic-auth, --auth-file or --api-token"
        " (AIOCELERYMON_BASIC_AUTH, ...), or pass --insecure-no-auth to accept the risk."
    )


# ------------------------------------------------------------------------------------------
# Failed logins


class FailureLimiter:
    """Counts failed authentications per key (client address, user) in a sliding window.

    Memory is bounded: each table keeps at most ``max_keys`` keys, the stalest dropped first.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        delay: float,
        max_delay: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.delay = delay
        self.max_delay = max_delay
        self.max_keys = max_keys
        self._clock = clock
        # key -> [failures, time of the first failure in the window]
        self._tables: dict[str, OrderedDict[str, list[float]]] = {}

    def _entry(self, table: str, key: str) -> list[float] | None:
        entries = self._tables.get(table)
        if entries is None:
            return None
        entry = entries.get(key)
        if entry is not None and self._clock() - entry[1] >= self.window:
            del entries[key]
            return None
        return entry

    def retry_after(self, **keys: str | None) -> float | None:
        """Seconds until any of ``keys`` (``table=key``) may try again, if one is over the limit."""
        waits = []
        for table, key in keys.items():
            entry = None if key is None else self._entry(table, key)
            if entry is not None and entry[0] >= self.limit:
                waits.append(entry[1] + self.window - self._clock())
        return max(waits) if waits else None

    def failure(self, **keys: str | None) -> float:
        """Count one failure against every key; returns how long to delay its answer."""
        worst = 0.0
        now = self._clock()
        for table, key in keys.items():
            if key is None:
                continue
            entries = self._tables.setdefault(table, OrderedDict())
            entry = self._entry(table, key)
            if entry is None:
                entry = entries[key] = [0.0, now]
            entry[0] += 1
            entries.move_to_end(key)
            while len(entries) > self.max_keys:
                entries.popitem(last=False)
            worst = max(worst, entry[0])
        if worst == 0:
            return 0.0
        return float(min(self.max_delay, self.delay * 2 ** min(worst - 1, 32)))

    def success(self, **keys: str | None) -> None:
        """Forget the failures of ``keys`` (a user who got in)."""
        for table, key in keys.items():
            entries = self._tables.get(table)
            if entries is not None and key is not None:
                entries.pop(key, None)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._tables.values())


# ------------------------------------------------------------------------------------------
# Small HTTP helpers


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-cased header names; repeated headers joined with ``,`` (cookies with ``;``)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in out:
            out[name] += ("; " if name == "cookie" else ", ") + value
        else:
            out[name] = value
    return out


def _cookies(header: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in header.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep and name and name not in out:
            out[name] = value.strip().strip('"')
    return out


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _host_port(authority: str, scheme: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit("//" + authority)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port if port is not None else {"http": 80, "https": 443}.get(scheme)


def _safe_next(target: str, default: str) -> str:
    # Only a path on this site: no scheme, no //host, no backslash tricks, no header injection.
    if (
        not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or "\\" in target
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return default
    return target


@dataclass(slots=True)
class _Session:
    name: str
    sid: str
    expires: float
    fingerprint: str


# ------------------------------------------------------------------------------------------
# The middleware


class SecurityMiddleware:
    """Pure ASGI middleware enforcing :class:`SecuritySettings` (see the module docstring).

    Args:
        app: the ASGI application to protect.
        settings: what to enforce.
        url_prefix: overrides ``settings.url_prefix``.
        clock: wall-clock seconds (sessions, failure windows); tests pass their own.
        sleep: how a failing request waits; tests pass their own.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: SecuritySettings,
        *,
        url_prefix: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.app = app
        self.settings = settings
        self.prefix = settings.url_prefix if url_prefix is None else _normalise_prefix(url_prefix)
        self._clock = clock
        self._sleep = sleep
        self._key = settings.cookie_key
        self._users = {user.name: user for user in settings.users}
        self._tokens = {token.digest: token for token in settings.tokens}
        self._networks = [_parse_network(a) for a in settings.forwarded_allow_ips]
        self._cors_any = "*" in settings.cors_origins
        self._cors = frozenset(settings.cors_origins)
        self.failures = FailureLimiter(
            settings.failure_limit,
            settings.failure_window,
            settings.failure_delay,
            settings.failure_max_delay,
            clock=clock,
        )
        # Successful slow-hash logins, so HTTP Basic does not run scrypt on every request:
        # HMAC(process key, name, password) -> expiry. Bounded; only successes are kept.
        self._process_key = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._verified_ttl = 300.0
        self._revoked: OrderedDict[str, float] = OrderedDict()
        self._limiter: anyio.CapacityLimiter | None = None
        # A password to check when the user is unknown, so timing does not tell who exists.
        self._decoy = next((u for u in settings.users if u.slow), None)

    def __repr__(self) -> str:
        return f"SecurityMiddleware({self.app!r}, {self.settings!r})"

    # -- entry point ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = self._forwarded(scope)
        headers = _headers(scope)
        rel = self._relative(scope)
        method = scope.get("method", "GET").upper() if kind == "http" else "GET"
        origin = headers.get("origin")
        cors = self._cors_allowed(origin)
        if kind == "http":
            static = rel is not None and rel.startswith(STATIC_PREFIX)
            send = self._decorate(send, cors, no_store=not static)

        if (
            kind == "http"
            and method == "OPTIONS"
            and cors
            and origin
            and ("access-control-request-method" in headers)
        ):
            await self._preflight(send, headers)
            return
        if self._host_refused(headers):
            await self._refuse(
                scope,
                send,
                403,
                "Host not allowed: use a loopback name, or configure authentication",
            )
            return
        cross_site = origin is not None and not cors and not self._same_origin(scope, headers)
        if cross_site and (kind == "websocket" or method not in SAFE_METHODS):
            await self._refuse(scope, send, 403, "cross-origin request refused")
            return

        if kind == "http" and rel in (LOGIN_PATH, LOGOUT_PATH, LOGIN_CSS_PATH):
            await self._own_page(scope, receive, send, rel, method, headers)
            return
        if rel is not None and method in SAFE_METHODS and self._is_public(rel):
            scope["user"] = ANONYMOUS if not self.settings.auth_enabled else _UNAUTHENTICATED
            scope["auth"] = _grant(scope["user"])
            await self.app(scope, receive, send)
            return

        principal, session = await self._authenticate(scope, send, headers)
        if principal is None:
            return  # refused already
        if method not in SAFE_METHODS:
            if self.settings.read_only:
                await self._refuse(scope, send, 403, "read-only mode: control is disabled")
                return
            if principal.role < Role.OPERATOR:
                await self._refuse(
                    scope,
                    send,
                    403,
                    f"{principal.name} is a {principal.role}; control needs the operator role",
                )
                return
            if session is not None and not self._csrf_ok(session, headers.get("x-csrf-token")):
                await self._refuse(
                    scope,
                    send,
                    403,
                    f"CSRF token missing or wrong: send the {CSRF_HEADER}"
                    f" header (GET {self.prefix}{SESSION_PATH} gives it)",
                )
                return
        elif principal.role < Role.VIEWER:
            await self._refuse(scope, send, 403, "no role")
            return
        scope["user"] = principal
        scope["auth"] = _grant(principal)
        if kind == "http" and rel == SESSION_PATH and method in ("GET", "HEAD"):
            await self._session_info(scope, send, principal, session)
            return
        await self.app(scope, receive, send)

    # -- paths ---------------------------------------------------------------------------------

    def _visible_path(self, scope: Scope) -> str:
        """The path as the browser asked for it (root path included)."""
        path: str = scope.get("path", "/")
        root: str = scope.get("root_path", "")
        return path if not root or path.startswith(root) else root + path

    def _base(self, scope: Scope) -> str:
        root: str = scope.get("root_path", "")
        return root + self.prefix

    def _relative(self, scope: Scope) -> str | None:
        """The path relative to the prefix; ``None`` outside it or when not plainly spelt.

        ``None`` is never public: ``/static/../api/x``, ``//x`` or ``/./x`` need auth.
        """
        path: str = scope.get("path", "/")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if self.prefix:
            if path == self.prefix:
                path = "/"
            elif path.startswith(self.prefix + "/"):
                path = path[len(self.prefix) :]
            else:
                return None
        segments = path.split("/")[1:]
        if not path.startswith("/") or any(s in ("", ".", "..") for s in segments[:-1]):
            return None
        if segments and segments[-1] in (".", ".."):
            return None
        return path

    def _is_public(self, rel: str) -> bool:
        if rel in PUBLIC_PATHS or rel.startswith(STATIC_PREFIX):
            return True
        # /metrics/ too: an ASGI app mounted at /metrics answers there (Starlette's Mount).
        metrics = rel == METRICS_PATH or rel.startswith(METRICS_PATH + "/")
        return self.settings.metrics_public and metrics

    # -- proxies -------------------------------------------------------------------------------

    def _trusted(self, host: str | None) -> bool:
        if host is None or not self._networks:
            return False
        if None in self._networks:
            return True
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(net is not None and ip in net for net in self._networks)

    def _forwarded(self, scope: Scope) -> Scope:
        names = (
            b"x-forwarded-for",
            b"x-forwarded-proto",
            b"x-forwarded-host",
            b"x-forwarded-prefix",
        )
        raw = list(scope.get("headers", ()))
        if not any(name.lower() in names for name, _ in raw):
            return scope
        scope = dict(scope)
        client = scope.get("client")
        if not self._trusted(client[0] if client else None):
            # Ignored, and removed so nothing downstream believes them either.
            scope["headers"] = [(n, v) for n, v in raw if n.lower() not in names]
            return scope
        headers = _headers(scope)
        chain = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
        if chain:
            # The nearest address not one of our proxies is the client (uvicorn's rule).
            real = next((h for h in reversed(chain) if not self._trusted(h)), chain[0])
            scope["client"] = (real, 0)
        proto = headers.get("x-forwarded-proto", "").split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if secure else "ws"
            else:
                scope["scheme"] = proto
        host = headers.get("x-forwarded-host", "").split(",")[-1].strip()
        if host and _host_port(host, "http") is not None and host.isprintable():
            raw = [(n, v) for n, v in raw if n.lower() != b"host"] + [(b"host", host.encode())]
            scope["headers"] = raw
        prefix = headers.get("x-forwarded-prefix", "").split(",")[-1].strip().rstrip("/")
        if prefix.startswith("/") and prefix.isprintable() and "//" not in prefix:
            scope["root_path"] = prefix + scope.get("root_path", "")
        return scope

    # -- origins -------------------------------------------------------------------------------

    def _cors_allowed(self, origin: str | None) -> str | None:
        if origin is None or not self._cors:
            return None
        folded = origin.strip().rstrip("/").lower()
        if self._cors_any or folded in self._cors:
            return origin
        return None

    def _same_origin(self, scope: Scope, headers: Mapping[str, str]) -> bool:
        origin = headers.get("origin", "")
        if origin == "null":
            # Our own Referrer-Policy (no-referrer) makes browsers send "Origin: null" with
            # the page's own form posts and fetches (Fetch: "serializing a request origin").
            # "null" alone could be a sandboxed frame anywhere; Sec-Fetch-Site, which no page
            # can set, tells the browser's own verdict.
            return headers.get("sec-fetch-site") == "same-origin"
        parts = urlsplit(origin)
        mine = _host_port(headers.get("host", ""), parts.scheme)
        try:
            theirs = (parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme))
        except ValueError:
            return False
        # Scheme aside on purpose: behind a TLS proxy without X-Forwarded-Proto we see http.
        return mine is not None and parts.hostname is not None and mine == theirs

    def _host_refused(self, headers: Mapping[str, str]) -> bool:
        # No credentials: the server is on loopback (check_bind), so a Host naming anything
        # else is a page that rebound its DNS name to 127.0.0.1.
        if self.settings.auth_enabled or self.settings.insecure_no_auth:
            return False
        host = headers.get("host")
        if host is None:
            return False
        parsed = _host_port(host, "http")
        return parsed is None or not is_loopback(parsed[0])

    # -- authentication ------------------------------------------------------------------------

    async def _authenticate(
        self, scope: Scope, send: Send, headers: Mapping[str, str]
    ) -> tuple[Principal | None, _Session | None]:
        if not self.settings.auth_enabled:
            return ANONYMOUS, None
        client = scope.get("client")
        address = client[0] if client else "unknown"
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, credentials = authorization.strip().partition(" ")
            scheme = scheme.lower()
            credentials = credentials.strip()
            if scheme == "basic":
                return await self._basic(scope, send, address, credentials), None
            if scheme == "bearer":
                return await self._bearer(scope, send, address, credentials), None
            await self._refuse(scope, send, 401, "unsupported authorization scheme")
            return None, None
        session = self._read_session(headers)
        if session is not None:
            user = self._users.get(session.name)
            if user is not None:
                return Principal(user.name, user.role, "session"), session
        await self._challenge(scope, send, headers)
        return None, None

    async def _basic(
        self, scope: Scope, send: Send, address: str, credentials: str
    ) -> Principal | None:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        name, sep, password = decoded.partition(":")
        if not sep:
            await self._refuse(scope, send, 401, "malformed Basic credentials")
            return None
        user = await self._check_password(scope, send, address, name, password)
        return None if user is None else Principal(user.name, user.role, "basic")

    async def _bearer(self, scope: Scope, send: Send, address: str, token: str) -> Principal | None:
        wait = self.failures.retry_after(address=address)
        if wait is not None:
            await self._too_many(scope, send, wait)
            return None
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        # A dict lookup keyed by SHA-256 leaks nothing useful about the token itself.
        found = self._tokens.get(digest)
        if found is None:
            delay = self.failures.failure(address=address)
            logger.warning("bearer token refused from %s", address)
            await self._sleep(delay)
            await self._refuse(scope, send, 401, "invalid token", challenge=True)
            return None
        return Principal(found.name, found.role, "token")

    async def _check_password(
        self, scope: Scope, send: Send, address: str, name: str, password: str
    ) -> PasswordUser | None:
        """The user if ``password`` is theirs; otherwise answer 401 (slowed) or 429 and None."""
        user = self._users.get(name)
        user_key = name if user is not None else None
        wait = self.failures.retry_after(address=address, user=user_key)
        if wait is not None:
            await self._too_many(scope, send, wait)
            return None
        if await self._verify(user, name, password):
            self.failures.success(user=user_key)
            return user
        delay = self.failures.failure(address=address, user=user_key)
        logger.warning(
            "authentication failed for %s from %s",
            f"user {name!r}" if user is not None else "an unknown user",
            address,
        )
        await self._sleep(delay)
        await self._refuse(scope, send, 401, "invalid user name or password", challenge=True)
        return None

    async def _verify(self, user: PasswordUser | None, name: str, password: str) -> bool:
        if user is None:
            if self._decoy is not None:
                await self._in_thread(self._decoy.verify, password)
            return False
        if not user.slow:
            return user.verify(password)
        key = hmac.new(
            self._process_key,
            name.encode() + b"\0" + password.encode("utf-8", "surrogatepass"),
            "sha256",
        ).digest()
        now = self._clock()
        expiry = self._verified.get(key)
        if expiry is not None and expiry > now:
            return True
        ok = await self._in_thread(user.verify, password)
        if ok:
            self._verified[key] = now + self._verified_ttl
            self._verified.move_to_end(key)
            while len(self._verified) > 1024:
                self._verified.popitem(last=False)
        return ok

    async def _in_thread(self, fn: Callable[[str], bool], arg: str) -> bool:
        # scrypt is 16 MiB and ~50 ms a call: never on the event loop, two at a time at most.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(2)
        return await anyio.to_thread.run_sync(fn, arg, limiter=self._limiter)

    # -- sessions ------------------------------------------------------------------------------

    def _sign(self, payload: str) -> str:
        return _b64e(hmac.new(self._key, b"session\0" + payload.encode(), "sha256").digest())

    def _new_session(self, user: PasswordUser) -> tuple[str, _Session]:
        session = _Session(
            user.name,
            secrets.token_urlsafe(16),
            self._clock() + self.settings.session_max_age,
            user.fingerprint(self._key),
        )
        body = {"u": session.name, "s": session.sid, "e": session.expires, "f": session.fingerprint}
        payload = _b64e(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}", session

    def _read_session(self, headers: Mapping[str, str]) -> _Session | None:
        value = _cookies(headers.get("cookie", "")).get(SESSION_COOKIE)
        if not value:
            return None
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            body = json.loads(_b64d(payload))
            session = _Session(str(body["u"]), str(body["s"]), float(body["e"]), str(body["f"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        user = self._users.get(session.name)
        if (
            session.expires <= self._clock()
            or session.sid in self._revoked
            or user is None
            or not hmac.compare_digest(user.fingerprint(self._key), session.fingerprint)
        ):
            return None
        return session

    def _revoke(self, session: _Session) -> None:
        now = self._clock()
        self._revoked[session.sid] = session.expires
        while self._revoked:
            sid, expires = next(iter(self._revoked.items()))
            if expires > now and len(self._revoked) <= 100_000:
                break
            del self._revoked[sid]

    def csrf_token(self, session: _Session) -> str:
        """The CSRF token of a session (derived, so nothing is stored)."""
        return _b64e(hmac.new(self._key, b"csrf\0" + session.sid.encode(), "sha256").digest())

    def _csrf_ok(self, session: _Session, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(self.csrf_token(session), sent.strip())

    def _cookie_headers(
        self, scope: Scope, session_value: str, csrf: str, max_age: int
    ) -> list[tuple[bytes, bytes]]:
        path = self._base(scope) or "/"
        secure = "; Secure" if scope.get("scheme") in ("https", "wss") else ""
        common = f"Path={quote(path)}; Max-Age={max_age}{secure}"
        return [
            (
                b"set-cookie",
                f"{SESSION_COOKIE}={session_value}; {common}; HttpOnly; SameSite=Lax".encode(),
            ),
            # Readable by the page's script on purpose: the double-submit copy of the token.
            (b"set-cookie", f"{CSRF_COOKIE}={csrf}; {common}; SameSite=Strict".encode()),
        ]

    # -- the middleware's own endpoints --------------------------------------------------------

    async def _own_page(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rel: str,
        method: str,
        headers: Mapping[str, str],
    ) -> None:
        base = self._base(scope)
        if rel == LOGIN_CSS_PATH and method in ("GET", "HEAD"):
            await _respond(
                send,
                200,
                LOGIN_CSS,
                "text/css; charset=utf-8",
                extra=[(b"cache-control", b"max-age=3600")],
            )
            return
        if rel == LOGIN_PATH and method in ("GET", "HEAD"):
            if not self.settings.users:
                await _redirect(send, base + "/")
                return
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            target = _safe_next(query.get("next", ""), base + "/")
            await self._login_page(send, scope, 200, target)
            return
        if rel == LOGIN_PATH and method == "POST":
            await self._login(scope, receive, send, headers)
            return
        if rel == LOGOUT_PATH and method in ("GET", "HEAD"):
            session = self._read_session(headers)
            if session is None:
                await _redirect(send, base + LOGIN_PATH)
                return
            body = LOGOUT_PAGE.format(
                base=html.escape(base),
                field=CSRF_FORM_FIELD,
                token=html.escape(self.csrf_token(session)),
                name=html.escape(session.name),
            )
            await _respond(send, 200, body.encode(), "text/html; charset=utf-8")
            return
        if rel == LOGOUT_PATH and method == "POST":
            await self._logout(scope, receive, send, headers)
            return
        await _respond(
            send,
            405,
            b'{"error": "method not allowed"}',
            "application/json",
            extra=[(b"allow", b"GET, HEAD, POST")],
        )

    async def _login_page(
        self,
        send: Send,
        scope: Scope,
        status: int,
        target: str,
        message: str = "",
        username: str = "",
    ) -> None:
        base = self._base(scope)
        alert = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
        body = LOGIN_PAGE.format(
            base=html.escape(base),
            next=html.escape(target),
            message=alert,
            username=html.escape(username),
        )
        await _respond(send, status, body.encode(), "text/html; charset=utf-8")

    async def _login(
        self, scope: Scope, receive: Receive, send: Send, headers: Mapping[str, str]
    ) -> None:
        base = self._base(scope)
        form = await _read_form(receive, headers)
        if form is None:
            await _respond(send, 400, b"Bad login form.", "text/plain; charset=utf-8")
            return
        target = _safe_next(form.get("next", ""), base + "/")
        name, password = form.get("username", ""), form.get("password", "")
        client = scope.get("client")
        address = client[0] if client else "unknown"
        user = self._users.get(name)
        wait = self.failures.retry_after(address=address, user=name if user else None)
        if wait is not None:
            await self._login_page(
                send, scope, 429, target, "Too many failed attempts; try again later.", name
            )
            return
        if not await self._verify(user, name, password):
            delay = self.failures.failure(address=address, user=name if user else None)
            logger.warning(
                "login failed for %s from %s",
                f"user {name!r}" if user is not None else "an unknown user",
                address,
            )
            await self._sleep(delay)
            await self._login_page(send, scope, 401, target, "Invalid user name or password.", name)
            return
        assert user is not None
        self.failures.success(user=name)
        value, session = self._new_session(user)
        logger.info("%s logged in from %s", user.name, address)
        cookies = self._cookie_headers(
            scope, value, self.csrf_token(session), int(self.settings.session_max_age)
        )
        await _redirect(send, target, extra=cookies)

    async def _logout(
        self, scope: Scope, receive: Receive, send: Send, headers: Mapping[str, str]
    ) -> None:
        session = self._read_session(headers)
        form = await _read_form(receive, headers) or {}
        if session is not None:
            sent = headers.get("x-csrf-token") or form.get(CSRF_FORM_FIELD)
            if not self._csrf_ok(session, sent):
                await _respond(send, 403, b"CSRF token missing or wrong.", "text/plain")
                return
            self._revoke(session)
            logger.info("%s logged out", session.name)
        await _redirect(
            send, self._base(scope) + LOGIN_PATH, extra=self._cookie_headers(scope, "", "", 0)
        )

    async def _session_info(
        self, scope: Scope, send: Send, principal: Principal, session: _Session | None
    ) -> None:
        base = self._base(scope)
        info = {
            "user": principal.display_name,
            "role": str(principal.role),
            "authenticated": principal.is_authenticated,
            "scheme": principal.scheme,
            "read_only": self.settings.read_only,
            "can_control": principal.can_control and not self.settings.read_only,
            "csrf_header": CSRF_HEADER,
            "csrf_token": None if session is None else self.csrf_token(session),
            "login_url": base + LOGIN_PATH if self.settings.users else None,
            "logout_url": base + LOGOUT_PATH if session is not None else None,
        }
        await _respond(send, 200, json.dumps(info).encode(), "application/json")

    # -- refusals ------------------------------------------------------------------------------

    async def _challenge(self, scope: Scope, send: Send, headers: Mapping[str, str]) -> None:
        """No credentials: a browser navigating gets the login form, anyone else a 401."""
        navigating = headers.get("sec-fetch-mode", "navigate") == "navigate" and (
            "x-requested-with" not in headers
        )
        if (
            scope["type"] == "http"
            and self.settings.users
            and scope.get("method") in ("GET", "HEAD")
            and navigating
            and "text/html" in headers.get("accept", "")
        ):
            query = scope.get("query_string", b"").decode("latin-1")
            here = self._visible_path(scope) + (f"?{query}" if query else "")
            await _redirect(send, f"{self._base(scope)}{LOGIN_PATH}?next={quote(here, safe='')}")
            return
        await self._refuse(scope, send, 401, "authentication required", challenge=navigating)

    async def _too_many(self, scope: Scope, send: Send, wait: float) -> None:
        client = scope.get("client")
        logger.warning(
            "too many failed authentications from %s; refusing for %.0f s",
            client[0] if client else "unknown",
            wait,
        )
        retry = str(max(1, math.ceil(wait))).encode()
        await self._refuse(
            scope, send, 429, "too many failed attempts", extra=[(b"retry-after", retry)]
        )

    async def _refuse(
        self,
        scope: Scope,
        send: Send,
        status: int,
        message: str,
        *,
        challenge: bool = False,
        extra: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        if scope["type"] == "websocket":
            # Closing before accept: the server answers the handshake 403.
            await send({"type": "websocket.close", "code": 1008, "reason": message[:100]})
            return
        headers = list(extra)
        if status == 401 and challenge:
            if self.settings.users:
                headers.append(
                    (b"www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'.encode())
                )
            if self.settings.tokens:
                headers.append((b"www-authenticate", f'Bearer realm="{REALM}"'.encode()))
        body = json.dumps({"error": message}).encode()
        await _respond(send, status, body, "application/json", extra=headers)

    # -- response decoration -------------------------------------------------------------------

    def _decorate(self, send: Send, cors_origin: str | None, *, no_store: bool) -> Send:
        vary = bool(self._cors)

        async def decorated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS:
                    if name not in present:
                        headers.append((name, value))
                if no_store and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                if cors_origin is not None:
                    headers.append((b"access-control-allow-origin", cors_origin.encode("latin-1")))
                if vary:
                    headers.append((b"vary", b"Origin"))
                message = {**message, "headers": headers}
            await send(message)

        return decorated

    async def _preflight(self, send: Send, headers: Mapping[str, str]) -> None:
        requested = headers.get("access-control-request-headers", "")
        allowed = {"authorization", "content-type", CSRF_HEADER.lower()}
        asked = {h.strip().lower() for h in requested.split(",") if h.strip()}
        await _respond(
            send,
            204,
            b"",
            None,
            extra=[
                (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, PATCH, DELETE"),
                (b"access-control-allow-headers", ", ".join(sorted(asked & allowed)).encode()),
                (b"access-control-max-age", b"600"),
            ],
        )


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str | None,
    *,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _redirect(
    send: Send, location: str, *, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    location = quote(location, safe="/?&=%:@!$'()*+,;~-._")
    await _respond(send, 303, b"", None, extra=[(b"location", location.encode()), *extra])


async def _read_form(receive: Receive, headers: Mapping[str, str]) -> dict[str, str] | None:
    """An urlencoded form body of at most MAX_FORM_BYTES, or None."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    if content_type != "application/x-www-form-urlencoded":
        return None
    try:
        pairs = parse_qsl(
            b"".join(chunks).decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=20,
        )
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


# ------------------------------------------------------------------------------------------
# Command line


def add_security_options(parser: Any) -> None:
    """Add the auth flags to an argparse parser or argument group (each has an env variable)."""
    add = parser.add_argument
    add(
        "--basic-auth",
        action="append",
        metavar="USER:PASS[:ROLE]",
        help="A user for HTTP Basic and the login form (repeatable); ROLE is viewer or operator"
        " (default operator, as in Flower). Prefer --auth-file: the command line is visible to"
        " local users. Env: AIOCELERYMON_BASIC_AUTH (comma-separated).",
    )
    add(
        "--auth-file",
        metavar="PATH",
        help="Credentials file of NAME:ROLE:HASH lines (python -m aiocelerymon.web.passwords"
        " makes them). Env: AIOCELERYMON_AUTH_FILE.",
    )
    add(
        "--api-token",
        action="append",
        metavar="TOKEN[:ROLE]",
        help="A bearer token (repeatable, at least 16 characters; default role operator)."
        " Env: AIOCELERYMON_API_TOKEN (comma-separated).",
    )
    add(
        "--api-token-file",
        metavar="PATH",
        help="File of NAME:ROLE:sha256$HEX token hashes. Env: AIOCELERYMON_API_TOKEN_FILE.",
    )
    add(
        "--read-only",
        action="store_true",
        default=None,
        help="Refuse every control action. Env: AIOCELERYMON_READ_ONLY.",
    )
    add(
        "--cookie-secret",
        metavar="SECRET",
        help="Signs login sessions (at least 16 characters; default: random per process, so"
        " logins end at restart). Env: AIOCELERYMON_COOKIE_SECRET.",
    )
    add(
        "--session-max-age",
        type=float,
        metavar="SECONDS",
        help="How long a login lasts (default 43200). Env: AIOCELERYMON_SESSION_MAX_AGE.",
    )
    add(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="Allow browser calls from this origin, e.g. https://grafana.example.com"
        " (repeatable; none by default). Env: AIOCELERYMON_CORS_ORIGIN (comma-separated).",
    )
    add(
        "--metrics-public",
        action="store_true",
        default=None,
        help="Serve /metrics without auth. Env: AIOCELERYMON_METRICS_PUBLIC.",
    )
    add(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="Comma-separated proxy addresses or networks (or *) whose X-Forwarded-For/Proto/"
        "Host/Prefix are honoured (default none). Env: AIOCELERYMON_FORWARDED_ALLOW_IPS.",
    )
    add(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="Allow a non-loopback --address with no authentication. Env:"
        " AIOCELERYMON_INSECURE_NO_AUTH.",
    )


def _env_bool(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value in _ENV_TRUE:
        return True
    if value in _ENV_FALSE or not value:
        return False
    raise ConfigurationError(f"{name}={environ[name]!r} is not a boolean")


def _env_list(environ: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in environ.get(name, "").split(",") if item.strip()]


def security_settings_from_args(
    ns: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> SecuritySettings:
    """Build :class:`SecuritySettings` from the flags (:func:`add_security_options`), falling
    back to their ``AIOCELERYMON_*`` environment variables; ``ns.url_prefix`` is used if present.

    Raises:
        ConfigurationError: a bad value (named, never quoting a secret).
    """
    env = os.environ if environ is None else environ

    def pick(attr: str, variable: str) -> Any:
        value = getattr(ns, attr, None)
        return value if value not in (None, []) else env.get(variable) or None

    def flag(attr: str, variable: str) -> bool:
        value = getattr(ns, attr, None)
        return bool(value) if value is not None else _env_bool(env, variable)

    def many(attr: str, variable: str) -> list[str]:
        value = getattr(ns, attr, None)
        return list(value) if value else _env_list(env, variable)

    max_age = pick("session_max_age", "AIOCELERYMON_SESSION_MAX_AGE")
    options: dict[str, Any] = {}
    if max_age is not None:
        try:
            options["session_max_age"] = float(max_age)
        except ValueError:
            raise ConfigurationError("--session-max-age must be a number of seconds") from None
    forwarded = pick("forwarded_allow_ips", "AIOCELERYMON_FORWARDED_ALLOW_IPS") or ""
    return SecuritySettings.from_options(
        basic_auth=many("basic_auth", "AIOCELERYMON_BASIC_AUTH"),
        auth_file=pick("auth_file", "AIOCELERYMON_AUTH_FILE"),
        api_tokens=many("api_token", "AIOCELERYMON_API_TOKEN"),
        api_token_file=pick("api_token_file", "AIOCELERYMON_API_TOKEN_FILE"),
        read_only=flag("read_only", "AIOCELERYMON_READ_ONLY"),
        cookie_secret=pick("cookie_secret", "AIOCELERYMON_COOKIE_SECRET"),
        cors_origins=many("cors_origin", "AIOCELERYMON_CORS_ORIGIN"),
        metrics_public=flag("metrics_public", "AIOCELERYMON_METRICS_PUBLIC"),
        forwarded_allow_ips=[a for a in str(forwarded).split(",") if a.strip()],
        insecure_no_auth=flag("insecure_no_auth", "AIOCELERYMON_INSECURE_NO_AUTH"),
        url_prefix=getattr(ns, "url_prefix", None) or "",
        **options,
    )


# ------------------------------------------------------------------------------------------
# The login page: no inline script or style (the CSP forbids both); issue 14 styles it.

LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - aiocelerymon</title>
<link rel="stylesheet" href="{base}/login.css">
</head>
<body class="login">
<main>
<h1>aiocelerymon</h1>
{message}
<form method="post" action="{base}/login">
<input type="hidden" name="next" value="{next}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" value="{username}" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""

LOGOUT_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign out - aiocelerymon</title>
<link rel="stylesheet" href="{base}/login.css">
</head>
<body class="login">
<main>
<h1>aiocelerymon</h1>
<form method="post" action="{base}/logout">
<input type="hidden" name="{field}" value="{token}">
<p>Signed in as {name}.</p>
<button type="submit">Sign out</button>
</form>
</main>
</body>
</html>
"""

LOGIN_CSS = b"""body.login{font-family:system-ui,sans-serif;margin:0;min-height:100vh;display:grid;
place-items:center;background:#f4f5f7;color:#1d2433}
body.login main{width:min(22rem,90vw);padding:2rem;background:#fff;border-radius:.5rem;
box-shadow:0 1px 4px rgba(0,0,0,.15)}
body.login h1{font-size:1.4rem;margin:0 0 1rem}
body.login form{display:grid;gap:.5rem}
body.login input,body.login button{font:inherit;padding:.5rem;border:1px solid #b8bfcc;
border-radius:.3rem}
body.login button{margin-top:.5rem;background:#2457c5;color:#fff;border:0;cursor:pointer}
body.login .error{color:#b00020;margin:0 0 .5rem}
@media (prefers-color-scheme:dark){body.login{background:#15181e;color:#e4e7ee}
body.login main{background:#1e222b}body.login input{background:#15181e;color:inherit}}
"""

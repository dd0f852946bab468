"""The whole aiocelerymon error tree.

::

    AiocelerymonError
    ├── ConfigurationError (ValueError)     bad URL, option or binding
    ├── ClosedError (RuntimeError)          used after aclose()
    ├── EndOfSubscription                   a subscription ended normally
    ├── TransportError                      the broker failed us (chained from the driver error)
    │   ├── ConnectError                    could not connect
    │   │   └── AuthenticationError
    │   ├── ConnectionLostError             dropped and not back within the operation's deadline
    │   ├── BrokerRefusedError              the broker refused (AMQP 404/406, Redis error)
    │   │   ├── ResourceLockedError         AMQP 405: an exclusive queue owned by someone else
    │   │   └── NotAQueueError              a task-queue name that holds something else
    │   └── TransportTimeoutError (TimeoutError)
    └── ProtocolError                       a peer broke the Celery/kombu wire contract
        ├── DecodeError (ValueError)        undecodable envelope, encoding or body
        └── ContentTypeRefusedError         content type not accepted (pickle never is)
"""

from __future__ import annotations

__all__ = [
    "AiocelerymonError",
    "AuthenticationError",
    "BrokerRefusedError",
    "ClosedError",
    "ConfigurationError",
    "ConnectError",
    "ConnectionLostError",
    "ContentTypeRefusedError",
    "DecodeError",
    "EndOfSubscription",
    "NotAQueueError",
    "ProtocolError",
    "ResourceLockedError",
    "TransportError",
    "TransportTimeoutError",
]


class AiocelerymonError(Exception):
    """Root of every error raised by aiocelerymon."""


class ConfigurationError(AiocelerymonError, ValueError):
    """A URL, option or binding that cannot be used."""


class ClosedError(AiocelerymonError, RuntimeError):
    """The object was used after ``aclose()``."""


class EndOfSubscription(AiocelerymonError):  # noqa: N818 - a normal end, like anyio.EndOfStream
    """The subscription was closed; iteration ends with it."""


class TransportError(AiocelerymonError):
    """The broker or the connection to it failed."""


class ConnectError(TransportError):
    """A connection to the broker could not be established."""


class AuthenticationError(ConnectError):
    """The broker refused the credentials."""


class ConnectionLostError(TransportError):
    """The connection dropped and did not come back within the operation's deadline."""


class BrokerRefusedError(TransportError):
    """The broker refused an operation (e.g. AMQP 406 PRECONDITION_FAILED)."""


class ResourceLockedError(BrokerRefusedError):
    """AMQP 405 RESOURCE_LOCKED: an exclusive queue is owned by another connection."""


class NotAQueueError(BrokerRefusedError):
    """A task-queue operation named something that is not a queue (on Redis: a key of another
    type, such as kombu's ``_kombu.binding.*`` sets); nothing was read or changed."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(f"{name!r} is not a queue: it is {what}")
        self.name = name
        #: What it is instead, e.g. ``"a Redis set"``.
        self.what = what


class TransportTimeoutError(TransportError, TimeoutError):
    """One broker operation exceeded its deadline."""


class ProtocolError(AiocelerymonError):
    """A peer sent something that breaks the Celery/kombu wire contract."""


class DecodeError(ProtocolError, ValueError):
    """An envelope, encoding or body could not be decoded."""


_PICKLE_TYPES = frozenset({"application/x-python-serialize", "pickle"})


class ContentTypeRefusedError(ProtocolError):
    """The content type is not in the accept list (pickle is never accepted)."""

    def __init__(self, content_type: str, accept: frozenset[str]) -> None:
        self.content_type = content_type
        self.accept = accept
        super().__init__(
            f"refusing to decode content type {content_type!r}: "
            f"accepted are {sorted(accept)!r}"
            + (" (pickle is never deserialized)" if content_type in _PICKLE_TYPES else "")
        )

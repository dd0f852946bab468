"""Password and API-token hashes for ``aiocelerymon serve``, from the standard library only.

Encoded hashes (one field of a credentials file line, see :mod:`aiocelerymon.web.security`)::

    scrypt$N$r$p$SALT$HASH              passwords (the default): memory-hard, N a power of two
    pbkdf2_sha256$ITERATIONS$SALT$HASH  passwords, where scrypt is unavailable (FIPS builds)
    sha256$HEX                          API tokens: random 256-bit strings need no slow hash

SALT and HASH are unpadded URL-safe base64. Every comparison is constant time.

Make a line for a credentials file with ``python -m aiocelerymon.web.passwords``::

    $ python -m aiocelerymon.web.passwords alice --role operator     # prompts twice
    alice:operator:scrypt$16384$8$1$...
    $ python -m aiocelerymon.web.passwords ci-bot --token --role viewer
    (the new token on stderr, the line for --api-token-file on stdout)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import secrets
import sys
from collections.abc import Sequence

from aiocelerymon.exceptions import ConfigurationError

__all__ = [
    "PASSWORD_SCHEMES",
    "check_password_hash",
    "check_token_hash",
    "generate_token",
    "hash_password",
    "hash_token",
    "main",
    "verify_password",
    "verify_token",
]

#: The schemes a password hash may use; ``sha256`` is for tokens only.
PASSWORD_SCHEMES = ("scrypt", "pbkdf2_sha256")

# OWASP's 2023 parameters: scrypt N=2**14, r=8, p=1 (16 MiB, ~50 ms); PBKDF2-SHA256 600k rounds.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_ITERATIONS = 600_000
SALT_BYTES = 16
HASH_BYTES = 32
# A hostile or mistyped file must not make one login eat the machine: bound every cost factor.
_MAX_SCRYPT_N, _MAX_SCRYPT_R, _MAX_SCRYPT_P = 2**20, 32, 16
_MAX_SCRYPT_MEMORY = 256 * 2**20
_MAX_PBKDF2_ITERATIONS = 10_000_000
_MIN_SALT_BYTES = 8


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("malformed base64 in a password hash") from exc


def _int(text: str, what: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigurationError(f"password hash: {what} must be an integer in [{low}, {high}]")
    return int(text)


def hash_password(password: str, *, scheme: str = "scrypt") -> str:
    """Hash ``password`` with a fresh random salt, in the encoded form a credentials file holds."""
    salt = secrets.token_bytes(SALT_BYTES)
    secret = password.encode("utf-8", "surrogatepass")
    if scheme == "scrypt":
        digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if scheme == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", secret, salt, PBKDF2_ITERATIONS, HASH_BYTES)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ConfigurationError(f"unknown password scheme {scheme!r}; use one of {PASSWORD_SCHEMES}")


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int, dklen: int = HASH_BYTES) -> bytes:
    # hashlib's default maxmem (32 MiB) refuses some valid parameters; allow what they need.
    maxmem = 128 * r * (n + p + 2) + 2**20
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def check_password_hash(encoded: str) -> str:
    """Validate an encoded password hash without any password; returns its scheme.

    Raises:
        ConfigurationError: not a hash this module can verify (the message never quotes it).
    """
    _parse_password_hash(encoded)
    return encoded.split("$", 1)[0]


def _parse_password_hash(encoded: str) -> tuple[str, tuple[int, ...], bytes, bytes]:
    scheme, _, rest = encoded.partition("$")
    fields = rest.split("$")
    if scheme == "scrypt" and len(fields) == 5:
        n = _int(fields[0], "scrypt N", 2, _MAX_SCRYPT_N)
        if n & (n - 1):
            raise ConfigurationError("password hash: scrypt N must be a power of two")
        r = _int(fields[1], "scrypt r", 1, _MAX_SCRYPT_R)
        p = _int(fields[2], "scrypt p", 1, _MAX_SCRYPT_P)
        if 128 * r * n * p > _MAX_SCRYPT_MEMORY:
            raise ConfigurationError("password hash: scrypt parameters need too much memory")
        params: tuple[int, ...] = (n, r, p)
        salt, digest = _unb64(fields[3]), _unb64(fields[4])
    elif scheme == "pbkdf2_sha256" and len(fields) == 3:
        params = (_int(fields[0], "pbkdf2 iterations", 1000, _MAX_PBKDF2_ITERATIONS),)
        salt, digest = _unb64(fields[1]), _unb64(fields[2])
    elif scheme in PASSWORD_SCHEMES:
        raise ConfigurationError(f"password hash: wrong number of fields for {scheme}")
    else:
        raise ConfigurationError(
            f"password hash: unknown scheme; expected one of {', '.join(PASSWORD_SCHEMES)}"
        )
    if len(salt) < _MIN_SALT_BYTES or len(digest) < 16:
        raise ConfigurationError("password hash: salt or hash too short")
    return scheme, params, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the encoded hash (constant-time comparison).

    CPU-bound (tens of milliseconds by design): call it from a worker thread in a server.

    Raises:
        ConfigurationError: ``encoded`` is not a valid hash.
    """
    scheme, params, salt, expected = _parse_password_hash(encoded)
    secret = password.encode("utf-8", "surrogatepass")
    if scheme == "scrypt":
        n, r, p = params
        actual = _scrypt(secret, salt, n, r, p, dklen=len(expected))
    else:
        actual = hashlib.pbkdf2_hmac("sha256", secret, salt, params[0], len(expected))
    return hmac.compare_digest(actual, expected)


def generate_token() -> str:
    """A new random API token: 256 bits, URL-safe, no ``:`` (so ``TOKEN:ROLE`` parses)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The encoded hash of an API token (``sha256$HEX``) for an ``--api-token-file``."""
    return "sha256$" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def check_token_hash(encoded: str) -> bytes:
    """The digest of an encoded token hash.

    Raises:
        ConfigurationError: not ``sha256$`` followed by 64 hex digits.
    """
    scheme, _, hexdigest = encoded.partition("$")
    if scheme != "sha256" or len(hexdigest) != 64:
        raise ConfigurationError("token hash: expected sha256$ and 64 hex digits")
    try:
        return bytes.fromhex(hexdigest)
    except ValueError as exc:
        raise ConfigurationError("token hash: expected sha256$ and 64 hex digits") from exc


def verify_token(token: str, encoded: str) -> bool:
    """Whether ``token`` matches an encoded token hash (constant-time comparison)."""
    expected = check_token_hash(encoded)
    actual = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(actual, expected)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aiocelerymon.web.passwords NAME``: print a credentials-file line."""
    parser = argparse.ArgumentParser(
        prog="python -m aiocelerymon.web.passwords",
        description="Print a NAME:ROLE:HASH line for --auth-file (or, with --token, a new API "
        "token on stderr and its line for --api-token-file on stdout).",
    )
    parser.add_argument("name", help="user name (no ':'), or the token's name with --token")
    parser.add_argument("--role", choices=("viewer", "operator"), required=True)
    parser.add_argument("--scheme", choices=PASSWORD_SCHEMES, default="scrypt")
    parser.add_argument("--token", action="store_true", help="generate an API token instead")
    parser.add_argument(
        "--stdin", action="store_true", help="read the password from the first line of stdin"
    )
    args = parser.parse_args(argv)
    if ":" in args.name or not args.name or args.name != args.name.strip():
        parser.error("NAME must be non-empty, without ':' or surrounding spaces")
    if args.token:
        token = generate_token()
        print(f"token for {args.name}: {token}", file=sys.stderr)
        print(f"{args.name}:{args.role}:{hash_token(token)}")
        return 0
    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("The passwords differ.", file=sys.stderr)
            return 1
    if not password:
        print("An empty password is refused.", file=sys.stderr)
        return 1
    print(f"{args.name}:{args.role}:{hash_password(password, scheme=args.scheme)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

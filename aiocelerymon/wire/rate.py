"""Celery's rate strings (``"10/m"``), as ``celery.utils.time.rate`` reads them.

Used by camera ``maxrate``, the Node's ``rate_limit`` validation and the demo's limits.
"""

from __future__ import annotations

from aiocelerymon.exceptions import ConfigurationError

__all__ = ["parse_rate"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | None) -> float:
    """Celery's rate strings (``"10/m"``) to events per second; 0 means unlimited."""
    if not rate:
        return 0.0
    if isinstance(rate, (int, float)):
        return float(rate)
    if not isinstance(rate, str):
        raise ConfigurationError(f"invalid rate {rate!r}: expected N, N/s, N/m or N/h")
    count, _, unit = rate.partition("/")
    try:
        return float(count) / _UNITS[unit or "s"]
    except (KeyError, ValueError):
        raise ConfigurationError(f"invalid rate {rate!r}: expected N, N/s, N/m or N/h") from None

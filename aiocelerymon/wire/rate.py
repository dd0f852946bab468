"""Celery's rate strings (``"10/m"``), as ``celery.utils.time.rate`` reads them.

Used by camera ``maxrate``, the Node's ``rate_limit`` validation and the demo's limits.
"""

from __future__ import annotations

import math

from aiocelerymon.exceptions import ConfigurationError

__all__ = ["parse_rate"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | None) -> float:
    """Celery's rate strings (``"10/m"``) to events per second; 0 means unlimited."""
    if not rate:
        return 0.0
    if isinstance(rate, (int, float)):
        per_second = float(rate)
    elif isinstance(rate, str):
        count, _, unit = rate.partition("/")
        try:
            per_second = float(count) / _UNITS[unit or "s"]
        except (KeyError, ValueError):
            raise ConfigurationError(
                f"invalid rate {rate!r}: expected N, N/s, N/m or N/h"
            ) from None
    else:
        raise ConfigurationError(f"invalid rate {rate!r}: expected N, N/s, N/m or N/h")
    # "inf/s" and "-5/m" parse as floats; neither is a rate.
    if not (math.isfinite(per_second) and per_second >= 0):
        raise ConfigurationError(f"invalid rate {rate!r}: must be a finite number >= 0")
    return per_second

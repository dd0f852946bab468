"""argparse types that validate numbers at parse time (for result, migrate).

Local to issue 18's verbs for now; a shared helper is coming to ``_common`` and will replace it.
"""

from __future__ import annotations

import argparse
import math


def seconds(value: str) -> float:
    """A finite, non-negative number of seconds."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be a finite number >= 0")
    return number


def count(value: str) -> int:
    """A whole number >= 0 (0 where the option allows it means "no limit")."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 0")
    return number

"""Prometheus text exposition format 0.0.4: the few pieces the collector renders with.

The collector writes the text itself rather than through ``prometheus_client``: it keeps each
series' lines rendered and re-renders only what changed since the last scrape, so a scrape
costs one join over the live series whatever happened since start.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

__all__ = [
    "CONTENT_TYPE",
    "LABEL_NAME",
    "METRIC_NAME",
    "format_labels",
    "format_value",
    "header",
    "label_value",
]

#: What ``/metrics`` answers with (Prometheus text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})


def label_value(value: object) -> str:
    """A label value, escaped. Non-strings become ``str(value)`` (``None`` is ``"None"``), as
    ``prometheus_client`` (and so celery-exporter) labels them."""
    text = value if isinstance(value, str) else str(value)
    return text.translate(_ESCAPES)


def format_labels(pairs: Iterable[tuple[str, object]]) -> str:
    """``name="value",...`` without braces (empty for no labels)."""
    return ",".join(f'{name}="{label_value(value)}"' for name, value in pairs)


def format_value(value: float) -> str:
    """A sample value the way Go (and so Prometheus and ``prometheus_client``) writes it."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(float(value))
    if value > 0 and "e" not in text:
        whole, _, fraction = text.partition(".")
        if len(whole) > 7:
            # Go's shortest 'g' form (prometheus_client mimics it for `le`) has an exponent
            # from 1e+07 on, where Python's repr still writes every digit.
            digits = (whole + fraction).rstrip("0")
            mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
            return f"{mantissa}e+{len(whole) - 1:02d}"
    return text


def header(name: str, kind: str, help_text: str) -> str:
    """The ``# HELP`` and ``# TYPE`` lines of a family."""
    escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


def static_suffix(static_labels: Mapping[str, str]) -> str:
    """``,k="v"...`` for the static labels appended to every series (empty if none)."""
    text = format_labels(static_labels.items())
    return f",{text}" if text else ""

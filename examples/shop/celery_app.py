"""The shop's Celery app. Its broker comes from ``CELERY_BROKER_URL``, as in production."""

from __future__ import annotations

from celery import Celery

app = Celery("shop")
app.conf.broker_connection_retry_on_startup = True


@app.task(name="shop.total")
def total(prices: list[float], discount: float = 0.0) -> float:
    """The basket's total after ``discount`` (0.1 = 10 % off)."""
    if not 0 <= discount < 1:
        raise ValueError(f"discount must be in [0, 1), got {discount}")
    return round(sum(prices) * (1 - discount), 2)

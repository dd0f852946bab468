"""Benchmarks: ours side by side with Celery's on the same input (``nox -s bench``)."""

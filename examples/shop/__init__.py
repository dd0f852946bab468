"""A tiny service with Celery tasks: the example project for aiocelerymon's pytest plugin."""

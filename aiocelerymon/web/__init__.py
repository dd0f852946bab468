"""The web monitor (``aiocelerymon serve``): a Flower-compatible API, live push, the page."""

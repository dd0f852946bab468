"""The page: ``GET {prefix}/`` (one HTML shell) and ``{prefix}/static/`` (committed assets).

No build step: the assets under ``static/`` are hand-written ES modules and CSS, plus uPlot
vendored with its licence (``static/vendor/uplot/VENDORED.md``). The shell has no inline
script or style, so the CSP of :mod:`aiocelerymon.web.security` holds; every URL in it and in
the scripts is relative, so the page works under any ``--url-prefix`` or proxy prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from aiocelerymon._version import __version__
from aiocelerymon.web.api import page_data, page_live
from aiocelerymon.web.series import PageSeries

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from aiocelerymon.pipeline import Monitor

__all__ = ["STATIC_DIR", "install", "routes", "stop_sampler"]

STATIC_DIR = Path(__file__).with_name("static")

SHELL = """<!doctype html>
<html lang="en" data-theme="dark">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark light">
<title>aiocelerymon</title>
<link rel="stylesheet" href="static/vendor/uplot/uPlot.min.css?v={v}">
<link rel="stylesheet" href="static/app.css?v={v}">
<link rel="icon" href="static/favicon.svg?v={v}" type="image/svg+xml">
<script type="module" src="static/js/main.js?v={v}"></script>
{preload}
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <a class="brand" href="#/">aiocelerymon</a>
  <nav class="nav" aria-label="Views">
    <a href="#/" data-view="dashboard">Dashboard</a>
    <a href="#/tasks" data-view="tasks">Tasks</a>
    <a href="#/broker" data-view="broker">Broker</a>
    <a href="#/charts" data-view="charts">Charts</a>
    <a href="#/events" data-view="events">Events</a>
  </nav>
  <span class="conn" id="conn" title="Live connection">connecting…</span>
  <span class="who" id="who"></span>
  <button type="button" class="theme" id="theme" title="Toggle theme (t)">◐</button>
</header>
<main id="main" tabindex="-1"><p class="muted">Loading…</p></main>
<div id="toast" class="toast" role="status" aria-live="polite"></div>
<dialog id="confirm" class="confirm">
  <form method="dialog">
    <h2 id="confirm-title">Are you sure?</h2>
    <p id="confirm-text"></p>
    <div class="actions">
      <button value="cancel" class="secondary">Cancel</button>
      <button value="ok" id="confirm-ok" class="danger">Confirm</button>
    </div>
  </form>
</dialog>
<dialog id="help" class="confirm">
  <form method="dialog">
    <h2>Keyboard</h2>
    <dl class="keys">
      <dt>g d / g t / g b / g c / g e</dt><dd>dashboard, tasks, broker, charts, events</dd>
      <dt>/</dt><dd>search tasks</dd>
      <dt>j / k</dt><dd>next / previous row</dd>
      <dt>Enter</dt><dd>open the selected row</dd>
      <dt>[ / ]</dt><dd>previous / next page or tab</dd>
      <dt>t</dt><dd>light or dark theme</dd>
      <dt>?</dt><dd>this help</dd>
    </dl>
    <div class="actions"><button value="close">Close</button></div>
  </form>
</dialog>
</body>
</html>
"""


#: Every module the page imports, announced up front so the browser fetches them at once
#: instead of discovering them import by import.
MODULES = ("js/api.js", "js/dom.js", "js/live.js", "js/views.js", "js/charts.js",
           "js/control.js", "vendor/uplot/uPlot.esm.js")  # fmt: skip


def _shell() -> str:
    preload = "\n".join(f'<link rel="modulepreload" href="static/{m}">' for m in MODULES)
    return SHELL.replace("{preload}", preload).replace("{v}", __version__)


async def index(request: Request) -> Response:
    return HTMLResponse(_shell())


def install(app: Starlette, monitor: Monitor) -> PageSeries:
    """Keep the page's counters and its live digest: two listeners on ``monitor``."""
    series = PageSeries()
    monitor.add_listener(series.on_event)
    app.state.aiocelerymon_series = series
    digest = page_live.LiveDigest(monitor)
    monitor.add_listener(digest.on_event)
    app.state.aiocelerymon_digest = digest
    app.state.aiocelerymon_page_seen = 0.0
    return series


async def stop_sampler(app_state: Any) -> None:
    """Stop the page's queue-depth sampler and live digest (at the app's shutdown)."""
    await page_data.stop_sampler(app_state)
    await app_state.aiocelerymon_digest.aclose()


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        *page_data.routes(),
        *page_live.routes(),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]

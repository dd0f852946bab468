"""The live monitor: Celery's curses ``celery events`` redone with textual.

Same keys as Celery's monitor (celery/events/cursesmon.py): ``j``/``k`` or arrows move,
``i``/Enter task info, ``t`` traceback, ``r`` result, ``c`` revoke, ``l`` rate limit, ``q``
quit; plus ``s`` (filter by state), ``/`` (filter by name) and an events-per-second figure.
Unlike Celery's it shows the workers' active and processed counts, scrolls, and never blocks
on a remote-control call (replies are awaited in a worker task).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Input, Static

from aiocelerymon.events import State
from aiocelerymon.pipeline import Monitor

if TYPE_CHECKING:
    from aiocelerymon.client import Client
    from aiocelerymon.events import Task

__all__ = ["MonitorApp"]

#: Celery's ``EXCEPTION_STATES``: the states whose task has a traceback to show.
EXCEPTION_STATES = frozenset({"RETRY", "FAILURE", "REVOKED"})
#: Rows kept in the task table (newest first); the State keeps more.
MAX_ROWS = 1000
#: Remote-control calls from the monitor wait this long, as Celery's (1 s).
REPLY_TIMEOUT = 1.0
#: Window of the events-per-second figure.
RATE_WINDOW = 5.0

_STATE_STYLES = {
    "SUCCESS": "green",
    "FAILURE": "bold red",
    "RETRY": "yellow",
    "REVOKED": "magenta",
    "STARTED": "cyan",
}


class TextScreen(ModalScreen[None]):
    """A title and a body; any key closes it (Celery's "Press any key to continue...")."""

    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > Vertical {
        width: 90%; height: auto; max-height: 90%; border: round $accent;
        background: $surface; padding: 0 1;
    }
    TextScreen #title { text-style: bold underline; margin-bottom: 1; }
    TextScreen #hint { text-style: bold; margin-top: 1; }
    """

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, id="title", markup=False)
            yield Static(self.body, id="body", markup=False)
            yield Static("Press any key to continue...", id="hint")

    def on_key(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """One line of input; Enter submits, Escape cancels (``None``)."""

    DEFAULT_CSS = """
    PromptScreen { align: center bottom; }
    PromptScreen > Vertical { height: auto; border: round $accent; background: $surface; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, label: str, value: str = "") -> None:
        super().__init__()
        self.label = label
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.label, markup=False)
            yield Input(value=self.value, id="prompt")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class NotifyHandler(logging.Handler):
    """Log records as toasts: a stream handler would write across the screen."""

    def __init__(self, app: App[Any]) -> None:
        super().__init__(logging.WARNING)
        self.app = app

    def emit(self, record: logging.LogRecord) -> None:
        try:
            error = record.levelno >= logging.ERROR
            message = self.format(record)
            self.app.notify(message, severity="error" if error else "warning", timeout=8)
        except Exception:
            self.handleError(record)


class MonitorApp(App[int]):
    """Workers, a task table with selection, and Celery's monitor keys, fed by a :class:`Monitor`.

    Given a :class:`Client`, the app runs its own Monitor for as long as it runs; given a
    Monitor, it reads that one (shared with other consumers, e.g. a web server) and starts it
    only if nobody did, closing only what it started.
    """

    TITLE = "aiocelerymon events"
    CSS = """
    #workers { height: auto; max-height: 8; }
    #tasks { height: 1fr; }
    #selected, #status { height: 1; padding: 0 1; }
    #status { background: $boost; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "move(1)", "Down", show=False),
        Binding("k", "move(-1)", "Up", show=False),
        Binding("i", "info", "Info"),
        Binding("t", "traceback", "Traceback"),
        Binding("r", "result", "Result"),
        Binding("c", "revoke", "Revoke"),
        Binding("l", "rate_limit", "Rate limit"),
        Binding("s", "filter_state", "State filter"),
        Binding("slash", "filter_name", "Name filter"),
        Binding("q", "quit_monitor", "Quit"),
    ]

    def __init__(
        self,
        source: Client | Monitor,
        *,
        state: State | None = None,
        refresh: float = 1.0,
        limit: int | None = None,
        duration: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(source, Monitor):
            if state is not None and state is not source.state:
                raise ValueError("state: the monitor's own State is the one shown")
            self.monitor = source
        else:
            self.monitor = Monitor(source, state=state)
        self.client = self.monitor.client
        self.state = self.monitor.state
        self.refresh_interval = refresh
        self.limit = limit
        self.duration = duration
        self.clock = clock
        self.event_count = 0
        self.state_filter: frozenset[str] = frozenset()
        self.name_filter = ""
        self.selected: str | None = None
        #: Awaited once events are being received (the demo starts its workers then).
        self.on_ready = on_ready
        #: Set once the event queue is subscribed: events published after it are shown.
        self.ready = asyncio.Event()
        self._recent: deque[float] = deque()
        self._arrived = asyncio.Event()
        self._enough = asyncio.Event()

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        workers: DataTable[Any] = DataTable(id="workers", cursor_type="none", zebra_stripes=True)
        workers.add_columns("WORKER", "STATUS", "ACTIVE", "PROCESSED", "LOAD")
        tasks: DataTable[Any] = DataTable(id="tasks", cursor_type="row")
        tasks.add_columns("UUID", "TASK", "WORKER", "TIME", "STATE")
        yield workers
        yield tasks
        yield Static("No task selected", id="selected", markup=False)
        yield Static("", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.client.transport.url.redacted()
        self.query_one("#tasks", DataTable).focus()
        self.set_interval(self.refresh_interval, self.refresh_view)
        self.refresh_view()
        self._capture()

    @contextlib.contextmanager
    def logs_as_notifications(self, logger: str = "aiocelerymon") -> Iterator[None]:
        """While the screen is up, warnings of ``logger`` become toasts instead of stderr."""
        log = logging.getLogger(logger)
        saved, propagate = log.handlers[:], log.propagate
        for handler in saved:
            log.removeHandler(handler)
        notify = NotifyHandler(self)
        log.addHandler(notify)
        log.propagate = False
        try:
            yield
        finally:
            log.removeHandler(notify)
            for handler in saved:
                log.addHandler(handler)
            log.propagate = propagate

    @work(exclusive=True, group="capture")
    async def _capture(self) -> None:
        monitor = self.monitor
        remove = monitor.add_listener(self.feed)
        owned = not monitor.running
        try:
            if owned:
                await monitor.start()
            self.ready.set()
            if self.on_ready is not None:
                await self.on_ready()
            ending = asyncio.ensure_future(monitor.wait())
            enough = asyncio.ensure_future(self._enough.wait())
            try:
                await asyncio.wait(
                    {ending, enough}, timeout=self.duration, return_when="FIRST_COMPLETED"
                )
            finally:
                enough.cancel()
                ending.cancel()
            if ending.done() and not ending.cancelled():
                ending.result()  # ingestion failed: show it
        finally:
            remove()
            if owned:
                await monitor.aclose()
        self.refresh_view()
        self.exit(0)

    # -- events ------------------------------------------------------------------------------

    def feed(self, event: Mapping[str, Any], state: State | None = None) -> None:
        """Monitor listener (the State has the event already): count it, note the rate; the
        view refreshes on a timer. ``--limit`` ends the monitor after that many events."""
        self.event_count += 1
        self._recent.append(self.clock())
        self._arrived.set()
        if self.limit is not None and self.event_count >= self.limit:
            self._enough.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking as events arrive (for tests/embedding)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._arrived.clear()
                await self._arrived.wait()
        self.refresh_view()

    @property
    def events_per_second(self) -> float:
        now = self.clock()
        while self._recent and self._recent[0] < now - RATE_WINDOW:
            self._recent.popleft()
        return len(self._recent) / RATE_WINDOW

    # -- rendering ---------------------------------------------------------------------------

    def visible_tasks(self) -> list[tuple[str, Task]]:
        """Tasks newest first, filtered by state and name."""
        rows: list[tuple[str, Task]] = []
        pattern = self.name_filter
        for uuid, task in self.state.tasks_by_time():
            if self.state_filter and task.state not in self.state_filter:
                continue
            if pattern and not _name_matches(pattern, task.name or ""):
                continue
            rows.append((uuid, task))
            if len(rows) >= MAX_ROWS:
                break
        return rows

    def refresh_view(self) -> None:
        """Redraw the tables and status lines from the State."""
        workers = self.query_one("#workers", DataTable)
        workers.clear()
        for name, worker in sorted(self.state.workers.items()):
            load = ", ".join(f"{x:.2f}" for x in worker.loadavg) if worker.loadavg else "-"
            workers.add_row(
                name,
                "ONLINE" if worker.alive else "OFFLINE",
                str(worker.active if worker.active is not None else "-"),
                str(worker.processed if worker.processed is not None else "-"),
                load,
                key=name,
            )
        table = self.query_one("#tasks", DataTable)
        keep = self.selected
        table.clear()
        for uuid, task in self.visible_tasks():
            stamp = task.timestamp
            when = time.strftime("%H:%M:%S", time.localtime(float(stamp))) if stamp else ""
            state = task.state or ""
            styled: Any = state
            style = _STATE_STYLES.get(state)
            if style:
                styled = Text(state, style=style)
            host = task.worker.hostname if task.worker is not None else ""
            table.add_row(uuid, task.name or "", host, when, styled, key=uuid)
        if keep is not None and keep in self._row_keys(table):
            table.move_cursor(row=table.get_row_index(keep), scroll=False)
        self._show_selected()
        self._show_status()

    @staticmethod
    def _row_keys(table: DataTable[Any]) -> set[str]:
        return {str(key.value) for key in table.rows}

    def _show_selected(self) -> None:
        line = self.query_one("#selected", Static)
        task = self.selected_task()
        if task is None:
            line.update("No task selected")
            return
        info = task.info()
        if "runtime" in info:
            info["runtime"] = f"{float(info['runtime']):.2f}"
        if "result" in info:
            info["result"] = _abbr(str(info["result"]), 16)
        text = " ".join(f"{k}={v}" for k, v in info.items())
        line.update(f"Selected: {task.uuid} {text}")

    def status_text(self) -> str:
        """``Events: n (x.y/s)  Tasks: n  Workers: a/b online  Filter: ...``."""
        workers = self.state.workers
        alive = sum(1 for w in workers.values() if w.alive)
        text = (
            f"Events: {self.event_count} ({self.events_per_second:.1f}/s)  "
            f"Tasks: {len(self.state.tasks)}  Workers: {alive}/{len(workers)} online"
        )
        filters = []
        if self.state_filter:
            filters.append("state=" + ",".join(sorted(self.state_filter)))
        if self.name_filter:
            filters.append(f"name={self.name_filter}")
        if filters:
            text += "  Filter: " + " ".join(filters)
        return text

    def _show_status(self) -> None:
        self.query_one("#status", Static).update(self.status_text())

    # -- selection ---------------------------------------------------------------------------

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        if message.data_table.id == "tasks" and message.row_key.value is not None:
            self.selected = str(message.row_key.value)
            self._show_selected()

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        if message.data_table.id == "tasks":
            self.action_info()

    def selected_task(self) -> Task | None:
        if self.selected is None:
            return None
        return self.state.tasks.get(self.selected)

    def action_move(self, step: int) -> None:
        table = self.query_one("#tasks", DataTable)
        if step > 0:
            table.action_cursor_down()
        else:
            table.action_cursor_up()

    # -- Celery's monitor keys ---------------------------------------------------------------

    def action_info(self) -> None:
        task = self.selected_task()
        if task is None:
            self.bell()
            return
        info = task.info(extra=["state"])
        items = [("args", info.pop("args", None)), ("kwargs", info.pop("kwargs", None))]
        items += list(info.items())
        body = "\n".join(f"{k}: {v}" for k, v in items if v is not None)
        self.push_screen(TextScreen(f"Task details for {task.uuid}", body))

    def action_traceback(self) -> None:
        task = self.selected_task()
        if task is None or task.state not in EXCEPTION_STATES:
            self.bell()
            return
        body = task.traceback or "(no traceback in the events)"
        self.push_screen(TextScreen(f"Task Exception Traceback for {task.uuid}", body))

    def action_result(self) -> None:
        task = self.selected_task()
        if task is None:
            self.bell()
            return
        result = getattr(task, "result", None) or getattr(task, "exception", None) or ""
        self.push_screen(TextScreen(f"Task Result for {task.uuid}", str(result)))

    def action_revoke(self) -> None:
        task = self.selected_task()
        if task is None:
            self.bell()
            return
        self._remote(self.client.control.revoke, task.uuid)

    def action_rate_limit(self) -> None:
        task = self.selected_task()
        if task is None or not task.name:
            self.bell()
            return
        name = task.name

        def submitted(value: str | None) -> None:
            if value and value.strip():
                self._remote(self.client.control.rate_limit, name, value.strip())

        self.push_screen(PromptScreen(f"New rate limit for {name}:"), submitted)

    def action_filter_state(self) -> None:
        def submitted(value: str | None) -> None:
            if value is not None:
                words = value.replace(",", " ").upper().split()
                self.state_filter = frozenset(words)
                self.refresh_view()

        current = ",".join(sorted(self.state_filter))
        label = "Show states (e.g. FAILURE,RETRY; empty shows all):"
        self.push_screen(PromptScreen(label, current), submitted)

    def action_filter_name(self) -> None:
        def submitted(value: str | None) -> None:
            if value is not None:
                self.name_filter = value.strip()
                self.refresh_view()

        label = "Show task names containing (glob with * allowed; empty shows all):"
        self.push_screen(PromptScreen(label, self.name_filter), submitted)

    def action_quit_monitor(self) -> None:
        self.exit(0)

    @work(group="remote")
    async def _remote(self, call: Callable[..., Any], *args: Any) -> None:
        replies = await call(*args, reply=True, timeout=REPLY_TIMEOUT)
        self.push_screen(TextScreen("Remote Control Command Replies", format_replies(replies)))


def format_replies(replies: Iterable[Mapping[str, Any]] | None) -> str:
    """``host: text`` per reply, Celery's wording when nobody answered."""
    lines = []
    for reply in replies or ():
        for host, response in reply.items():
            text = ""
            if isinstance(response, Mapping):
                text = str(response.get("error") or response.get("ok") or "")
            lines.append(f"{host}: {text}")
    return "\n".join(lines) or "No replies received in 1s deadline."


def _name_matches(pattern: str, name: str) -> bool:
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


def _abbr(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."

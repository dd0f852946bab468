"""Output, as Celery's CLI prints it: click's colours, ``->  node: OK`` lines, ``--list``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import textwrap
from collections.abc import Callable, Mapping
from pprint import pformat
from typing import IO, Any

from aiocelerymon.control.commands import Command, CommandKind, commands_of_kind

# click's colour codes (``click.style``) and the regex click.echo strips them with.
_COLOURS = {"red": 31, "green": 32, "cyan": 36, "white": 37}
_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")


def _indent(text: str, width: int) -> str:
    return "\n".join(" " * width + line for line in text.split("\n"))


def _isatty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):
        return False


class Output:
    """Celery's reply formatting: ``->  node: OK`` lines, indented bodies, click's colours.

    Colours are added unless ``no_color`` and stripped again on a stream that is not a
    terminal, exactly as Celery's click-based output does, so piped output has none. As in
    Celery, JSON objects are highlighted with pygments when it is installed, which also ends
    them with a newline (the indented blank line Celery prints after them).
    """

    def __init__(
        self,
        stdout: IO[str],
        stderr: IO[str],
        *,
        no_color: bool = False,
        quiet: bool = False,
    ) -> None:
        self.stdout = stdout
        self.stderr = stderr
        self.no_color = no_color
        self.quiet = quiet
        self._highlighter: Callable[[str], str] | None = None

    # -- primitives --------------------------------------------------------------------------

    def style(self, text: str, fg: str, bold: bool = False) -> str:
        if self.no_color:
            return text
        codes = f"\033[{_COLOURS[fg]}m" + ("\033[1m" if bold else "")
        return f"{codes}{text}\033[0m"

    def _write(self, stream: IO[str], text: str) -> None:
        if self.no_color or not _isatty(stream):
            text = _ANSI.sub("", text)
        stream.write(text + "\n")
        stream.flush()

    def echo(self, text: str = "") -> None:
        self._write(self.stdout, text)

    def error(self, text: str) -> None:
        self._write(self.stderr, text)

    def highlight(self, text: str) -> str:
        if self._highlighter is None:
            self._highlighter = _pygments_highlighter() or (lambda s: s)
        return self._highlighter(text)

    # -- replies -----------------------------------------------------------------------------

    @property
    def ok(self) -> str:
        return self.style("OK", fg="green", bold=True)

    @property
    def failed(self) -> str:
        return self.style("ERROR", fg="red", bold=True)

    def pretty(self, value: Any) -> tuple[str, str]:
        """``(status, text)`` for one node's reply value."""
        if isinstance(value, list):
            return self.ok, self.pretty_list(value)
        if isinstance(value, dict):
            if "ok" in value:
                return self.ok, _indent(self.pretty(value["ok"])[1], 4)
            if "error" in value:
                return self.failed, _indent(self.pretty(value["error"])[1], 4)
            text = json.dumps(value, sort_keys=True, indent=4)
            if not self.no_color:
                text = self.highlight(text)
            return self.ok, text
        if isinstance(value, str):
            return self.ok, value
        return self.ok, pformat(value)

    def pretty_list(self, items: list[Any]) -> str:
        if not items:
            return "- empty -"
        bullet = self.style("*", fg="white")
        return "\n".join(f"{bullet} {item}" for item in items)

    def reply(self, reply: Mapping[str, Any], show_body: bool) -> None:
        """Print one ``{node: value}`` reply as it arrives."""
        if not reply:
            return
        node = next(iter(reply))
        status, text = self.pretty(reply[node])
        title = f"{self.style(f'{node}: ', fg='cyan', bold=True)}{status}"
        arrow = "" if self.quiet else f"{self.style('->', fg='white', bold=True)} "
        self.echo(f"{arrow} {title}")
        if show_body:
            self.echo(_indent(text, 4))

    def summary(self, count: int) -> None:
        self.echo(f"\n{count} {'node' if count == 1 else 'nodes'} online.")

    def json(self, value: Any) -> None:
        self.echo(json.dumps(value))

    def command_list(self, kind: CommandKind, catalogue: Mapping[str, Command]) -> None:
        """``--list``: the visible commands of one kind with their arguments, click-style."""
        rows = [
            (f"{name} {info.signature}" if info.signature else name, info.help)
            for name, info in commands_of_kind(kind, catalogue).items()
        ]
        width = max(min(shutil.get_terminal_size().columns, 80) - 2, 50)
        first = min(max((len(term) for term, _ in rows), default=0), 30) + 2
        wrap = max(width - first - 2, 10)
        lines = [f"{kind.capitalize()} Commands:"]
        for term, help_text in rows:
            wrapped = textwrap.wrap(help_text, wrap) or [""]
            if len(term) <= first - 2:
                lines.append(f"  {term.ljust(first)}{wrapped[0]}".rstrip())
            else:
                lines.append(f"  {term}")
                lines.append(f"  {' ' * first}{wrapped[0]}".rstrip())
            lines.extend(f"  {' ' * first}{line}" for line in wrapped[1:])
        self.echo("\n".join(lines))


def _pygments_highlighter() -> Callable[[str], str] | None:
    if importlib.util.find_spec("pygments") is None:
        return None
    try:
        pygments = importlib.import_module("pygments")
        formatters = importlib.import_module("pygments.formatters")
        lexers = importlib.import_module("pygments.lexers")
        lexer, formatter = lexers.PythonLexer(), formatters.Terminal256Formatter()
    except Exception:
        return None

    def highlight(text: str) -> str:
        return str(pygments.highlight(text, lexer, formatter))

    return highlight

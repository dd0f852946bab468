"""The README's Python examples run as written (issue 19): complete scripts, no top-level
``await``, each executed here against a private in-memory broker."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
#: Scripts, not the pytest example (a test module, run by `nox -s examples`).
SCRIPTS = [block for block in BLOCKS if "def test_" not in block]


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 4


@pytest.mark.parametrize("source", SCRIPTS, ids=[f"block{i}" for i in range(len(SCRIPTS))])
def test_example_is_a_complete_script(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Top-level `await` is a SyntaxError in a script.
    code = compile(source, "README.md", "exec")
    assert "asyncio.run(" in source
    if "create_transport" in source:
        return  # waits for a real worker's pong: compiled, not run
    real_sleep = asyncio.sleep

    async def short_sleep(delay: float, *args: Any) -> Any:
        return await real_sleep(min(delay, 0.01), *args)

    monkeypatch.setattr(asyncio, "sleep", short_sleep)
    url = f"memory://readme-{uuid.uuid4().hex}"
    # Every example names the same local Redis; here a private in-memory broker stands in.
    code = compile(source.replace("redis://localhost:6379/0", url), "README.md", "exec")
    exec(code, {"__name__": "__main__"})

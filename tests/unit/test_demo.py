"""The README's main job runs on the embedded broker and shows what it promises."""

from __future__ import annotations

import re

from aiocelerymon import demo


async def test_demo_pings_both_nodes_and_dumps_their_events(capsys):
    assert await demo.main(tasks=2, timeout=5.0) == 0
    out = capsys.readouterr().out
    assert "->  demo1@localhost: OK\n        pong" in out
    assert "->  demo2@localhost: OK" in out
    assert "2 nodes online." in out
    # worker-online + 2 x (received, succeeded|failed) per node, with tz-aware UTC timestamps.
    lines = [ln for ln in out.splitlines() if re.match(r"demo\d@localhost \[.*\+00:00\] ", ln)]
    assert len(lines) == 2 * (1 + 2 * 2)
    assert sum("worker online" in ln for ln in lines) == 2

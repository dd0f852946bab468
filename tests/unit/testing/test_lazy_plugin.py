"""The plugin is loaded by every pytest run where aiocelerymon is installed: it must be cheap."""

from __future__ import annotations

import json
import subprocess
import sys

#: What loading the plugin must not import: they come with the fixtures that use them.
HEAVY = [
    "aiocelerymon.client",
    "aiocelerymon.control",
    "aiocelerymon.events",
    "aiocelerymon.transports",
    "aiocelerymon.testing.helpers",
    "aio_pika",
    "redis",
    "celery",
]


def test_loading_the_plugin_imports_no_client_protocol_or_driver() -> None:
    code = (
        "import json, sys\n"
        "import aiocelerymon.testing.plugin\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert json.loads(out) == []


def test_the_public_names_still_import() -> None:
    code = (
        "import aiocelerymon, aiocelerymon.testing as t\n"
        "from aiocelerymon import Client, create_transport\n"
        "from aiocelerymon.testing import FakeWorker, collect_events\n"
        "assert set(aiocelerymon.__all__) <= set(dir(aiocelerymon))\n"
        "assert all(hasattr(t, n) for n in t.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

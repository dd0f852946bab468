"""A real Prometheus server (Debian's package) scrapes ``aiocelerymon exporter``.

One real Celery worker on Redis runs tasks; Prometheus scrapes the exporter every second and is
queried through its HTTP API: the target is up, the task counters and the worker gauge arrive
with celery-exporter's names and labels, and the documented alert rules load and evaluate.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.celery_worker import REPO_ROOT, celery_worker
from tests.support.interop import Variant, variant_url
from tests.support.metrics import ExporterProcess, free_port, ours

pytestmark = [pytest.mark.integration, pytest.mark.redis]

APP = "tests.integration.celery_app"
DEADLINE = 60.0
RULES = REPO_ROOT / "docs" / "alerts" / "aiocelerymon.rules.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]

    def wait(self, query: str, ok: Any, what: str) -> list[dict[str, Any]]:
        """Query until ``ok(result)`` holds: the scrape (and rule evaluation) happened."""
        end = time.monotonic() + DEADLINE
        result: list[dict[str, Any]] = []
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            try:
                result = self.api("query", query=query)["result"]
            except OSError:  # still starting
                result = []
            if ok(result):
                return result
            time.sleep(0.25)
        raise AssertionError(f"{what}: {query} gave {result} for {DEADLINE}s")


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Prometheus, ExporterProcess]]:
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is not installed (scripts/test installs Debian's package)")
    tmp = tmp_path_factory.mktemp("prometheus")
    variant = Variant("redis-own", "redis", own=True)
    with (
        variant_url(request, variant) as url,
        celery_worker(url, "prom@interop", config=variant.config()),
        ours(url, tmp, options=["--queue-interval", "1", "--static-label", "cluster=ci"]) as mine,
    ):
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n  - job_name: celery\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{mine.port}']}}]\n"
        )
        port = free_port()
        log = tmp / "prometheus.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            yield Prometheus(f"http://127.0.0.1:{port}", proc, log), mine
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _send(broker_url: str, n: int) -> None:
    from celery import Celery

    app = Celery("sender", broker=broker_url)
    app.conf.broker_connection_retry_on_startup = True
    try:
        for i in range(n):
            app.send_task(f"{APP}.add", (i, 1))
        app.send_task(f"{APP}.fail")
    finally:
        app.close()


def test_prometheus_scrapes_the_exporter(stack: tuple[Prometheus, ExporterProcess]) -> None:
    prometheus, exporter = stack
    prometheus.wait('up{job="celery"} == 1', bool, "the exporter target is up")
    # The worker's heartbeat through exporter and scrape.
    prometheus.wait('celery_worker_up{hostname="interop",cluster="ci"} == 1', bool, "worker up")
    broker_url = _broker_url(exporter)
    _send(broker_url, 5)
    result = prometheus.wait(
        f'celery_task_succeeded_total{{name="{APP}.add"}} == 5', bool, "five successes"
    )
    assert result[0]["metric"] | {"__name__": "x"} == {
        "__name__": "x",
        "name": f"{APP}.add",
        "hostname": "interop",
        "queue_name": "celery",
        "cluster": "ci",
        "instance": f"127.0.0.1:{exporter.port}",
        "job": "celery",
    }
    prometheus.wait(
        f'celery_task_failed_total{{name="{APP}.fail",exception="RuntimeError"}} == 1',
        bool,
        "the failure, by exception class",
    )
    # Pre-created at 0 (celery-exporter's inc(0)), so increase() sees the first retry.
    prometheus.wait(f'celery_task_retried_total{{name="{APP}.add"}} == 0', bool, "zero counters")
    prometheus.wait(
        f'histogram_quantile(0.5, celery_task_runtime_bucket{{name="{APP}.add"}}) > 0',
        bool,
        "the runtime histogram",
    )
    prometheus.wait('celery_queue_length{queue_name="celery"} == 0', bool, "the queue gauge")
    prometheus.wait("aiocelerymon_event_stream_up == 1", bool, "the health series")
    prometheus.wait(
        'aiocelerymon_worker_events_lost_estimate{hostname="interop"} == 0', bool, "no loss"
    )


def test_the_documented_alert_rules_load_and_stay_quiet(
    stack: tuple[Prometheus, ExporterProcess],
) -> None:
    prometheus, _ = stack
    docs = (REPO_ROOT / "docs" / "metrics.md").read_text()
    assert RULES.read_text().split("groups:", 1)[1] in docs, "docs/metrics.md shows the rules"
    end = time.monotonic() + DEADLINE
    while True:
        groups = prometheus.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        # Evaluated at least once (Prometheus' zero time before that), all without error.
        evaluated = [r for r in rules if not r.get("lastEvaluation", "0001").startswith("0001")]
        if len(rules) == 5 and len(evaluated) == 5 and all(r["health"] == "ok" for r in rules):
            break
        assert time.monotonic() < end, rules
        time.sleep(0.25)
    names = {r["name"] for r in rules}
    assert "CeleryMonitorBlind" in names
    # The cluster is healthy: the blindness alert does not fire.
    prometheus.wait("aiocelerymon_event_stream_up == 1", bool, "stream up")
    alerts = prometheus.api("alerts")["alerts"]
    assert not [a for a in alerts if a["labels"]["alertname"] == "CeleryMonitorBlind"]


def _broker_url(exporter: ExporterProcess) -> str:
    argv = exporter.proc.args
    assert isinstance(argv, list)
    return str(argv[argv.index("--broker-url") + 1])

"""A real Prometheus (Debian's ``prometheus`` package, ``make test-deps`` installs it) scrapes the demo's ``/metrics``
with the scraper's token, and its HTTP API answers what the rows say; the shipped alert rules pass ``promtool``
(syntax and their unit tests), and every metric name the rules and the Grafana dashboard use is in a real scrape."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from long_time_task.models import TERMINAL_STATES, ApiToken, LongTimeTask, TaskState
from tests.conftest import unavailable
from tests.integration.metrics_cluster import SCRAPER_TOKEN, Cluster, cluster
from tests.workers import ROOT, free_port, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RULES = ROOT / "ops" / "prometheus" / "long_time_task.rules.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "long_time_task.rules.test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "long_time_task.json"
METRIC_NAME = re.compile(r"\blong_time_task_[a-z_]+")


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable([f"{name} (Debian's prometheus package: make test-deps)"])
    assert path is not None
    return path


class Prometheus:
    """``prometheus`` on a free port, scraping one target every second, stopped by PID."""

    def __init__(self, target_port: int, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES}\n"
            "scrape_configs:\n"
            "  - job_name: long_time_task\n"
            "    metrics_path: /metrics\n"
            f"    authorization:\n      type: Bearer\n      credentials: {SCRAPER_TOKEN}\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self.ready, timeout=60, interval=0.2, what="Prometheus to be ready")

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError((self.workdir / "prometheus.log").read_text(errors="replace"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the local test server
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """An instant query's values, keyed by the labels' values joined with commas."""
        data = self.api("query", query=expr)
        return {",".join(v for _, v in sorted(r["metric"].items())): float(r["value"][1]) for r in data["result"]}

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.log.close()


@pytest.fixture
def site(worker_database: str, tmp_path: Path) -> Iterator[Cluster]:
    with cluster(worker_database, tmp_path / "multiproc", tmp_path) as running:
        yield running


@pytest.fixture
def prometheus(site: Cluster, tmp_path: Path) -> Iterator[Prometheus]:
    server = Prometheus(site.web.port, tmp_path)
    yield server
    server.stop()


def test_prometheus_scrapes_the_demo_with_the_token_and_answers_what_the_rows_say(
    site: Cluster, prometheus: Prometheus, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("prom-user", password="prom-password")
    token = ApiToken.issue(user)[1]
    for task_type in ("test_echo", "test_echo", "test_echo", "test_fail"):
        status, body = site.request("POST", "/api/tasks/", token, {"task_type": task_type, "params": {}})
        assert status == 201, body
    wait_for(
        lambda: not LongTimeTask.objects.exclude(state__in=TERMINAL_STATES).exists(),
        timeout=60,
        interval=0.2,
        what="every task to end",
    )
    # The configuration is loaded a moment after Prometheus says it is ready.
    targets = wait_for(lambda: prometheus.api("targets")["activeTargets"], timeout=30, what="the scrape target")
    assert [t["labels"]["job"] for t in targets] == ["long_time_task"]

    expected = {"FAILED": 1.0, "FINISHED": 3.0}

    def scraped_outcomes() -> bool:
        got = prometheus.query("sum by (state) (long_time_task_tasks_finished_total)")
        return {state: value for state, value in got.items() if value} == expected

    wait_for(scraped_outcomes, timeout=30, interval=0.5, what=f"Prometheus to see {expected}")
    health = prometheus.api("targets")["activeTargets"][0]
    assert health["health"] == "up", health
    finished_rows = LongTimeTask.objects.filter(state=TaskState.FINISHED).count()  # rows of earlier tests too
    assert finished_rows >= 3
    assert prometheus.query('long_time_task_tasks{state="FINISHED"}') == {
        f"long_time_task_tasks,127.0.0.1:{site.web.port},long_time_task,FINISHED": float(finished_rows)
    }
    assert prometheus.query("sum(long_time_task_tasks_submitted_total)") == {"": 4.0}
    assert prometheus.query("sum(long_time_task_queue_wait_seconds_count)") == {"": 4.0}

    # The alert rules are loaded and evaluated against the live series (none fires on a healthy site).
    def rules_evaluated() -> list[Any]:
        groups = prometheus.api("rules")["groups"]
        if not groups:
            return []  # the rule files are loaded a moment after Prometheus says it is ready
        assert [g["name"] for g in groups] == ["long_time_task"]
        rules = groups[0]["rules"]
        assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
        return [rule for rule in rules if rule["health"] == "ok"] if len(rules) >= 5 else []

    assert len(wait_for(rules_evaluated, timeout=30, interval=0.5, what="the alert rules to be evaluated")) >= 5
    # The only alerts are "no consumer" ones (pending: `for: 2m`), each for a queue this site's workers do not read
    # (the cluster's worker reads "default" only), exactly the queues the scrape says nobody reads.
    unread = {
        dict(labels)["queue_name"]
        for labels, value in site.scrape()["long_time_task_queue_consumers"].items()
        if value == 0
    }
    assert "default" not in unread and "maintenance" in unread

    def no_consumer_alerts() -> set[str]:
        alerts = prometheus.api("alerts")["alerts"]
        assert {alert["labels"]["alertname"] for alert in alerts} <= {"LongTimeTaskQueueHasNoConsumer"}, alerts
        assert all(alert["state"] == "pending" for alert in alerts), alerts
        return {alert["labels"]["queue_name"] for alert in alerts}

    wait_for(lambda: no_consumer_alerts() == unread, timeout=30, interval=0.5, what=f"alerts for {sorted(unread)}")
    # Every query of the Grafana dashboard is valid PromQL to this Prometheus.
    for expr in dashboard_queries():
        prometheus.api("query", query=expr.replace("$__rate_interval", "1m").replace("$queue_name", ".*"))


def test_the_alert_rules_pass_promtool() -> None:
    promtool = binary("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def dashboard_queries(*, variables: bool = False) -> list[str]:
    """The panels' PromQL; with ``variables``, also the template variables' queries (Grafana's
    ``label_values(...)``, not PromQL)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    if variables:
        queries += [str(var.get("definition", "")) for var in dashboard["templating"]["list"]]
    return [q for q in queries if q]


def test_every_metric_name_of_the_rules_and_the_dashboard_is_in_a_real_scrape(site: Cluster) -> None:
    scraped = set(site.scrape())
    used = set(METRIC_NAME.findall(RULES.read_text())) | {
        name for query in dashboard_queries(variables=True) for name in METRIC_NAME.findall(query)
    }
    assert len(used) >= 10, used
    assert sorted(used - scraped) == []

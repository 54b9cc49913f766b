"""Counters exact across processes (issue 17, item 1): two gunicorn worker processes take the submits and the
scrapes, a prefork worker's two children run the tasks, all sharing one ``PROMETHEUS_MULTIPROC_DIR``; whichever
web process answers ``/metrics``, the counters equal what the rows say."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from long_time_task.models import TERMINAL_STATES, ApiToken, LongTimeTask, TaskState
from tests.integration.metrics_cluster import cluster, total
from tests.workers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SUBMITS = [
    *[("test_echo", {"n": i}) for i in range(6)],
    *[("test_fail", {"message": f"boom {i}"}) for i in range(3)],
    ("test_flaky", {"failures": 1}),  # fails once with a temporary error, is retried, then finishes
]


def test_counters_from_every_process_equal_what_the_rows_say(
    worker_database: str, tmp_path: Path, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_user("metrics-user", password="metrics-password")
    token = ApiToken.issue(user)[1]
    with cluster(worker_database, tmp_path / "prometheus", tmp_path) as site:
        ids = []
        for task_type, params in SUBMITS:
            status, body = site.request("POST", "/api/tasks/", token, {"task_type": task_type, "params": params})
            assert status == 201, body
            ids.append(LongTimeTask.objects.latest("id").id)
        # One more, delayed by an hour (held in the database), cancelled before it starts.
        status, body = site.request("POST", "/api/tasks/", token, {"task_type": "test_echo", "countdown": 3600})
        assert status == 201, body
        delayed = LongTimeTask.objects.latest("id").id
        status, body = site.request("POST", f"/api/tasks/{delayed}/cancel/", token)
        assert status == 200, body

        def all_ended() -> bool:
            return not LongTimeTask.objects.exclude(state__in=TERMINAL_STATES).exists()

        wait_for(all_ended, timeout=60, interval=0.2, what="every task to end")
        # This test's rows for the counters (others may remain from earlier tests); every row for the gauges.
        mine = LongTimeTask.objects.filter(id__in=[*ids, delayed])
        rows = list(mine.values("task_type", "queue", "state", "error_code", "attempts"))
        every_state = Counter(LongTimeTask.objects.values_list("state", flat=True))

        # Two scrapes: gunicorn hands them to either web process; both read every process's files.
        scrapes = [site.scrape() for _ in range(4)]
        # Several processes wrote counts: the web processes that took submits and the worker's children.
        writers = {path.name.rsplit("_", 1)[1] for path in site.directory.glob("counter_*.db")}
        assert len(writers) >= 3, sorted(site.directory.iterdir())

    expected_submitted = Counter((r["task_type"], r["queue"]) for r in rows)
    expected_finished = Counter((r["task_type"], r["state"], r["error_code"]) for r in rows)
    expected_started: Counter[str] = Counter()
    expected_retried: Counter[str] = Counter()
    for r in rows:
        expected_started[r["task_type"]] += r["attempts"]
        expected_retried[r["task_type"]] += max(r["attempts"] - 1, 0)
    assert +expected_retried == {"test_flaky": 1}
    assert expected_finished[("test_echo", TaskState.CANCELLED, "cancelled")] == 1

    for samples in scrapes:
        assert total(samples["long_time_task_tasks_submitted_total"], ("name", "queue_name")) == expected_submitted
        finished = total(samples["long_time_task_tasks_finished_total"], ("name", "state", "error_code"))
        assert finished == expected_finished
        assert total(samples["long_time_task_tasks_started_total"], ("name",)) == {
            (k,): v for k, v in expected_started.items() if v
        }
        assert total(samples["long_time_task_tasks_retried_total"], ("name",)) == {("test_flaky",): 1}
        # Every claim observed its queue wait once, and every attempt the executor ended its run time once.
        assert total(samples["long_time_task_queue_wait_seconds_count"], ("name",)) == {
            (k,): v for k, v in expected_started.items() if v
        }
        assert total(samples["long_time_task_runtime_seconds_count"], ("name",)) == {
            (k,): v for k, v in expected_started.items() if v
        }
        assert total(samples["long_time_task_tasks_recovered_total"], ("name",)) == {}
        # The gauges, read from the database by the web process that answered.
        assert {dict(k)["state"]: v for k, v in samples["long_time_task_tasks"].items() if v} == every_state
        assert samples["long_time_task_oldest_waiting_seconds"][(("queue_name", "default"),)] == 0
        up = {(("source", name),): 1 for name in ("broker", "database", "workers")}
        assert samples["long_time_task_metrics_source_up"] == up
        # The cluster's worker reads "default" (the session's worker, if it runs, too); nobody reads "priority".
        assert samples["long_time_task_workers_alive"][()] >= 1
        consumers = {dict(k)["queue_name"]: v for k, v in samples["long_time_task_queue_consumers"].items()}
        assert consumers["default"] >= 1 and consumers["priority"] == 0
        assert samples["long_time_task_broker_queue_length"][(("queue_name", "default"),)] == 0


def test_a_worker_host_serves_its_counters_on_its_own_port_without_the_gauges(
    worker_database: str, start_worker: Any, tmp_path: Path
) -> None:
    import urllib.request

    from tests.integration.metrics_cluster import parse
    from tests.workers import free_port

    directory = tmp_path / "multiproc"
    directory.mkdir()
    port = free_port()
    # A queue only this worker reads (the session's worker reads "default"), named on the rows: publish sends each
    # row to its own queue.
    start_worker(
        queues="metrics-exporter-test",
        concurrency=2,
        name="exporter",
        PROMETHEUS_MULTIPROC_DIR=str(directory),
        LONG_TIME_TASK_WORKER_METRICS_PORT=str(port),
    )
    tasks = [LongTimeTask.objects.create(task_type="test_echo", queue="metrics-exporter-test") for _ in range(3)]
    from long_time_task.dispatch import publish

    for task in tasks:
        assert publish(task, attempt=1)

    def scraped() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
            samples = parse(response.read().decode())
        finished = total(samples.get("long_time_task_tasks_finished_total", {}), ("name", "state"))
        return samples if finished == {("test_echo", "FINISHED"): 3} else {}

    samples = wait_for(scraped, timeout=60, interval=0.3, what="the worker's port to count 3 finished tasks")
    assert total(samples["long_time_task_tasks_started_total"], ("name",)) == {("test_echo",): 3}
    # Counters only: the database and broker gauges are the web side's, served once.
    assert not {"long_time_task_tasks", "long_time_task_oldest_waiting_seconds"} & set(samples)
    assert LongTimeTask.objects.filter(id__in=[task.id for task in tasks], state=TaskState.FINISHED).count() == 3

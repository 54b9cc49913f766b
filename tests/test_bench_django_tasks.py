"""The django.tasks comparison's pure parts (bench/django_tasks_common.py): what each system runs, and how the
repetitions are summarised. The harness itself runs real workers; ``python -m bench.django_tasks --n 20 --reps 1
--out /tmp/smoke.json`` is its smoke run."""

from __future__ import annotations

import pytest

from bench.django_tasks_common import (
    BACKENDS,
    LABELS,
    SYSTEMS,
    percentile,
    rotated,
    summarise,
    tasks_setting,
    worker_command,
)


def run(system: str, workload: str, rep: int, rate: float, **extra) -> dict:
    return {"system": system, "workload": workload, "rep": rep, "e2e_rate": rate, **extra}


def test_every_system_has_a_label_and_every_django_system_a_backend():
    assert set(LABELS) == set(SYSTEMS)
    assert set(BACKENDS) == set(SYSTEMS) - {"raw"}


def test_tasks_setting_names_the_systems_backend_on_the_workers_queue():
    assert tasks_setting("dtdb") == {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    assert tasks_setting("ltt")["default"]["BACKEND"] == "long_time_task.django_tasks.backend.LongTimeTaskBackend"
    assert tasks_setting("raw") == {}  # the baseline is a plain Celery task


def test_celery_systems_get_one_prefork_worker_and_the_database_backend_one_db_worker_per_process():
    (celery,) = worker_command("dtc", 3, "py", 0.1)
    assert celery[:3] == ["py", "-m", "celery"]
    assert celery[celery.index("-c") + 1] == "3" and celery[celery.index("-Q") + 1] == "default"
    workers = worker_command("dtdb", 3, "py", 0.25)
    assert len(workers) == 3
    assert all(w[:3] == ["py", "manage.py", "db_worker"] and w[w.index("--interval") + 1] == "0.25" for w in workers)
    assert len({w[w.index("--worker-id") + 1] for w in workers}) == 3  # each one's id is its own
    with pytest.raises(ValueError, match="unknown system"):
        worker_command("nope", 1, "py", 0.1)


def test_percentile_is_the_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]  # unordered on purpose
    assert percentile(values, 0.50) == 51.0
    assert percentile(values, 0.99) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_each_system_leads_once_per_round_of_repetitions():
    assert [rotated(["a", "b", "c"], rep)[0] for rep in range(3)] == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_summary_gives_median_and_range_and_the_ratio_to_the_same_repetitions_baseline():
    runs = [
        run("raw", "noop", 0, 100.0),
        run("raw", "noop", 1, 200.0),
        run("raw", "noop", 2, 400.0),
        run("ltt", "noop", 0, 50.0, cpu_split_per_1000={"enqueuer": 1.0, "worker_main": 2.0}),
        run("ltt", "noop", 1, 150.0, cpu_split_per_1000={"enqueuer": 3.0, "worker_main": 2.0}),
        run("ltt", "noop", 2, 100.0, cpu_split_per_1000={"enqueuer": 2.0, "worker_main": 5.0}),
        run("dtdb", "progress", 0, 10.0, cpu_split_per_1000={"worker_pool": 4.0}),
    ]
    summary = summarise(runs)
    ltt = summary["noop"]["ltt"]
    assert ltt["e2e_rate"] == {"median": 100.0, "min": 50.0, "max": 150.0}
    # per repetition: 0.5, 0.75, 0.25; not the ratio of the medians (100 / 200)
    assert ltt["ratio_to_baseline"] == {"median": 0.5, "min": 0.25, "max": 0.75}
    assert ltt["cpu_split_per_1000"] == {"enqueuer": 2.0, "worker_main": 2.0}
    assert summary["noop"]["raw"]["ratio_to_baseline"]["median"] == 1.0
    # the progress workload's ratio is to the baseline's no-op runs; a metric no run has is left out
    assert summary["progress"]["dtdb"]["ratio_to_baseline"]["median"] == 0.1
    assert "latency_p50_ms" not in summary["progress"]["dtdb"]
    assert "raw" not in summary["progress"]


def test_summary_without_a_baseline_has_no_ratio():
    assert "ratio_to_baseline" not in summarise([run("dtc", "noop", 0, 10.0)])["noop"]["dtc"]

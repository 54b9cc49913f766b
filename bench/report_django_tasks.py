"""The django.tasks comparison's section of docs/performance.md, and its plot, from bench/results-django-tasks.json
(``python -m bench.django_tasks``). Called by ``bench.report``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .django_tasks_common import BASELINE, ON_CELERY  # noqa: E402
from .report import cell  # noqa: E402

CPU_PARTS = {
    "enqueuer": "enqueuing process",
    "worker_main": "Celery worker: main process",
    "worker_pool": "processes that run the tasks",
    "postgresql": "PostgreSQL",
    "redis": "Redis",
}


def short(report: dict[str, Any], system: str) -> str:
    return str(report["labels"][system]).split(":")[0].split(",")[0]


def plot(report: dict[str, Any], path: Path) -> None:
    summary, workloads = report["summary"], list(report["workloads"])
    systems = [s for s in report["labels"] if any(s in summary.get(w, {}) for w in workloads)]
    fig, (rates, cpus) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(workloads)
    for i, workload in enumerate(workloads):
        rows = summary.get(workload, {})
        xs = [x + (i - (len(workloads) - 1) / 2) * width for x in range(len(systems))]
        for ax, metric in ((rates, "e2e_rate"), (cpus, "cpu_per_1000")):
            m = [rows.get(s, {}).get(metric) for s in systems]
            values = [v["median"] if v else 0 for v in m]
            lows = [v["median"] - v["min"] if v else 0 for v in m]
            highs = [v["max"] - v["median"] if v else 0 for v in m]
            ax.bar(xs, values, width, yerr=[lows, highs], capsize=3, label=report["workloads"][workload])
    for ax, ylabel in ((rates, "end-to-end tasks/s"), (cpus, "CPU ms per task, all processes")):
        ax.set_xticks(range(len(systems)), [textwrap.fill(short(report, s), 16) for s in systems], fontsize=7)
        ax.set_ylabel(f"{ylabel}\n(median, min–max)", fontsize=8)
        ax.legend(fontsize=7)
    a = report["args"]
    fig.suptitle(
        f"Django's tasks API: {a['n']} tasks per run, concurrency {a['concurrency']}, "
        f"{plural(a['reps'], 'repetition')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def latency(s: dict[str, Any]) -> str:
    if "latency_p50_ms" not in s:
        return "-"
    return f"{s['latency_p50_ms']['median']:,.0f} / {s['latency_p99_ms']['median']:,.0f}"


def ratio(s: dict[str, Any]) -> str:
    r = s.get("ratio_to_baseline")
    return f"{r['median']:.2f} ({r['min']:.2f}–{r['max']:.2f})" if r else "-"


def tables(report: dict[str, Any], workload: str) -> list[str]:
    rows = report["summary"].get(workload, {})
    lines = [
        "| system | end-to-end tasks/s | ratio to raw Celery | enqueue tasks/s (workers running) | CPU s per 1,000 "
        "tasks (all processes) | whole machine | DB transactions per task | submit→start latency p50 / p99 (ms) |\n",
        "|---|---|---|---|---|---|---|---|\n",
    ]
    for system, s in rows.items():
        lines.append(
            f"| {report['labels'][system]} | {cell(s, 'e2e_rate')} | {ratio(s)} | {cell(s, 'enqueue_rate')} | "
            f"{cell(s, 'cpu_per_1000', 2)} | {cell(s, 'machine_cpu_per_1000', 2)} | {cell(s, 'db_xacts_per_task', 2)} "
            f"| {latency(s)} |\n"
        )
    lines += [
        "\nWhere the CPU goes (medians, ms per task):\n\n",
        "| system | " + " | ".join(CPU_PARTS.values()) + " | sum |\n",
        "|---|" + "---|" * (len(CPU_PARTS) + 1) + "\n",
    ]
    for system, s in rows.items():
        split = s.get("cpu_split_per_1000", {})
        parts = " | ".join(f"{split[p]:.2f}" if p in split else "-" for p in CPU_PARTS)
        lines.append(f"| {report['labels'][system]} | {parts} | {sum(split.values()):.2f} |\n")
    return lines


def section(report: dict[str, Any], img: Path) -> list[str]:
    plot(report, img / "django-tasks.png")
    a, m, v = report["args"], report["machine"], report.get("versions", {})
    systems = list(report["labels"])
    versions = ", ".join(f"{name} {version}" for name, version in v.items())
    lines = [
        "\n## Django's tasks API: this backend, django-tasks-db and django-tasks-celery\n\n",
        f"`{report['command']}` enqueues the same standard `@task` functions (`bench/django_tasks_workload.py`)\n",
        "through each backend, one system after another in rotated order, "
        f"{plural(a['reps'], 'repetition')}, in one run; raw Celery is the\n",
        "baseline of the ratios (its no-op runs, in the same repetition). Django 6's API needs Python 3.12, and\n",
        "django-tasks-celery supports nothing older than Django 6.0, so this part runs on Python "
        f"{m['python']} ({versions}),\n",
        f"apart from the Django 5.2 runs above. {m['cpus']} cores, {m['memory_gb']} GiB, {m['platform']}.\n\n",
        f"- workload: {a['n']} tasks per run, enqueued by one process (`.enqueue()`) while the workers run;\n",
        "  no-op tasks, then tasks that report progress "
        f"{a['steps']} times each (in even steps up to 100 %, with a message)\n",
        f"- workers: {a['concurrency']} processes for every system: a Celery worker with {a['concurrency']} "
        "prefork processes (acks_late,\n",
        "  prefetch 1) for " + ", ".join(short(report, s) for s in systems if s in ON_CELERY) + ";\n",
        f"  {a['concurrency']} `manage.py db_worker` processes for django-tasks-db, polling every "
        f"{a['db_interval']:g} s when idle\n",
        "  (`--interval`; its default, 1 s, would add up to a second of latency)\n",
        "- this project: metrics on (multiprocess mode), the registry's defaults; django-tasks-celery as its README\n",
        "  sets it up: a Redis result backend (the broker's server) with `CELERY_RESULT_EXTENDED`\n",
        "- progress: this project's `context.progress()` (written at most once per\n",
        "  `LONG_TIME_TASK_PROGRESS_INTERVAL`, the first at once); django-tasks-celery: Celery's\n",
        '  `update_state(state="PROGRESS")` on every call; django-tasks-db has no progress API, so its tasks\n',
        "  `UPDATE` their own row (its `return_value` column) on every call, the least a project could add\n",
        "- measured: the rate from the first enqueue to the last `task_finished` (sent once the outcome is\n",
        "  written; django-tasks-celery sends it just before Celery stores the result); submit→start latency from\n",
        "  the time passed as the task's argument to `task_started` (raw Celery: its handler's start); CPU and\n",
        "  DB transactions as in the tables above (start-up and shutdown left out)\n\n",
        "![Django's tasks API](img/django-tasks.png)\n",
    ]
    for workload, title in report["workloads"].items():
        if workload not in report["summary"]:
            continue
        extra = "" if workload == "noop" else " (the ratio is to raw Celery's no-op rate)"
        lines += [f"\n{title[0].upper()}{title[1:]}{extra}:\n\n", *tables(report, workload)]
    if BASELINE in systems:
        lines.append(
            "\nThe ratio is each repetition's rate over raw Celery's in the same repetition, median (min–max).\n"
        )
    lines += verdict(report)
    return lines


def verdict(report: dict[str, Any], ours: str = "ltt") -> list[str]:
    """This backend against each other one, workload by workload: rate, CPU per task and p50 latency, as ratios
    of the medians (above 1: this backend has more of it), and whether it is ahead on all three."""
    lines: list[str] = []
    for workload, title in report["workloads"].items():
        rows = report["summary"].get(workload, {})
        if ours not in rows:
            continue
        for peer in (s for s in report["labels"] if s not in (ours, BASELINE) and s in rows):
            a, b = rows[ours], rows[peer]
            rate = a["e2e_rate"]["median"] / b["e2e_rate"]["median"]
            cpu = a["cpu_per_1000"]["median"] / b["cpu_per_1000"]["median"]
            p50 = a["latency_p50_ms"]["median"] / b["latency_p50_ms"]["median"]
            ahead = [name for name, better in (("rate", rate > 1), ("CPU", cpu < 1), ("latency", p50 < 1)) if better]
            lines.append(
                f"- {title}, against {short(report, peer)}: {rate:.2f}× the rate, {cpu:.2f}× the CPU per task, "
                f"{p50:.2f}× the p50 latency; ahead on {', '.join(ahead) if ahead else 'none of the three'}\n"
            )
    if lines:
        lines.insert(
            0, f"\nThis backend against each of the others, ratios of the medians ({short(report, ours)} / other):\n\n"
        )
    return lines

"""Write docs/performance.md and its plot from bench/results.json.  ``python -m bench.report``"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def cell(summary: dict[str, Any], metric: str, digits: int = 0) -> str:
    m = summary.get(metric)
    if not m:
        return "-"
    fmt = f"{{:,.{digits}f}}"
    return f"{fmt.format(m['median'])} ({fmt.format(m['min'])}–{fmt.format(m['max'])})"


def plot(report: dict[str, Any], path: Path) -> None:
    systems = list(report["summary"])
    labels = [report["labels"][s].split(" (")[0] for s in systems]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.26
    for i, metric in enumerate(["enqueue_rate", "drain_rate", "e2e_rate"]):
        values = [report["summary"][s].get(metric, {}).get("median", 0) for s in systems]
        lows = [v - report["summary"][s].get(metric, {}).get("min", v) for s, v in zip(systems, values, strict=True)]
        highs = [report["summary"][s].get(metric, {}).get("max", v) - v for s, v in zip(systems, values, strict=True)]
        xs = [x + (i - 1) * width for x in range(len(systems))]
        ax.bar(xs, values, width, yerr=[lows, highs], capsize=3, label=metric.replace("_", " "))
    ax.set_xticks(range(len(systems)), labels, fontsize=8)
    ax.set_ylabel("tasks/s (median, min–max)")
    ax.set_title(f"Throughput, {report['args']['n']} no-op tasks, concurrency {report['args']['concurrency']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


SCALE_COLUMNS = [
    ("first_page_ms", "first page"),
    ("state_filter_ms", "?state=FAILED"),
    ("type_filter_ms", "?task_type=…"),
    ("cursor_page_ms", "page 51 by cursor"),
    ("last_page_number_ms", "page 500 by number"),
    ("owner_first_page_ms", "an owner's first page"),
    ("detail_ms", "detail"),
]


def scale_section(results: list[dict[str, Any]]) -> list[str]:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    sizes = [r["size"] for r in results]
    for key, label in SCALE_COLUMNS:
        ax.plot(sizes, [r[key] for r in results], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("tasks in the table")
    ax.set_ylabel("ms (median of 7)")
    ax.set_ylim(bottom=0)
    ax.set_title("List and detail latency against table size (PostgreSQL)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(DOCS / "img" / "list-latency.png", dpi=110)
    lines = [
        "\n## List latency against table size\n\n",
        "`python -m bench.scale` fills the table with generated tasks (a year of them, 10 owners, 90 % finished)\n",
        "and times the API in-process, through Django and DRF, as a staff user (an owner for the owner column).\n",
        "Median of 7, in ms. `total` is exact up to 10,000 tasks, then PostgreSQL's estimate. Not measured yet:\n",
        "10,000,000 rows (filling them through the live indexes took longer than this run allowed).\n\n",
        "![list latency](img/list-latency.png)\n\n",
        "| tasks | " + " | ".join(label for _, label in SCALE_COLUMNS) + " | total shown |\n",
        "|---" * (len(SCALE_COLUMNS) + 2) + "|\n",
    ]
    for r in results:
        cells = " | ".join(f"{r[key]:.1f}" for key, _ in SCALE_COLUMNS)
        shown = f"{r['total']:,}" + (" (estimate)" if r["total_is_estimate"] else "")
        lines.append(f"| {r['size']:,} | {cells} | {shown} |\n")
    return lines


def main(results: str = str(ROOT / "bench" / "results.json")) -> None:
    report = json.loads(Path(results).read_text())
    summary = report["summary"]
    base = summary["raw"]["e2e_rate"]["median"]
    (DOCS / "img").mkdir(parents=True, exist_ok=True)
    plot(report, DOCS / "img" / "throughput.png")
    a, m = report["args"], report["machine"]
    lines = [
        "# Performance\n\n",
        "How much tracking every task as a database row costs, against raw Celery on the same broker, database,\n",
        "concurrency and machine, measured in the same run. Reproduce with `make bench` (PostgreSQL on\n",
        "127.0.0.1:5432 and Redis on 127.0.0.1:6379; it uses the database `ltt_bench` and Redis databases 13-14).\n\n",
        f"Machine: {m['cpus']} cores, {m['memory_gb']} GiB, {m['platform']}, Python {m['python']}. ",
        f"Workload: {a['n']} no-op tasks per run (each handler does one Redis round trip that counts it), worker ",
        f"concurrency {a['concurrency']} (prefork), acks_late, prefetch 1; {a['reps']} repetitions, the systems in ",
        "rotated order; figures are the median and (min–max).\n\n",
        "![throughput](img/throughput.png)\n\n",
        "| system | end-to-end tasks/s | ratio to raw | enqueue tasks/s | drain tasks/s | CPU s per 1,000 tasks "
        "(all processes) | DB transactions per task | latency p50 / p99 (ms) |\n",
        "|---|---|---|---|---|---|---|---|\n",
    ]
    for system, s in summary.items():
        ratio = s["e2e_rate"]["median"] / base
        lines.append(
            f"| {report['labels'][system]} | {cell(s, 'e2e_rate')} | {ratio:.2f} | {cell(s, 'enqueue_rate')} | "
            f"{cell(s, 'drain_rate')} | {cell(s, 'cpu_per_1000', 2)} | {cell(s, 'db_xacts_per_task', 2)} | "
            f"{s['latency_p50_ms']['median']:,.0f} / {s['latency_p99_ms']['median']:,.0f} |\n"
        )
    lines += [
        "\nEnd to end: a worker runs while the tasks are enqueued; the rate is N over the time from the first\n",
        "enqueue to the last finish. Enqueue and drain: the tasks are enqueued with no worker, then drained.\n",
        "CPU counts the enqueuing process, the worker (main and children), Redis and PostgreSQL. DB transactions\n",
        "come from `pg_stat_database` (each autocommit statement is one), enqueue and worker together.\n",
        "Latency is submit to finish, end-to-end runs.\n\n",
        "## Memory\n\n",
        "| system | worker RSS idle (MiB) | after tasks (MiB) | tasks |\n|---|---|---|---|\n",
    ]
    for mem in report["memory"]:
        lines.append(
            f"| {report['labels'][mem['system']]} | {mem['rss_idle_mb']:.0f} | {mem['rss_after_mb']:.0f} | "
            f"{mem['n']:,} |\n"
        )
    lines.append("\nRSS of the worker's main process and its children together.\n")
    scale = ROOT / "bench" / "scale.json"
    if scale.exists():
        lines += scale_section(json.loads(scale.read_text()))
    history = ROOT / "bench" / "history.md"
    if history.exists():
        lines.append(history.read_text())
    (DOCS / "performance.md").write_text("".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])

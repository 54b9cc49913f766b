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


def plot(report: dict[str, Any], path: Path, variant: str = "") -> None:
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
    title = f"Throughput, {report['args']['n']} no-op tasks, concurrency {report['args']['concurrency']}"
    ax.set_title(f"{title}{variant}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


SCALE_COLUMNS = [
    ("first_page_ms", "first page"),
    ("state_filter_ms", "?state=FAILED"),
    ("type_filter_ms", "?task_type=…"),
    ("cursor_page_ms", "page 51 by cursor"),
    ("middle_cursor_ms", "cursor halfway down"),
    ("last_page_number_ms", "page 500 by number"),
    ("owner_first_page_ms", "an owner's first page"),
    ("detail_ms", "detail"),
    ("old_owner_first_page_ms", "first page of an owner of only old tasks"),
    ("old_owner_first_page_rpc_1_1_ms", "the same, random_page_cost = 1.1"),
]


def scale_section(results: list[dict[str, Any]]) -> list[str]:
    columns = [(key, label) for key, label in SCALE_COLUMNS if all(key in r for r in results)]
    with_sql = all("sql_ms" in r for r in results)
    sizes = [r["size"] for r in results]
    panels = [("wall time, through Django and DRF", None)] + ([("of which SQL", "sql_ms")] if with_sql else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(10 if with_sql else 8, 3.8), squeeze=False)
    for ax, (title, nested) in zip(axes[0], panels, strict=True):
        for key, label in columns:
            ax.plot(sizes, [(r[nested] if nested else r)[key] for r in results], marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")  # flat lines stay flat; the one that is not would flatten the others
        ax.set_xlabel("tasks in the table")
        ax.set_ylabel("ms (median, log scale)")
        ax.set_title(title, fontsize=9)
    axes[0][0].legend(fontsize=7, ncol=2)
    fig.suptitle("List and detail latency against table size (PostgreSQL)", fontsize=10)
    fig.tight_layout()
    fig.savefig(DOCS / "img" / "list-latency.png", dpi=110)
    repeat = results[0].get("repeat", 7)
    largest = max(results, key=lambda r: r["size"])
    lines = [
        "\n## List latency against table size\n\n",
        f"`python -m bench.scale --sizes {' '.join(str(s) for s in sizes)}` (`make bench-scale`) fills the table\n",
        "with generated tasks (a year of them, 10 owners, 90 % finished) and times the API in-process, through\n",
        "Django and DRF, as a staff user (an owner for the owner column). "
        f"Median of {repeat} requests after two warm-up requests, in ms.\n",
        "`total` is exact up to 10,000 tasks, then PostgreSQL's estimate. The cursor halfway down the table is\n",
        "a keyset page as deep as the table is big; page 500 by number is the deepest page number allowed\n",
        "(`OFFSET 9,980`), so its cost depends on that offset, not on the table.\n\n",
        "![list latency](img/list-latency.png)\n\n",
        "| tasks | " + " | ".join(label for _, label in columns) + " | total shown |\n",
        "|---" * (len(columns) + 2) + "|\n",
    ]
    for r in results:
        cells = " | ".join(f"{r[key]:.1f}" for key, _ in columns)
        shown = f"{r['total']:,}" + (" (estimate)" if r["total_is_estimate"] else "")
        lines.append(f"| {r['size']:,} | {cells} | {shown} |\n")
    if with_sql:
        lines += [
            "\nOf which SQL (the time spent in the database driver, round trips included, for all the request's\n",
            "queries: session, user, the planner's estimate, the page):\n\n",
            "| tasks | " + " | ".join(label for _, label in columns) + " |\n",
            "|---" * (len(columns) + 1) + "|\n",
        ]
        for r in results:
            lines.append(f"| {r['size']:,} | " + " | ".join(f"{r['sql_ms'][key]:.1f}" for key, _ in columns) + " |\n")
    if "fill_s" in largest:
        lines += [
            "\nFilling: the secondary indexes and the unique and foreign-key constraints are dropped, the rows\n",
            "inserted with `generate_series` in one transaction, the same indexes and constraints recreated from\n",
            "their definitions, then `VACUUM (ANALYZE)`. ",
            ", ".join(
                f"{r['size']:,} rows: {r['fill_s']:.0f} s (insert {r['insert_s']:.0f} s, indexes and constraints "
                f"{r['index_s']:.0f} s, vacuum {r['vacuum_analyze_s']:.0f} s), {r['table_and_indexes_gb']:.2f} GB"
                for r in results
                if "fill_s" in r and r["size"] >= 1_000_000
            ),
            ".\n",
        ]
    notes = ROOT / "bench" / "scale.md"
    if notes.exists():
        lines += ["\n", notes.read_text()]
    return lines


def api_cell(row: dict[str, Any] | None, kind: str) -> str:
    if row is None:
        return "-"
    if kind == "rps":
        r = row["rps"]
        return f"{r['median']:,.0f} ({r['min']:,.0f}–{r['max']:,.0f})"
    return f"{row['p50_ms']['median']:.1f} / {row['p99_ms']['median']:.1f}"


def api_plot(report: dict[str, Any], path: Path) -> None:
    summary, configs = report["summary"], list(report["configs"])
    groups = sorted({(r["endpoint"], r["clients"]) for r in summary}, key=lambda g: (
        list(report["endpoints"]).index(g[0]), g[1]))  # fmt: skip
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    width = 0.8 / len(configs)
    for i, config in enumerate(configs):
        rows = {(r["endpoint"], r["clients"]): r for r in summary if r["config"] == config}
        xs = [x + (i - (len(configs) - 1) / 2) * width for x in range(len(groups))]
        rps = [rows[g]["rps"]["median"] if g in rows else 0 for g in groups]
        p99 = [rows[g]["p99_ms"]["median"] if g in rows else 0 for g in groups]
        top.bar(xs, rps, width, label=config)
        bottom.bar(xs, p99, width, label=config)
    top.set_ylabel("requests/s (median)")
    bottom.set_ylabel("p99 latency, ms (median)")
    bottom.set_xticks(range(len(groups)), [f"{e}\n{c} client{'s' if c > 1 else ''}" for e, c in groups], fontsize=8)
    top.legend(fontsize=8)
    top.set_title("The API under load: gunicorn configurations (wrk over loopback, 2 cores shared)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def api_section(report: dict[str, Any]) -> list[str]:
    api_plot(report, DOCS / "img" / "api.png")
    summary, configs, a, m = report["summary"], list(report["configs"]), report["args"], report["machine"]
    rows = {(r["config"], r["endpoint"], r["clients"]): r for r in summary}
    groups = sorted({(r["endpoint"], r["clients"]) for r in summary}, key=lambda g: (
        list(report["endpoints"]).index(g[0]), g[1]))  # fmt: skip
    env = " ".join(f"{k}={v}" for k, v in report["server_env"].items())
    requests = sum(r["requests"] for r in summary)
    non_2xx = sum(r["non_2xx"] for r in summary)
    errors = sum(r["socket_errors"] for r in summary)
    prepared = report["prepared"]
    by_version: dict[str, list[str]] = {}
    for config in configs:
        found = {r.get("version", report["version"]) for r in report["runs"] if r["config"] == config}
        for version in sorted(found):
            by_version.setdefault(version, []).append(config)
    versions = "; ".join(f"`{v}` ({', '.join(c)})" for v, c in by_version.items())
    lines = [
        "\n## API under load\n\n",
        f"`{report['command'].strip()}` (`make bench-api`) runs the production server of the README's Deployment\n",
        "section, gunicorn, on 127.0.0.1 with its production settings, and loads it with\n",
        f"[wrk]({'https://github.com/wg/wrk'}) ({m['wrk']}, one thread) over loopback, on the same machine\n",
        f"({m['cpus']} cores shared by wrk, gunicorn, PostgreSQL and Redis; gunicorn {m['gunicorn']}). "
        f"Closed loop: each of the N clients\n",
        "(connections) sends its next request as soon as the previous one is answered. "
        f"{a['duration']:.0f} s per run after a {a['warmup']:.0f} s warm-up\n",
        f"per endpoint, {a['reps']} repetitions; figures are the median (and min–max). Code: {versions}.\n\n",
        "- server: " + ", ".join(f"`{c}`" for c in report["configs"].values()) + ", with\n",
        f"  `{env}`\n",
        "  (HTTPS redirect and HSTS on: wrk sends the `X-Forwarded-Proto: https` of a TLS-terminating proxy)\n",
        f"- table: {prepared['rows']:,} tasks; the reading user owns {prepared['reader_rows']:,} of them\n",
        "- endpoints: "
        + "; ".join(f"{name} `{target}`" for name, target in report["endpoints"].items())
        + f"; submit body `{report['submit_body']}`, rotated over {prepared['submit_users']:,} users' tokens "
        "(both submit limits still checked on every request); detail rotated over 1,000 of the reader's tasks;\n"
        "  list is the reader's first page (20 tasks, newest first)\n",
        f"- answers: {requests:,} requests in all, **{non_2xx:,} not 2xx**, {errors:,} socket errors\n",
        "- measured with: " + "; ".join(f"`{c}`" for c in report.get("commands", [report["command"]])) + "\n\n",
        "![API under load](img/api.png)\n",
    ]
    for title, what in (("Requests per second", "rps"), ("Latency, p50 / p99 (ms)", "latency")):
        lines += [
            f"\n{title}:\n\n",
            "| endpoint | clients | " + " | ".join(configs) + " |\n",
            "|---|---" + "|---" * len(configs) + "|\n",
        ]
        for endpoint, clients in groups:
            cells = " | ".join(api_cell(rows.get((c, endpoint, clients)), what) for c in configs)
            lines.append(f"| {endpoint} | {clients} | {cells} |\n")
    lines += [
        "\nCPU per request (ms, at the highest concurrency): gunicorn (master and workers) / PostgreSQL and\n",
        "Redis; wrk's own CPU, and the CPU of everything else on the machine during the runs (other work on\n",
        "a shared machine, the kernel), in cores (medians):\n\n",
        "| endpoint | " + " | ".join(configs) + " |\n",
        "|---" + "|---" * len(configs) + "|\n",
    ]
    top = max(clients for _, clients in groups)
    for endpoint in report["endpoints"]:
        cells = []
        for config in configs:
            r = rows.get((config, endpoint, top))
            cells.append(
                "-"
                if r is None
                else f"{r['gunicorn_cpu_ms_per_request']['median']:.1f} / "
                f"{r['db_redis_cpu_ms_per_request']['median']:.1f}; wrk {r['wrk_cpu_share']['median']:.2f}; "
                f"other {r.get('other_cpu_share', {}).get('median', 0):.2f}"
            )
        lines.append(f"| {endpoint} | " + " | ".join(cells) + " |\n")
    notes = ROOT / "bench" / "api.md"
    if notes.exists():
        lines += ["\n", notes.read_text()]
    return lines


def throughput_table(report: dict[str, Any]) -> list[str]:
    summary = report["summary"]
    base = summary["raw"].get("e2e_rate", {}).get("median")
    base_drain = summary["raw"].get("drain_rate", {}).get("median")
    lines = [
        "| system | end-to-end tasks/s | ratio to raw | enqueue tasks/s | drain tasks/s | drain ratio | CPU s per "
        "1,000 tasks (all processes) | DB transactions per task | latency p50 / p99 (ms) |\n",
        "|---|---|---|---|---|---|---|---|---|\n",
    ]
    for system, s in summary.items():
        if "e2e_rate" not in s:
            continue  # not in this run (--systems, --modes)
        ratio = f"{s['e2e_rate']['median'] / base:.2f}" if base else "-"
        drain = f"{s['drain_rate']['median'] / base_drain:.2f}" if base_drain and "drain_rate" in s else "-"
        lines.append(
            f"| {report['labels'][system]} | {cell(s, 'e2e_rate')} | {ratio} | {cell(s, 'enqueue_rate')} | "
            f"{cell(s, 'drain_rate')} | {drain} | {cell(s, 'cpu_per_1000', 2)} | {cell(s, 'db_xacts_per_task', 2)} | "
            f"{s['latency_p50_ms']['median']:,.0f} / {s['latency_p99_ms']['median']:,.0f} |\n"
        )
    return lines


CPU_PARTS = {
    "enqueuer": "enqueuing process",
    "worker_main": "worker: main process",
    "worker_pool": "worker: pool processes",
    "postgresql": "PostgreSQL",
    "redis": "Redis",
}


SHARED_NOTE = (
    "the enqueuing process's start-up is taken out of it. Where\n"
    "the cores are what limits both systems, the end-to-end ratio comes out near the last column.\n"
)


def cpu_split_table(report: dict[str, Any], note: str = SHARED_NOTE) -> list[str]:
    """Where each system's CPU goes in the end-to-end runs, in ms per task (= CPU s per 1,000 tasks)."""
    summary = report["summary"]
    systems = [system for system, s in summary.items() if s.get("cpu_split_per_1000")]
    if "raw" not in systems:
        return []
    base = summary["raw"]["machine_cpu_per_1000"]["median"]
    lines = [
        "\nWhere the CPU goes, end to end (medians, ms per task):\n\n",
        "| system | " + " | ".join(CPU_PARTS.values()) + " | sum of these | whole machine | raw Celery's whole "
        "machine over this |\n",
        "|---|" + "---|" * (len(CPU_PARTS) + 3) + "\n",
    ]
    for system in systems:
        split, machine = summary[system]["cpu_split_per_1000"], summary[system]["machine_cpu_per_1000"]["median"]
        parts = " | ".join(f"{split[name]:.2f}" for name in CPU_PARTS)
        lines.append(
            f"| {report['labels'][system]} | {parts} | {sum(split.values()):.2f} | {machine:.2f} | "
            f"{base / machine:.2f} |\n"
        )
    lines.append(
        "\nThe whole machine's busy time (`/proc/stat`: all but idle and I/O wait) holds, besides these\n"
        "processes, mostly the kernel's work on the loopback traffic, and anything else that ran (the bench's own\n"
        "polling, other load on a shared machine); " + note
    )
    return lines


def celery_defaults_section(report: dict[str, Any]) -> list[str]:
    plot(report, DOCS / "img" / "throughput-celery-defaults.png", ", Celery's default delivery")
    return [
        "\n## With Celery's default delivery\n\n",
        "The same runs, every system with Celery's defaults instead of the seed's: a message is acknowledged\n",
        "when a worker process starts the task (not when it ends), and each process reserves 4 messages. The\n",
        "worker's main process then fetches the next message while a task runs, so the wait for a message no\n",
        "longer adds to each process's cycle, and the rates depend on the CPU each task costs. For this project\n",
        "that is safe: recovery trusts the row, not the message (a message acknowledged early whose worker dies\n",
        "before the claim leaves the row waiting, and the sweeper publishes it again after `REDISPATCH_AFTER`).\n",
        "It is not the default because, for long tasks, a reserved message waits behind a running one while\n",
        "other workers may be idle. `python -m bench.run --delivery celery-defaults`, "
        f"{report['args']['reps']} repetitions.\n\n",
        "![throughput, Celery's default delivery](img/throughput-celery-defaults.png)\n\n",
        *throughput_table(report),
        *cpu_split_table(report),
    ]


APP_SIDE = ("enqueuer", "worker_main", "worker_pool")


def servers_apart_section(report: dict[str, Any]) -> list[str]:
    plot(report, DOCS / "img" / "throughput-servers-apart.png", ", servers on a core of their own")
    summary = report["summary"]
    app = {
        system: sum(s["cpu_split_per_1000"][part] for part in APP_SIDE)
        for system, s in summary.items()
        if s.get("cpu_split_per_1000")
    }
    lines = [
        "\n## With the servers on a core of their own\n\n",
        "In production PostgreSQL and Redis run on hosts of their own, and the application's hosts pay for the\n",
        "enqueuing process and the worker only. `python -m bench.run --layout servers-apart` comes as near to that\n",
        f"as one machine can: {report['layout']} (CPU affinity; the servers' processes get every core back at the\n",
        "end). Each system then has the same core for its own processes, and the rates show what tracking costs\n",
        "the application's side; the servers' core has time to spare (its busy share is in the CPU table: the\n",
        "PostgreSQL and Redis columns times the rate). The seed's delivery, "
        f"{report['args']['reps']} repetitions, the same workload.\n\n",
        "![throughput, servers on a core of their own](img/throughput-servers-apart.png)\n\n",
        *throughput_table(report),
        *cpu_split_table(
            report,
            "the enqueuing process's start-up is taken out of it. Here the\n"
            "whole machine is not what limits the rates: the application's core is (below).\n",
        ),
    ]
    busy = {
        system: (s["cpu_split_per_1000"]["postgresql"] + s["cpu_split_per_1000"]["redis"])
        * s["e2e_rate"]["median"]
        / 1000
        for system, s in summary.items()
        if s.get("cpu_split_per_1000") and "e2e_rate" in s
    }
    if busy:
        lines.append(
            "\nThe servers' core was busy "
            + ", ".join(f"{value:.0%} of the time for {report['labels'][system]}" for system, value in busy.items())
            + " (PostgreSQL's and Redis's CPU per task times the rate).\n"
        )
    if "raw" in app:
        lines.append(
            "\nThe enqueuing process and the worker (main process and pool), the part on the application's core, "
            "in ms per task: "
            + "; ".join(
                f"{report['labels'][system]} {value:.2f} (raw Celery's over this: {app['raw'] / value:.2f})"
                for system, value in app.items()
            )
            + ".\n"
        )
    return lines


def both_section(report: dict[str, Any]) -> list[str]:
    """Celery's default delivery with the servers on a core of their own: the table only."""
    return [
        "\nWith Celery's default delivery as well (`python -m bench.run --layout servers-apart --delivery "
        f"celery-defaults`, {report['args']['reps']} repetitions):\n\n",
        *throughput_table(report),
        "\nThis combination moves the most from run to run (its repetitions' own ratios, and a second run's, are\n"
        "in the history below); read its ratio as a range, not a figure.\n",
    ]


def instructions_section(report: dict[str, Any]) -> list[str]:
    counts = report["instructions"]
    base = counts["raw_publish"]
    lines = [
        "\n## Instructions per operation\n\n",
        "`python -m bench.instructions` (`make bench-instructions`) counts the instructions the Python process\n",
        "executes for each operation with valgrind's callgrind, over ",
        f"{report['n']} operations after a warm-up: the code's own work, the same on any machine and whatever\n",
        "else the machine is doing (the servers' work is not counted). "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + ".\n\n",
        "| operation | instructions | relative to raw Celery's publish |\n|---|---|---|\n",
    ]
    for name, value in counts.items():
        lines.append(f"| {report['labels'][name]} | {value:,.0f} | {value / base:.2f} |\n")
    pairs = [(name, name + "_no_metrics") for name in ("submit", "run") if name + "_no_metrics" in counts]
    if pairs:
        together = sum(counts[n] for n, _ in pairs) / sum(counts[o] for _, o in pairs) * 100 - 100
        lines.append(
            "\nWhat the Prometheus metrics cost per task, in instructions (on, in multiprocess mode as in production, "
            "against `LONG_TIME_TASK_METRICS = False`): "
            + "; ".join(
                f"{name} {counts[name] - counts[off]:+,.0f} ({(counts[name] / counts[off] - 1) * 100:+.1f} %)"
                for name, off in pairs
            )
            + f"; both together {together:+.1f} %.\n"
        )
    return lines


def ratio(report: dict[str, Any], system: str, metric: str = "e2e_rate") -> float | None:
    summary = report["summary"]
    if metric not in summary.get(system, {}) or metric not in summary.get("raw", {}):
        return None
    return float(summary[system][metric]["median"] / summary["raw"][metric]["median"])


def bound_clause(report: dict[str, Any]) -> str:
    """Where the cores limit both systems, PostgreSQL's CPU per task alone caps the ratio at raw Celery's
    whole-machine CPU over that plus PostgreSQL's."""
    summary = report["summary"]
    try:
        raw = summary["raw"]["machine_cpu_per_1000"]["median"]
        pg = summary["tracked"]["cpu_split_per_1000"]["postgresql"]
    except KeyError:
        return ""
    return (
        f", where the ratio is the ratio of CPU per task and PostgreSQL's own ({pg:.2f} ms per task, against "
        f"{raw:.2f} ms for all raw Celery does) caps it at {raw / (raw + pg):.2f} before any of this project's "
        "Python (the CPU table below)"
    )


def headline(shared: dict[str, Any], apart: dict[str, Any] | None) -> list[str]:
    """The goal (0.7x raw Celery end to end) against both layouts, in one paragraph."""
    parts = []
    if apart is not None and ratio(apart, "tracked") is not None:
        parts.append(
            f"with PostgreSQL and Redis on a core of their own (as on hosts of their own), this project runs at "
            f"**{ratio(apart, 'tracked'):.2f}× raw Celery** end to end"
            + (f" (django-celery-results {ratio(apart, 'dcr'):.2f}×)" if ratio(apart, "dcr") is not None else "")
        )
    if ratio(shared, "tracked") is not None:
        parts.append(
            f"with every process sharing both cores, at **{ratio(shared, 'tracked'):.2f}×**"
            + (f" (django-celery-results {ratio(shared, 'dcr'):.2f}×)" if ratio(shared, "dcr") is not None else "")
            + bound_clause(shared)
        )
    if not parts:
        return []
    return [
        f"**In short** (medians of {shared['args']['reps']} repetitions; the goal is 0.7×): "
        + "; ".join(parts)
        + ".\n\n"
    ]


def metrics_section(scrape: dict[str, Any] | None, cost: dict[str, Any] | None) -> list[str]:
    """What the Prometheus metrics cost: a scrape against table size (bench/metrics.json) and CPU per task
    with metrics on and off in the same run (bench/results-metrics.json)."""
    lines = ["\n## What the Prometheus metrics cost\n\n"]
    if scrape is not None:
        results = scrape["results"]
        lines += [
            f"`{scrape['command']}` fills the table as `bench.scale` does (a year of tasks, 5 % `PENDING` on one\n",
            "queue: a backlog of 5 % of the table) and times `GET /metrics` in-process with the scraper's\n",
            "token, through Django (the broker's reading cached, as most scrapes find it), the database gauges\n",
            "alone, and one uncached reading of the broker's queue lengths (Redis). Median of "
            f"{results[0]['repeat']} after two\n",
            "warm-up scrapes, in ms.\n\n",
            "| tasks | scrape | of which SQL | database gauges | of which SQL | broker, uncached |\n",
            "|---|---|---|---|---|---|\n",
        ]
        for r in results:
            lines.append(
                f"| {r['size']:,} | {r['scrape_ms']:.1f} | {r['scrape_sql_ms']:.1f} | {r['database_gauges_ms']:.1f} | "
                f"{r['database_gauges_sql_ms']:.1f} | {r['broker_uncached_ms']:.1f} |\n"
            )
        largest = max(results, key=lambda r: r["size"])
        lines += ["\nPlans at " + f"{largest['size']:,} rows (`EXPLAIN`): "]
        lines.append("; ".join(f"{name}: {plan}" for name, plan in largest["plans"].items()) + ".\n")
        if all(r["size"] < 10_000_000 for r in results):
            lines.append("\nNot measured at 10 M rows yet (`python -m bench.metrics --sizes 10000000`).\n")
    if cost is not None:
        summary, args = cost["summary"], cost["args"]
        on, off = summary.get("tracked", {}), summary.get("tracked-no-metrics", {})
        lines += [
            f"\n`{cost['command']}`: the tracked system with metrics on (multiprocess mode, as in production) and\n",
            f"off (`LONG_TIME_TASK_METRICS = False`), interleaved in the same run, {args['n']} tasks, "
            f"{args['reps']} repetitions, end to end; medians and (min–max).\n\n",
            "| metrics | e2e tasks/s | CPU s / 1,000 tasks | machine CPU s / 1,000 tasks |\n|---|---|---|---|\n",
        ]
        for label, row in (("on", on), ("off", off)):
            lines.append(
                f"| {label} | {cell(row, 'e2e_rate')} | {cell(row, 'cpu_per_1000', 2)} | "
                f"{cell(row, 'machine_cpu_per_1000', 2)} |\n"
            )
        if on and off:
            rate = on["e2e_rate"]["median"] / off["e2e_rate"]["median"]
            cpu = on["cpu_per_1000"]["median"] / off["cpu_per_1000"]["median"]
            lines.append(
                f"\nOn against off, medians: {rate:.3f}× the rate, {cpu:.3f}× the CPU per task "
                f"({(cpu - 1) * 100:+.1f} %).\n"
            )
            a, b = on["cpu_per_1000"], off["cpu_per_1000"]
            if a["min"] <= b["max"] and b["min"] <= a["max"]:
                lines.append(
                    "The ranges of the two overlap: the difference is within the run-to-run noise of the machine (its\n"
                    "cores shared with other jobs during the run); the instruction counts above resolve it better.\n"
                    + ("A lower median with metrics on is noise, not a saving.\n" if cpu < 1 else "")
                )
    lines.append(
        "\nThe attempt history costs nothing on an attempt that ends its task (finished, failed, cancelled, killed by\n"
        "its hard time limit): the task row describes that attempt, and nothing else is written. Only an attempt that\n"
        "is retried, or ended by recovery, adds one `INSERT ... SELECT` to the transaction of the transition that\n"
        "ends it (`long_time_task/models/attempts.py`). The figures above, where every task succeeds at its first\n"
        "attempt, thus measure the metrics alone, and are the whole per-task overhead of both.\n"
    )
    return lines


def schedules_section(report: dict[str, Any]) -> list[str]:
    """What a scheduler tick costs against the number of schedules (bench/schedules.json)."""
    results = report["results"]
    lines = [
        "\n## What a scheduler tick costs\n\n",
        f"`{report['command']}` fills the schedule table with that many enabled daily schedules (nothing\n",
        "due), times a tick with nothing due (median of 31, in-process, against PostgreSQL), then makes 1,000 of\n",
        "them due and ticks until none is (500 per tick). A tick validates the runs, inserts them in batches\n",
        "(`services.submit_many`: `INSERT ... ON CONFLICT DO NOTHING`, one per 500), reads their ids back and moves\n",
        "its schedules in one guarded `UPDATE`; each run is published to Redis after the commit. The baseline, in\n",
        "the same run and rounds, is the tick's former path: one `services.submit` per run, in a savepoint, and an\n",
        "`UPDATE` per schedule. Medians of three rounds.\n\n",
        "| schedules | idle tick (ms) | of which SQL | its statements | 1,000 due: seconds | statements per run "
        "| baseline: seconds | statements per run | ratio | of which publishing (s) | ratio without publishing |\n",
        "|---|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for r in results:
        lines.append(
            f"| {r['size']:,} | {r['idle_tick_ms']:.2f} | {r['idle_tick_sql_ms']:.2f} | "
            f"{', '.join(r['idle_tick_statements'])} | {r['due_wall_s']:.2f} | {r['due_statements_per_run']:.3f} | "
            f"{r['baseline_due_wall_s']:.2f} | {r['baseline_due_statements_per_run']:.2f} | "
            f"{r['due_ratio']:.2f}× | {r['due_publish_s']:.2f} | {r['due_ratio_without_publish']:.2f}× |\n"
        )
    largest = max(results, key=lambda r: r["size"])
    lines.append(f"\nThe due read's plan at {largest['size']:,} schedules (`EXPLAIN`): {largest['due_plan']}.\n")
    lines.append(
        "What is left of a batched tick is mostly the publishing, one Celery message per run (kombu's Redis\n"
        "transport has no batch publish that Celery documents).\n"
    )
    return lines


def main(results: str = str(ROOT / "bench" / "results.json")) -> None:
    report = json.loads(Path(results).read_text())
    (DOCS / "img").mkdir(parents=True, exist_ok=True)
    plot(report, DOCS / "img" / "throughput.png", ", every process on every core")
    a, m = report["args"], report["machine"]
    lines = [
        "# Performance\n\n",
        "How much tracking every task as a database row costs, against raw Celery on the same broker, database,\n",
        "concurrency and machine, measured in the same run. Reproduce with `make bench` (PostgreSQL on\n",
        "127.0.0.1:5432 and Redis on 127.0.0.1:6379; it uses the databases `ltt_bench` and `ltt_bench_tasks` and\n",
        "Redis databases 12-14; `make bench-throughput`, `make bench-api`, `make bench-scale` and\n",
        "`make bench-django-tasks` run one part each).\n\n",
        f"Machine: {m['cpus']} cores, {m['memory_gb']} GiB, {m['platform']}, Python {m['python']}. ",
        f"Workload: {a['n']} no-op tasks per run (each handler does one Redis round trip that counts it), worker ",
        f"concurrency {a['concurrency']} (prefork), {report.get('delivery', 'acks_late, prefetch 1')}; {a['reps']} ",
        "repetitions, the systems in ",
        "rotated order; figures are the median and (min–max).\n\n",
    ]
    apart_file = ROOT / "bench" / "results-servers-apart.json"
    apart = json.loads(apart_file.read_text()) if apart_file.exists() else None
    lines += headline(report, apart)
    lines += ["![throughput](img/throughput.png)\n\n"]
    lines += throughput_table(report)
    lines += cpu_split_table(report)
    lines += [
        "\nEnd to end: a worker runs while the tasks are enqueued; the rate is N over the time from the first\n",
        "enqueue to the last finish. Enqueue and drain: the tasks are enqueued with no worker, then drained.\n",
        "CPU is measured in the end-to-end runs: the enqueuing process (its enqueue loop), the worker (main\n",
        "process and pool, from when it is ready) and the Redis and PostgreSQL servers, PostgreSQL's backends\n",
        "included after they exit (from the postmaster's children times); the processes' start-up is left\n",
        "out. DB transactions come from `pg_stat_database` (each autocommit statement is one), enqueue and\n",
        "worker together. Latency is submit to finish, end-to-end runs.\n\n",
        "## Memory\n\n",
        "| system | worker RSS idle (MiB) | after tasks (MiB) | tasks |\n|---|---|---|---|\n",
    ]
    for mem in report["memory"]:
        lines.append(
            f"| {report['labels'][mem['system']]} | {mem['rss_idle_mb']:.0f} | {mem['rss_after_mb']:.0f} | "
            f"{mem['n']:,} |\n"
        )
    lines.append("\nRSS of the worker's main process and its children together.\n")
    defaults = ROOT / "bench" / "results-celery-defaults.json"
    if defaults.exists():
        lines += celery_defaults_section(json.loads(defaults.read_text()))
    if apart is not None:
        lines += servers_apart_section(apart)
    both = ROOT / "bench" / "results-celery-defaults-servers-apart.json"
    if both.exists():
        lines += both_section(json.loads(both.read_text()))
    api = ROOT / "bench" / "api.json"
    if api.exists():
        lines += api_section(json.loads(api.read_text()))
    scale = ROOT / "bench" / "scale.json"
    if scale.exists():
        lines += scale_section(json.loads(scale.read_text()))
    instructions = ROOT / "bench" / "instructions.json"
    if instructions.exists():
        lines += instructions_section(json.loads(instructions.read_text()))
    scrape, cost = ROOT / "bench" / "metrics.json", ROOT / "bench" / "results-metrics.json"
    if scrape.exists() or cost.exists():
        lines += metrics_section(
            json.loads(scrape.read_text()) if scrape.exists() else None,
            json.loads(cost.read_text()) if cost.exists() else None,
        )
    schedules = ROOT / "bench" / "schedules.json"
    if schedules.exists():
        lines += schedules_section(json.loads(schedules.read_text()))
    django_tasks = ROOT / "bench" / "results-django-tasks.json"
    if django_tasks.exists():
        from .report_django_tasks import section

        lines += section(json.loads(django_tasks.read_text()), DOCS / "img")
    history = ROOT / "bench" / "history.md"
    if history.exists():
        lines.append(history.read_text())
    (DOCS / "performance.md").write_text("".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:])

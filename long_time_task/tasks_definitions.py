"""The seed's three example task types (§3.2). Each does real, small work, and each is idempotent:
running it twice for the same task writes the same output to the same place.

Each also shows what a handler owes the person waiting for it: it works in chunks, reports progress between
them (``report_progress``) and so stops promptly when its task is cancelled (``TaskCancelled`` propagates;
a half-written output file is removed). The report covers only the tasks its owner may see (``current_owner``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import random
import statistics
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from django.db.models import Count
from django.utils import timezone

from .conf import conf
from .context import check_cancelled, current_context, report_progress
from .exceptions import TaskError
from .registry import InvalidParams, LongTimeTaskRegister

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from .models import LongTimeTask

CHUNK = 50_000  # values or rows handled between two progress reports (each also checks for a cancel)


@contextmanager
def atomic_output(path: Path) -> Iterator[TextIO]:
    """A text file that appears at ``path`` only once complete (a reader never sees half a file); if the
    block raises (a cancel included), nothing appears and the partial file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: Path, content: str) -> int:
    """Write ``content`` to ``path`` via a temporary file, so a reader never sees half a file."""
    with atomic_output(path) as fh:
        fh.write(content)
    return path.stat().st_size


# --------------------------------------------------------------------------- data_analysis


def dataset_chunks(dataset_id: int, size: int, chunk: int = CHUNK) -> Iterator[tuple[list[float], float]]:
    """The dataset ``dataset_id`` in chunks, each with the fraction of the dataset read so far (0..1):
    FILES_DIR/datasets/<id>.csv (one number a line) if present, else generated.

    The generated one is deterministic per id: a noisy seasonal series, so the statistics are not trivial.
    """
    stored = conf.FILES_DIR / "datasets" / f"{dataset_id}.csv"
    if stored.is_file():
        with stored.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            total = max(1, os.fstat(raw.fileno()).st_size)
            batch: list[float] = []
            for row in csv.reader(fh):
                if row and row[0].strip():
                    batch.append(float(row[0]))
                if len(batch) >= chunk:
                    yield batch, min(1.0, raw.tell() / total)  # bytes read ahead of the text: near enough
                    batch = []
            yield batch, 1.0
        return
    rng = random.Random(dataset_id)  # noqa: S311 - reproducible data, not cryptography
    base = rng.uniform(10, 100)
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        yield [base + 0.01 * i + 5 * ((i % 24) / 24) + rng.gauss(0, base / 10) for i in range(start, stop)], stop / size


def load_dataset(dataset_id: int, size: int) -> list[float]:
    """The whole dataset ``dataset_id`` (see ``dataset_chunks``)."""
    return [value for batch, _ in dataset_chunks(dataset_id, size) for value in batch]


def chunked_fsum(values: list[float], term: Any, *, percent: tuple[float, float], message: str) -> float:
    """``math.fsum(term(i, x) for i, x in enumerate(values))``, a chunk at a time, reporting progress from
    ``percent[0]`` to ``percent[1]`` between chunks."""
    partials = []
    low, high = percent
    for start in range(0, len(values), CHUNK):
        part = values[start : start + CHUNK]
        partials.append(math.fsum(term(i, x) for i, x in enumerate(part, start)))
        report_progress(low + (high - low) * (start + len(part)) / len(values), message)
    return math.fsum(partials)


@LongTimeTaskRegister.register(
    task_type="data_analysis",
    description="Statistics over a dataset: mean, median, spread, quartiles; 'full' adds a histogram and a trend.",
    timeout=7200,
    soft_timeout=6900,
    max_retries=3,
    queue="heavy",
    param_schema={
        "type": "object",
        "required": ["dataset_id"],
        "properties": {
            "dataset_id": {"type": "integer", "minimum": 1},
            "analysis_type": {"type": "string", "enum": ["basic", "full"], "default": "basic"},
            "size": {"type": "integer", "minimum": 10, "maximum": 1_000_000, "default": 10_000},
        },
        "additionalProperties": False,
    },
)
def analyze_data(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    dataset_id = params["dataset_id"]
    analysis_type = params.get("analysis_type", "basic")
    full = analysis_type == "full"
    size = params.get("size", 10_000)
    report_progress(0, f"reading dataset {dataset_id}")
    values: list[float] = []
    for batch, done in dataset_chunks(dataset_id, size):
        values.extend(batch)
        report_progress(50 * done, f"read {len(values):,} values")
    n = len(values)
    if n < 2:
        raise ValueError(f"dataset {dataset_id} has fewer than 2 values")
    report_progress(50, f"sorting {n:,} values")
    ordered = sorted(values)
    check_cancelled()
    q1, q2, q3 = statistics.quantiles(ordered, n=4)  # already sorted: its own sort is a linear pass
    mean = math.fsum(values) / n
    # Two passes (mean, then squared deviations), each sum exact to the last bit: as precise as statistics.stdev
    # to the 6 decimals shown, and a chunk at a time instead of one long exact-fraction computation.
    squares = chunked_fsum(values, lambda _, x: (x - mean) ** 2, percent=(60, 75 if full else 95), message="spread")
    stats: dict[str, Any] = {
        "count": n,
        "mean": round(mean, 6),
        "median": round(statistics.median(ordered), 6),
        "stdev": round(math.sqrt(squares / (n - 1)), 6),
        "min": round(ordered[0], 6),
        "max": round(ordered[-1], 6),
        "quartiles": [round(q1, 6), round(q2, 6), round(q3, 6)],
    }
    if full:
        low, high = stats["min"], stats["max"]
        width = (high - low) / 10 or 1.0
        bins: Counter[int] = Counter()
        for start in range(0, n, CHUNK):
            bins.update(min(int((v - low) / width), 9) for v in values[start : start + CHUNK])
            report_progress(75 + 10 * min(n, start + CHUNK) / n, "histogram")
        stats["histogram"] = [{"from": round(low + i * width, 6), "count": bins.get(i, 0)} for i in range(10)]
        # Least squares of the values against their index 0..n-1, whose mean and spread are exact formulas.
        x_mean = (n - 1) / 2
        x_squares = n * (n * n - 1) / 12
        products = chunked_fsum(values, lambda i, y: (i - x_mean) * (y - mean), percent=(85, 95), message="trend")
        slope = products / x_squares
        stats["trend"] = {
            "slope": round(slope, 9),
            "intercept": round(mean - slope * x_mean, 6),
            "correlation": round(products / math.sqrt(x_squares * squares), 6) if squares else None,
        }
    return {"dataset_id": dataset_id, "analysis_type": analysis_type, "result": "analysis_complete", "stats": stats}


# --------------------------------------------------------------------------- file_processing

MAX_NAME_BYTES = 1024  # the schema's maxLength, in bytes of the file system's encoding
NOT_A_FILE = (
    "Invalid params at params.file_path: no readable file of that name in the files directory "
    "(give a .csv or .json file's name relative to it)"
)
SUFFIXES = {".csv", ".json"}


def resolve_input(file_path: str) -> Path:
    """The readable regular file ``file_path`` names inside FILES_DIR, or InvalidParams.

    Names are relative to FILES_DIR. An absolute path, a ``..`` or a symlink leading out, a NUL character, an
    over-long or undecodable name, a missing file, a directory, an unreadable file: all get the same answer,
    which names no server path, so that nobody learns where the directory is or what lies outside it.
    Only the suffix rule (.csv, .json) has its own message: it depends on the name alone.
    """
    if PurePosixPath(file_path).suffix.lower() not in SUFFIXES:
        raise InvalidParams(
            "Invalid params at params.file_path: only .csv and .json files can be converted", field="params.file_path"
        )
    try:
        if "\x00" in file_path or len(os.fsencode(file_path)) > MAX_NAME_BYTES or os.path.isabs(file_path):
            raise ValueError
        base = conf.FILES_DIR.resolve()
        candidate = (base / file_path).resolve()
        if (
            not candidate.is_relative_to(base)
            or candidate.suffix.lower() not in SUFFIXES  # a symlink to a file of another kind
            or not candidate.is_file()
            or not os.access(candidate, os.R_OK)
        ):
            raise ValueError
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        raise InvalidParams(NOT_A_FILE, field="params.file_path") from None
    return candidate


def check_file_params(params: dict[str, Any]) -> None:
    resolve_input(params["file_path"])


def read_records(path: Path, *, percent: float = 0.0) -> tuple[list[str], list[dict[str, Any]]]:
    """The file's records and their columns; reading reports progress from 0 to ``percent``."""
    if path.suffix.lower() == ".csv":
        with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh:
            total = max(1, os.fstat(raw.fileno()).st_size)
            reader = csv.DictReader(fh)
            rows: list[dict[str, Any]] = []
            for row in reader:
                rows.append(row)
                if len(rows) % CHUNK == 0:
                    report_progress(percent * min(1.0, raw.tell() / total), f"read {len(rows):,} rows")
            return list(reader.fieldnames or []), rows
    data = json.loads(path.read_text(encoding="utf-8"))
    report_progress(percent, f"read {len(data) if isinstance(data, list) else 0:,} records")
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise TaskError("The file must hold a JSON array of objects.", code="invalid_input")
    columns: dict[str, None] = {}
    for item in data:
        columns.update(dict.fromkeys(item))
    return list(columns), data


def output_file_of(result: dict[str, Any]) -> list[str]:
    """file_processing's result file (relative to the results directory), for downloads and the purge."""
    return [result["output_file"]] if isinstance(result.get("output_file"), str) else []


def report_path_of(result: dict[str, Any]) -> list[str]:
    """report_generation's report file (relative to the results directory)."""
    return [result["report_path"]] if isinstance(result.get("report_path"), str) else []


@LongTimeTaskRegister.register(
    task_type="file_processing",
    description="Convert a CSV or JSON file from the files directory to JSON or CSV.",
    timeout=3600,
    queue="default",
    param_schema={
        "type": "object",
        "required": ["file_path"],
        "properties": {
            "file_path": {"type": "string", "minLength": 1, "maxLength": 1024},
            "output_format": {"type": "string", "enum": ["json", "csv"], "default": "json"},
        },
        "additionalProperties": False,
    },
    param_validator=check_file_params,
    result_files=output_file_of,
)
def process_file(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    try:
        source = resolve_input(params["file_path"])  # again: the file may have changed since the submit
    except InvalidParams as exc:
        raise TaskError(str(exc), code="invalid_params") from None
    output_format = params.get("output_format", "json")
    report_progress(0, "reading the file")
    columns, records = read_records(source, percent=50)
    relative = f"files/{task_id}.{output_format}"
    total = len(records)
    with atomic_output(conf.RESULTS_DIR / relative) as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore") if output_format == "csv" else None
        if writer is not None:
            writer.writeheader()
        else:
            out.write("[")
        for start in range(0, total, CHUNK):
            chunk = records[start : start + CHUNK]
            if writer is not None:
                writer.writerows(chunk)
            else:  # one record a line
                out.write(",".join("\n  " + json.dumps(r, ensure_ascii=False) for r in chunk))
                if start + CHUNK < total:
                    out.write(",")
            done = start + len(chunk)
            report_progress(50 + 50 * done / total, f"wrote {done:,} of {total:,} rows")
        if writer is None:
            out.write("\n]\n" if total else "]\n")
    return {
        "input_file": params["file_path"],
        "output_file": relative,  # inside the results directory; no server path is shown to clients
        "output_format": output_format,
        "rows": total,
        "columns": columns,
        "bytes": (conf.RESULTS_DIR / relative).stat().st_size,
    }


# --------------------------------------------------------------------------- report_generation

REPORT_BATCH = 10_000  # finished rows read per query for the durations
REPORT_MAX_DURATIONS = 100_000  # the median duration is taken over at most this many finished tasks


def reportable_tasks() -> tuple[QuerySet[LongTimeTask], str]:
    """The tasks the running task's owner may see, and the scope's name ("all" or "own"): staff and holders
    of ``view_all_tasks`` see all tasks, anyone else their own. A task without an owner was submitted by
    trusted server code (a command, a periodic job), as is a direct call outside a task: all tasks."""
    from .models import LongTimeTask
    from .models.querysets import sees_all

    tasks = LongTimeTask.objects.all()
    context = current_context()
    if context is None or context.owner_id is None:
        return tasks, "all"
    owner = context.owner  # None if deleted since the submit: then the report is no one's (visible_to: none)
    return tasks.visible_to(owner), "all" if owner is not None and sees_all(owner) else "own"


def task_report(days: int, detailed: bool) -> dict[str, Any]:
    """Figures about the tasks the running task's owner may see, created in the last ``days`` days."""
    from .models import TaskState

    tasks, scope = reportable_tasks()
    since = timezone.now() - timedelta(days=days)
    tasks = tasks.filter(create_at__gte=since)
    report_progress(0, "counting tasks")
    by_type: dict[str, dict[str, int]] = defaultdict(dict)
    for row in tasks.values("task_type", "state").annotate(n=Count("id")).order_by():
        by_type[row["task_type"]][row["state"]] = row["n"]
    finished = min(REPORT_MAX_DURATIONS, sum(states.get(TaskState.FINISHED, 0) for states in by_type.values()))
    durations: dict[str, list[float]] = defaultdict(list)
    read, last_id = 0, 0
    report_progress(10, "reading durations")
    while read < finished:
        batch = list(
            tasks.filter(state=TaskState.FINISHED, id__gt=last_id)
            .order_by("id")
            .values_list("id", "task_type", "start_at", "finish_at")[: min(REPORT_BATCH, finished - read)]
        )
        if not batch:
            break
        for _, task_type, start, finish in batch:
            if start and finish:
                durations[task_type].append((finish - start).total_seconds())
        read, last_id = read + len(batch), batch[-1][0]
        report_progress(10 + 70 * read / finished, f"read the durations of {read:,} of {finished:,} finished tasks")
    types = []
    for task_type in sorted(by_type):
        states = by_type[task_type]
        total = sum(states.values())
        done = states.get(TaskState.FINISHED, 0) + states.get(TaskState.FAILED, 0)
        times = durations.get(task_type, [])
        types.append(
            {
                "task_type": task_type,
                "total": total,
                "states": dict(sorted(states.items())),
                "failure_rate": round(states.get(TaskState.FAILED, 0) / done, 4) if done else None,
                "median_seconds": round(statistics.median(times), 3) if times else None,
            }
        )
    report: dict[str, Any] = {"days": days, "since": since.isoformat(), "scope": scope, "types": types}
    if detailed:
        report_progress(80, "listing recent failures")
        report["recent_failures"] = list(
            tasks.filter(state=TaskState.FAILED)
            .order_by("-create_at", "-id")
            .values("id", "task_type", "error_code", "finish_at")[:50]
        )
    return report


def render_report(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, ensure_ascii=False, indent=2, default=str)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["task_type", "total", "failure_rate", "median_seconds", "states"])
        for row in report["types"]:
            states = " ".join(f"{k}={v}" for k, v in row["states"].items())
            writer.writerow([row["task_type"], row["total"], row["failure_rate"], row["median_seconds"], states])
        return buffer.getvalue()
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (r["task_type"], r["total"], r["failure_rate"], r["median_seconds"], r["states"])
        )
        + "</tr>"
        for r in report["types"]
    )
    failures = "".join(
        f"<li>#{f['id']} {html.escape(f['task_type'])}: {html.escape(f['error_code'] or '-')}</li>"
        for f in report.get("recent_failures", [])
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Task report</title></head><body>"
        f"<h1>Task report: last {report['days']} days</h1>"
        f"<p>{'All tasks' if report.get('scope') == 'all' else 'Your tasks'}</p>"
        "<table border='1'><tr><th>type</th><th>total</th><th>failure rate</th><th>median s</th><th>states</th></tr>"
        f"{rows}</table>" + (f"<h2>Recent failures</h2><ul>{failures}</ul>" if failures else "") + "</body></html>"
    )


@LongTimeTaskRegister.register(
    task_type="report_generation",
    description="A report on the task table: totals, states, failure rate and median duration per type.",
    timeout=1800,
    soft_timeout=1700,
    queue="default",
    priority=7,
    param_schema={
        "type": "object",
        "properties": {
            "report_type": {"type": "string", "enum": ["summary", "detailed"], "default": "summary"},
            "format": {"type": "string", "enum": ["html", "csv", "json"], "default": "html"},
            "days": {"type": "integer", "minimum": 1, "maximum": 3650, "default": 7},
        },
        "additionalProperties": False,
    },
    result_files=report_path_of,
)
def generate_report(task_id: int, params: dict[str, Any]) -> dict[str, Any]:
    report_type = params.get("report_type", "summary")
    fmt = params.get("format", "html")
    report = task_report(params.get("days", 7), detailed=report_type == "detailed")
    report_progress(90, "writing the report")
    relative = f"reports/{task_id}.{fmt}"
    size = write_atomically(conf.RESULTS_DIR / relative, render_report(report, fmt))
    return {
        "report_path": relative,  # inside the results directory
        "report_type": report_type,
        "format": fmt,
        "scope": report["scope"],  # "all" tasks, or the owner's "own"
        "task_types": len(report["types"]),
        "bytes": size,
    }

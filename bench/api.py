"""The API under load: submit, detail and list against gunicorn (the README's production server), with wrk.

    python -m bench.api [--clients 1 8 32] [--reps 3] [--duration 10] [--rows 1000000] [--out bench/api.json]

Sets up the benchmark database (``ltt_bench``, as ``bench.run``), fills it with generated tasks (``bench.scale``'s
fill), creates API users and tokens, then for each gunicorn configuration starts
``gunicorn demo.wsgi --bind 127.0.0.1:<free port> ...`` (or ``demo.asgi:application`` with uvicorn workers, as
docs/dashboard.md decides) with the production settings of the README's Deployment section
(``DJANGO_DEBUG=false``, HTTPS redirect and HSTS on, behind a TLS-terminating proxy; Redis as the broker and as
the cache of the throttle counters) and loads each endpoint with wrk (a C load generator: one thread, so
it takes little CPU from the server on a small machine) at each number of concurrent clients (closed loop: each
connection sends its next request when the previous one is answered). Figures are the median of the repetitions.

The submit limits are raised (``LONG_TIME_TASK_SUBMIT_RATE``, ``LONG_TIME_TASK_MAX_UNFINISHED_PER_USER``) and the
submissions are spread over many users, so both checks still run on every submit (a throttle read and write in
Redis, a count of the user's unfinished tasks) but none answers 429; every status other than 2xx is counted and
reported. No worker runs: submitted tasks wait in the broker, which is emptied after every run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import redis

from bench.run import busy_cpu, tree_cpu

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "var" / "bench"
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ltt_bench")
DB_NAME = DATABASE_URL.rsplit("/", 1)[-1]
BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CACHE_URL = os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/12")
SUBMIT_USERS = 1000  # submissions rotate over these users' tokens, so no one user nears the limits
SUBMIT_BODY = '{"task_type": "data_analysis", "params": {"dataset_id": 7, "analysis_type": "full"}}'
# (name, gunicorn application and options): the README's command first.
CONFIGS = [
    ("sync, 4 workers", ["demo.wsgi", "--workers", "4"]),
    ("sync, 2 workers", ["demo.wsgi", "--workers", "2"]),
    ("gthread, 2 workers × 4 threads", ["demo.wsgi", "--workers", "2", "--threads", "4"]),
]
# Not run by default: docs/dashboard.md's ASGI server. Under ASGI every request runs its sync view in a thread
# of its own, so with the default DATABASE_CONN_MAX_AGE (600 s) every request leaves a connection open and
# PostgreSQL soon refuses more ("too many clients already", 500s): as Django advises, 0 there.
EXTRA_CONFIGS = [
    ("uvicorn (ASGI), 2 workers", ["demo.asgi:application", "-k", "uvicorn_worker.UvicornWorker", "--workers", "2"]),
]
CONFIG_ENV = {"uvicorn (ASGI), 2 workers": {"DATABASE_CONN_MAX_AGE": "0"}}
Endpoint = tuple[str, str, str, str | None]
# (name, method, path, body): the three endpoints of the issue. {id} rotates over the reader's tasks.
ENDPOINTS = [
    ("submit", "POST", "/api/tasks/", SUBMIT_BODY),
    ("detail", "GET", "/api/tasks/{id}/", None),
    ("list", "GET", "/api/tasks/list/?page_size=20", None),
]


def server_env() -> dict[str, str]:
    """The production environment of the README's Deployment section, on the benchmark's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LONG_TIME_TASK_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="demo.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        # TLS ends at the proxy, which says so in X-Forwarded-Proto (wrk.lua sends it): the redirect stays on.
        DJANGO_SECURE_PROXY_SSL_HEADER="true",
        DATABASE_URL=DATABASE_URL,
        DJANGO_CACHE_URL=CACHE_URL,
        CELERY_BROKER_URL=BROKER_URL,
        # Raised for the benchmark (spread over SUBMIT_USERS users, each submits well under 60 a minute).
        LONG_TIME_TASK_SUBMIT_RATE="6000/min",
        LONG_TIME_TASK_MAX_UNFINISHED_PER_USER="100000",
        DEMO_VAR_DIR=str(ROOT / "var" / "bench" / "demo-var"),
        PYTHONWARNINGS="ignore",
    )
    return env


def services_cpu() -> float:
    """CPU seconds used so far by Redis and by PostgreSQL's shared processes and ltt_bench backends (not by
    backends of other databases: the machine may be shared)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        name, times = proc.info["name"] or "", proc.info["cpu_times"]
        if not times or not name.startswith(("redis-server", "postgres")):
            continue
        title = " ".join(proc.info["cmdline"] or [])
        if name.startswith("postgres") and ("(" in title or "[local]" in title) and DB_NAME not in title:
            continue  # a client backend of another database
        total += times.user + times.system
    return total


def wait_until_quiet(threshold: float = 0.25, patience: float = 120) -> float:
    """Wait (up to ``patience`` s) until the machine is idle: less than ``threshold`` cores busy over 2 s.

    Nothing of the benchmark runs between runs, so what is busy then is someone else. Returns the seconds waited.
    """
    started = time.monotonic()
    while time.monotonic() - started < patience:
        before, mark = busy_cpu(), time.monotonic()
        time.sleep(2)
        if (busy_cpu() - before) / (time.monotonic() - mark) < threshold:
            break
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(rows: int) -> dict[str, Any]:
    """Fill the table, and write the token and task-id files that wrk.lua rotates over."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from bench.scale import fill
    from long_time_task.models import ApiToken

    started = time.perf_counter()
    owners, _ = fill(rows)  # a year of tasks spread over 10 owners; the first one reads
    user_model = get_user_model()
    names = [f"api-submit-{i}" for i in range(SUBMIT_USERS)]
    existing = set(user_model.objects.filter(username__in=names).values_list("username", flat=True))
    user_model.objects.bulk_create([user_model(username=name) for name in names if name not in existing])
    submitters = list(user_model.objects.filter(username__in=names))
    reader = user_model.objects.get(id=owners[0])
    ApiToken.objects.filter(name="bench.api").delete()
    tokens: dict[str, list[str]] = {"reader": [], "submit": []}
    for key, users in (("reader", [reader]), ("submit", submitters)):
        for user in users:
            tokens[key].append(ApiToken.issue(user, name="bench.api")[1])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM long_time_task WHERE owner_id = %s ORDER BY md5(id::text) LIMIT 1000", [reader.id]
        )
        ids = [str(row[0]) for row in cursor.fetchall()]
        cursor.execute("SELECT count(*) FROM long_time_task WHERE owner_id = %s", [reader.id])
        reader_rows = cursor.fetchone()[0]
    connection.close()
    (LOGS / "tokens-reader.txt").write_text(tokens["reader"][0] + "\n")
    (LOGS / "tokens-submit.txt").write_text("\n".join(tokens["submit"]) + "\n")
    (LOGS / "ids-reader.txt").write_text("\n".join(ids) + "\n")
    return {
        "rows": rows,
        "reader_rows": reader_rows,
        "submit_users": SUBMIT_USERS,
        "seconds": round(time.perf_counter() - started, 1),
        "submitter_ids": [u.id for u in submitters],
    }


def forget_submissions(submitter_ids: list[int]) -> None:
    """Delete the tasks submitted by the previous configuration, so every configuration starts alike."""
    import psycopg

    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute("DELETE FROM long_time_task WHERE owner_id = ANY(%s)", [submitter_ids])
        conn.execute("VACUUM (ANALYZE) long_time_task")
    redis.Redis.from_url(BROKER_URL).flushdb()
    redis.Redis.from_url(CACHE_URL).flushdb()


def call(url: str, token: str, *, body: str | None = None, proxy: bool = True) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if proxy:
        headers["X-Forwarded-Proto"] = "https"
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body.encode() if body else None, headers=headers)  # noqa: S310

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """gunicorn on 127.0.0.1:<free port>, with the production environment."""

    def __init__(self, name: str, options: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        self.log = (LOGS / f"gunicorn-{slug}.log").open("wb")
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        self.command = ["gunicorn", options[0], "--bind", f"127.0.0.1:{self.port}", *options[1:]]
        self.popen = subprocess.Popen(
            [gunicorn, *self.command[1:]],
            cwd=ROOT,
            env={**server_env(), **CONFIG_ENV.get(name, {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.proc = psutil.Process(self.popen.pid)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = call(f"{self.base}/api/task-types/", "no-token")
                if status == 401:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.popen.poll() is not None:
                raise RuntimeError(f"gunicorn did not start; see {self.log.name}")
            time.sleep(0.2)

    def check(self, reader: str, submitter: str, some_id: str) -> None:
        """The production behaviours the figures rely on, before any load."""
        status, _ = call(f"{self.base}/api/tasks/{some_id}/", reader, proxy=False)
        if status != 301:  # plain HTTP without the proxy's header is redirected to HTTPS: DEBUG off settings
            raise RuntimeError(f"expected the HTTPS redirect (301) without X-Forwarded-Proto, got {status}")
        for path, token, body, expected in [
            (f"/api/tasks/{some_id}/", reader, None, 200),
            ("/api/tasks/list/?page_size=20", reader, None, 200),
            ("/api/tasks/", submitter, SUBMIT_BODY, 201),
        ]:
            status, content = call(self.base + path, token, body=body)
            if status != expected:
                raise RuntimeError(f"{path}: expected {expected}, got {status}: {content[:300]!r}")

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(60)
        self.log.close()


def wrk(base: str, endpoint: Endpoint, clients: int, duration: int, args: argparse.Namespace) -> dict[str, Any]:
    name, method, path, body = endpoint
    tokens = LOGS / ("tokens-submit.txt" if name == "submit" else "tokens-reader.txt")
    ids = LOGS / "ids-reader.txt" if "{id}" in path else "-"
    script = str(ROOT / "bench" / "wrk.lua")
    command = [args.wrk, "-t1", f"-c{clients}", f"-d{duration}s", "--timeout", "10s", "-s", script,
               base, "--", method, path, str(tokens), str(ids), *([body] if body else [])]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    data = json.loads(line.removeprefix("WRK_JSON "))
    data["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return data


def run_one(server: Server, endpoint: Endpoint, clients: int, args: argparse.Namespace) -> dict[str, Any]:
    waited = wait_until_quiet()
    server0, services0, busy0 = tree_cpu(server.proc), services_cpu(), busy_cpu()
    data = wrk(server.base, endpoint, clients, args.duration, args)
    server_s, services_s = tree_cpu(server.proc) - server0, services_cpu() - services0
    other_s = busy_cpu() - busy0 - server_s - services_s - data["client_cpu_s"]
    if endpoint[0] == "submit":
        redis.Redis.from_url(BROKER_URL).flushdb()  # no worker: drop the queued messages
    seconds = data["duration_us"] / 1e6
    requests = data["requests"]
    ok = sum(n for status, n in data["statuses"].items() if 200 <= int(status) < 300)
    errors = sum(data["errors"][k] for k in ("connect", "read", "write", "timeout"))
    return {
        "endpoint": endpoint[0],
        "clients": clients,
        "requests": requests,
        "rps": requests / seconds,
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "statuses": data["statuses"],
        "non_2xx": sum(data["statuses"].values()) - ok,
        "socket_errors": errors,
        "gunicorn_cpu_ms_per_request": server_s / max(requests, 1) * 1000,
        "db_redis_cpu_ms_per_request": services_s / max(requests, 1) * 1000,
        "wrk_cpu_share": data["client_cpu_s"] / seconds,  # in cores
        # Everything else that ran on the machine meanwhile (other users of a shared machine, PostgreSQL's
        # work for other databases, the kernel), in cores: near 0 on a quiet machine.
        "other_cpu_share": max(0.0, other_s) / seconds,
        "waited_for_quiet_s": round(waited, 1),
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["config"], r["endpoint"], r["clients"]) for r in runs}, key=lambda k: (
        [c[0] for c in CONFIGS + EXTRA_CONFIGS].index(k[0]), [e[0] for e in ENDPOINTS].index(k[1]), k[2]))  # fmt: skip
    for config, endpoint, clients in keys:
        group = [r for r in runs if (r["config"], r["endpoint"], r["clients"]) == (config, endpoint, clients)]
        row: dict[str, Any] = {"config": config, "endpoint": endpoint, "clients": clients, "reps": len(group)}
        for metric in ("rps", "p50_ms", "p90_ms", "p99_ms", "gunicorn_cpu_ms_per_request",
                       "db_redis_cpu_ms_per_request", "wrk_cpu_share", "other_cpu_share"):  # fmt: skip
            values = [r[metric] for r in group]
            row[metric] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        row["requests"] = sum(r["requests"] for r in group)
        row["non_2xx"] = sum(r["non_2xx"] for r in group)
        row["socket_errors"] = sum(r["socket_errors"] for r in group)
        rows.append(row)
    return rows


def git_version() -> str:
    try:
        git = shutil.which("git") or "git"
        out = subprocess.run([git, "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded load per endpoint")
    parser.add_argument("--rows", type=int, default=1_000_000, help="tasks in the table")
    parser.add_argument("--configs", nargs="+", help="only these gunicorn configurations (by name)")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--out", default=str(ROOT / "bench" / "api.json"))
    args = parser.parse_args()
    if not shutil.which(args.wrk):
        sys.exit("wrk is not installed: apt-get install wrk (make bench-api does it)")
    LOGS.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    from bench.run import setup

    setup()
    import django

    django.setup()
    prepared = prepare(args.rows)
    submitter_ids = prepared.pop("submitter_ids")
    reader = (LOGS / "tokens-reader.txt").read_text().strip()
    submitter = (LOGS / "tokens-submit.txt").read_text().split()[0]
    some_id = (LOGS / "ids-reader.txt").read_text().split()[0]
    # As the Deployment section does before starting gunicorn (WhiteNoise serves what this collects).
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=server_env(),
                   check=True)  # fmt: skip
    configs = [c for c in CONFIGS + EXTRA_CONFIGS if c[0] in args.configs] if args.configs else CONFIGS
    version = git_version()
    runs: list[dict[str, Any]] = []
    commands: dict[str, str] = {}
    history = [shlex.join(["python", "-m", "bench.api", *sys.argv[1:]])]
    if args.configs and Path(args.out).exists():
        # Measure only these configurations again (e.g. after a run disturbed by other work on the machine):
        # the others' runs are kept from the previous file, and the commands of both are recorded.
        previous = json.loads(Path(args.out).read_text())
        runs = [r for r in previous["runs"] if r["config"] not in args.configs]
        commands = {k: v for k, v in previous["configs"].items() if k not in args.configs}
        history = [*previous.get("commands", [previous["command"]]), *history]
    for name, options in configs:
        forget_submissions(submitter_ids)
        server = Server(name, options)
        extra_env = " ".join(f"{k}={v}" for k, v in CONFIG_ENV.get(name, {}).items())
        commands[name] = (extra_env + " " if extra_env else "") + " ".join(server.command).replace(
            str(server.port), "PORT"
        )
        try:
            server.check(reader, submitter, some_id)
            for endpoint in ENDPOINTS:
                wrk(server.base, endpoint, max(args.clients), args.warmup, args)  # warm-up: connections, caches
                for rep in range(args.reps):
                    for clients in args.clients:
                        result = run_one(server, endpoint, clients, args)
                        result.update(
                            config=name, rep=rep, version=version, at=datetime.now(UTC).isoformat(timespec="seconds")
                        )
                        runs.append(result)
                        print(json.dumps({k: v for k, v in result.items() if k != "statuses"}), flush=True)  # noqa: T201
        finally:
            server.stop()
    forget_submissions(submitter_ids)
    report = {
        "command": "python -m bench.api",
        "commands": history,
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "wrk")},
        "version": git_version(),
        "machine": {
            "cpus": psutil.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "wrk": subprocess.run([args.wrk, "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip(),
            "gunicorn": importlib.metadata.version("gunicorn"),
        },
        "server_env": {
            k: v
            for k, v in server_env().items()
            if k.startswith(("DJANGO_", "LONG_TIME_TASK_", "CELERY_", "DATABASE_")) and k != "DJANGO_SECRET_KEY"
        },  # fmt: skip
        "prepared": prepared,
        "endpoints": {name: f"{method} {path}" for name, method, path, _ in ENDPOINTS},
        "submit_body": SUBMIT_BODY,
        "configs": {c: commands[c] for c, _ in CONFIGS + EXTRA_CONFIGS if c in commands},
        "runs": runs,
        "summary": summarise(runs),
    }
    Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    bad = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
    if bad:
        sys.exit(f"{bad} requests answered other than 2xx or failed: see {args.out}")


if __name__ == "__main__":
    main()

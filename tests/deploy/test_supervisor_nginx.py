"""deploy/supervisor/ltt.conf and deploy/nginx/ltt.conf, started on this machine: Debian's supervisord runs the
web and event-stream gunicorns, three worker groups and beat, Debian's nginx terminates TLS in front of them
(a certificate made here with openssl), and the tests drive the API and a live stream through nginx over HTTPS.

The recipes are rendered as tests/deploy/recipes.py says (paths and ports only), on the test database and a Redis
database of their own (13, or TEST_DEPLOY_BROKER_URL), with the demo's production settings (DEBUG off, HTTPS
redirect on) and the test task types. supervisord and nginx each run in a process group of their own, with their
pid, socket and logs in the test's directory, and are stopped by pid at the end, whatever happened.
"""

from __future__ import annotations

import getpass
import http.client
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.conf import settings

from long_time_task.models import ApiToken, LongTimeTask, TaskAttempt, TaskState
from tests.deploy.conftest import binary
from tests.deploy.recipes import DEPLOY, VENV, Layout
from tests.security.stack import PRIVATE_PREFIXES, redis_url_with_db
from tests.testapp.models import HandlerRun
from tests.workers import ROOT, free_port, wait_for, wait_for_sessions_to_end

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

HOST = "tasks.example.com"  # the recipe's server_name; the certificate is for it and for 127.0.0.1
BROKER_DB = 13
APPLICATION = "ltt-deploy-stack"  # application_name of the stack's database connections
PROGRAMS = ("web", "events", "worker-default", "worker-heavy", "worker-maintenance", "beat")


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Deployment:
    """The running stack: nginx's ports, the TLS context that trusts its certificate, the programs' logs."""

    layout: Layout
    tls: ssl.SSLContext
    supervisorctl_args: list[str]

    def https(self, timeout: float = 30) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.layout.https_port, context=self.tls, timeout=timeout)

    def request(self, method: str, path: str, *, body: bytes | None = None, **headers: str) -> Response:
        connection = self.https()
        try:
            connection.request(method, path, body=body, headers={"Host": HOST, **headers})
            with connection.getresponse() as response:
                return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    def supervisorctl(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [*self.supervisorctl_args, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        return result.stdout + result.stderr

    def log(self, program: str) -> str:
        path = self.layout.logs / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def write_env(path: Path, values: dict[str, str]) -> None:
    """/etc/ltt/env, as deploy/etc/ltt/env writes it: KEY='value' lines."""
    path.write_text("".join(f"{key}='{value}'\n" for key, value in values.items()))
    path.chmod(0o600)


def self_signed_certificate(openssl: Path, tls_dir: Path) -> Path:
    tls_dir.mkdir(parents=True)
    subprocess.run(
        [
            str(openssl), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST},IP:127.0.0.1",
            "-keyout", str(tls_dir / "privkey.pem"), "-out", str(tls_dir / "fullchain.pem"),
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return tls_dir / "fullchain.pem"


def supervisord_conf(layout: Layout, socket: Path, program_file: Path) -> str:
    """The main configuration Debian's package installs (/etc/supervisor/supervisord.conf), with the test's paths:
    it includes the recipe as Debian's includes conf.d/*.conf."""
    run = layout.root / "run"
    return f"""[unix_http_server]
file={socket}
chmod=0700

[supervisord]
nodaemon=true
logfile={layout.logs}/supervisord.log
pidfile={run}/supervisord.pid
childlogdir={layout.logs}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket}

[include]
files = {program_file}
"""


def nginx_conf(layout: Layout, site: Path) -> str:
    """The main configuration Debian's package installs (/etc/nginx/nginx.conf), reduced, with the test's paths:
    it includes the recipe as Debian's includes sites-enabled/*."""
    run = layout.root / "run"
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""  # workers as the owner of the test's files
    return f"""{user}
daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {layout.logs}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {layout.logs}/nginx-access.log;
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    include {site};
}}
"""


def stop_group(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """``sig`` to the process, then SIGKILL to its whole process group if it is still there after ``timeout``."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)


def still_a_program(pid: int) -> bool:
    """Whether ``pid`` still leads the process group of one of the stack's programs (a command of this virtualenv),
    and not a process that got the number since."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        return os.getpgid(pid) == pid and str(VENV) in command
    except OSError:
        return False


def ready(deployment: Deployment, worker: str) -> bool:
    return " ready." in deployment.log(worker)


def answers(deployment: Deployment, path: str, status: int) -> bool:
    try:
        return deployment.request("GET", path).status == status
    except OSError:
        return False


@pytest.fixture(scope="module")
def deployment(
    worker_database: str, broker: Any, tmp_path_factory: pytest.TempPathFactory, django_db_blocker: Any
) -> Iterator[Deployment]:
    nginx, openssl = binary("nginx", "nginx"), binary("openssl", "openssl")
    supervisord = binary("supervisord", "supervisor")
    supervisorctl = binary("supervisorctl", "supervisor")
    root = tmp_path_factory.mktemp("deploy")
    layout = Layout(root, web_port=free_port(), events_port=free_port(), http_port=free_port(), https_port=free_port())
    for directory in (layout.etc, layout.state / "static", layout.state / "files", layout.state / "results"):
        directory.mkdir(parents=True)
    for directory in (layout.logs, root / "run"):
        directory.mkdir()
    certificate = self_signed_certificate(openssl, layout.etc / "tls")

    database = urlsplit(settings.TEST_DATABASE_URL)._replace(path=f"/{worker_database}")
    database_url = urlunsplit(database._replace(query=f"application_name={APPLICATION}"))
    broker_url = os.environ.get("TEST_DEPLOY_BROKER_URL") or redis_url_with_db(settings.TEST_REDIS_URL, BROKER_DB)
    store = redis.Redis.from_url(broker_url)
    store.flushdb()
    write_env(
        layout.etc / "env",
        {
            # deploy/etc/ltt/env, filled in for this machine.
            "DJANGO_DEBUG": "false",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": HOST,
            "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
            "DJANGO_SECURE_PROXY_SSL_HEADER": "true",
            "LONG_TIME_TASK_TRUSTED_PROXY_COUNT": "1",
            "DATABASE_URL": database_url,
            "DJANGO_CACHE_URL": broker_url,
            "CELERY_BROKER_URL": broker_url,
            "DEMO_VAR_DIR": str(layout.state),
            "DJANGO_STATIC_ROOT": str(layout.state / "static"),
            "LONG_TIME_TASK_FILES_DIR": str(layout.state / "files"),
            "LONG_TIME_TASK_RESULTS_DIR": str(layout.state / "results"),
            "LTT_WEB_BIND": f"127.0.0.1:{layout.web_port}",
            "LTT_EVENTS_BIND": f"127.0.0.1:{layout.events_port}",
            # This machine's share: one web process, the test task types, every progress report written.
            "LTT_WEB_WORKERS": "1",
            "DEMO_EXTRA_APPS": "tests.testapp",
            "LONG_TIME_TASK_PROGRESS_INTERVAL": "0.2",
            # A lost worker's tasks handed back within seconds, not the production 30 s lease plus 15 s reaper.
            "LONG_TIME_TASK_LEASE_SECONDS": "6",
            "LONG_TIME_TASK_HEARTBEAT_INTERVAL": "1",
            "LONG_TIME_TASK_REAPER_INTERVAL": "1",
            "PYTHONWARNINGS": "ignore",
        },
    )
    # supervisord's own environment: the machine's, without the test run's settings (the programs get theirs
    # from the env file, through deploy/bin/ltt-exec).
    base_env = {k: v for k, v in os.environ.items() if not k.startswith((*PRIVATE_PREFIXES, "TEST_"))}
    exec_env = [str(DEPLOY / "bin" / "ltt-exec"), str(layout.etc / "env")]
    collect = subprocess.run(
        [*exec_env, str(VENV / "bin" / "python"), "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT, env=base_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert collect.returncode == 0, collect.stderr

    programs = layout.etc / "supervisor" / "ltt.conf"
    programs.parent.mkdir()
    programs.write_text(layout.supervisor((DEPLOY / "supervisor" / "ltt.conf").read_text()))
    socket = root / "run" / "supervisor.sock"
    main_conf = layout.etc / "supervisor" / "supervisord.conf"
    main_conf.write_text(supervisord_conf(layout, socket, programs))
    site = layout.etc / "nginx" / "ltt.conf"
    site.parent.mkdir()
    site.write_text(layout.nginx((DEPLOY / "nginx" / "ltt.conf").read_text()))
    (layout.etc / "nginx" / "nginx.conf").write_text(nginx_conf(layout, site))
    nginx_args = [str(nginx), "-p", str(root / "run"), "-e", str(layout.logs / "nginx-error.log")]
    nginx_args += ["-c", str(layout.etc / "nginx" / "nginx.conf")]
    check = subprocess.run([*nginx_args, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr

    tls = ssl.create_default_context(cafile=str(certificate))
    running = Deployment(layout, tls, [str(supervisorctl), "-c", str(main_conf)])
    started: list[tuple[subprocess.Popen[bytes], int, float]] = []
    try:
        with (root / "supervisord.out").open("wb") as out:
            supervisor = subprocess.Popen(
                [str(supervisord), "-n", "-c", str(main_conf)],
                env=base_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        # SIGTERM: supervisord stops every program (stopsignal, stopwaitsecs) before it exits.
        started.append((supervisor, signal.SIGTERM, 120))
        with (root / "nginx.out").open("wb") as out:
            server = subprocess.Popen(nginx_args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        started.append((server, signal.SIGQUIT, 15))  # SIGQUIT: nginx's graceful shutdown

        def all_running() -> bool:
            status = running.supervisorctl("status")
            return all(f"ltt:{name} " in status for name in PROGRAMS) and status.count("RUNNING") == len(PROGRAMS)

        wait_for(all_running, timeout=120, interval=0.5, what="supervisord to run every program")
        for worker in ("worker-default", "worker-heavy", "worker-maintenance"):
            wait_for(partial(ready, running, worker), timeout=60, interval=0.2, what=f"{worker} to be ready")
        wait_for(lambda: answers(running, "/api/task-types/", 401), timeout=60, interval=0.2, what="web via nginx")
        wait_for(lambda: answers(running, "/api/tasks/events/", 401), timeout=60, interval=0.2, what="events")
        yield running
    finally:
        pids = running.supervisorctl("pid", "all", timeout=30).split() if started else []
        for process, sig, timeout in reversed(started):
            stop_group(process, sig, timeout)
        for pid in map(int, filter(str.isdigit, pids)):  # a program supervisord did not stop (a group of its own)
            if still_a_program(pid):
                os.killpg(pid, signal.SIGKILL)
        store.flushdb()
        store.close()
        with django_db_blocker.unblock():
            wait_for_sessions_to_end(APPLICATION)


@pytest.fixture
def token(django_user_model: Any) -> str:
    user = django_user_model.objects.create_user("deployer", password="deployer-password")
    return ApiToken.issue(user)[1]


def submit(deployment: Deployment, token: str, task_type: str, params: dict[str, Any]) -> int:
    body = json.dumps({"task_type": task_type, "params": params}).encode()
    response = deployment.request(
        "POST", "/api/tasks/", body=body, Authorization=f"Bearer {token}", **{"Content-Type": "application/json"}
    )
    # 201, not a redirect to https: nginx told Django the request came over TLS (X-Forwarded-Proto).
    assert response.status == 201, (response.status, response.body[:500])
    return int(response.json()["task_id"])


def state_of(task_id: int) -> str:
    return str(LongTimeTask.objects.values_list("state", flat=True).get(id=task_id))


def test_plain_http_is_redirected_to_https_and_nginx_serves_the_static_files(deployment: Deployment) -> None:
    plain = http.client.HTTPConnection("127.0.0.1", deployment.layout.http_port, timeout=10)
    plain.request("GET", "/dashboard/?page=2", headers={"Host": HOST})
    with plain.getresponse() as redirect:
        assert (redirect.status, redirect.headers["Location"]) == (301, f"https://{HOST}/dashboard/?page=2")
    plain.close()

    manifest = json.loads((deployment.layout.state / "static" / "staticfiles.json").read_text())["paths"]
    hashed = next(path for name, path in manifest.items() if name.endswith(".css"))
    response = deployment.request("GET", f"/static/{hashed}")
    assert response.status == 200
    assert response.body == (deployment.layout.state / "static" / hashed).read_bytes()
    assert response.headers["Content-Type"] == "text/css"
    assert "/static/" not in deployment.log("web")  # nginx answered it; gunicorn never saw it

    connection = deployment.https()
    connection.connect()
    assert isinstance(connection.sock, ssl.SSLSocket)
    assert connection.sock.version() in ("TLSv1.2", "TLSv1.3")
    connection.close()


def test_a_task_submitted_through_nginx_finishes_and_its_stream_arrives_live(
    deployment: Deployment, token: str
) -> None:
    task_id = submit(deployment, token, "test_progress", {"steps": 6, "delay": 0.5})
    connection = deployment.https(timeout=30)
    connection.request(
        "GET",
        f"/api/tasks/{task_id}/events/",
        headers={"Host": HOST, "Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    arrivals: list[tuple[float, dict[str, Any]]] = []  # each task event, with the time it was read
    with connection.getresponse() as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        pending, ended, deadline = "", False, time.monotonic() + 30
        while not ended and time.monotonic() < deadline:
            chunk = response.read1(65536).decode()
            if not chunk:
                break
            pending += chunk
            while "\n\n" in pending:
                block, pending = pending.split("\n\n", 1)
                ended = ended or block.startswith("event: end")
                if block.startswith("event: task\ndata: "):
                    arrivals.append((time.monotonic(), json.loads(block.removeprefix("event: task\ndata: "))))
    connection.close()

    assert ended, arrivals
    assert arrivals[-1][1]["state"] == TaskState.FINISHED, arrivals
    steps = [(at, data["progress"]["current"]) for at, data in arrivals if data["progress"]]
    # The events came one by one as the task made progress (6 steps, 0.5 s apart), not all at once at the end:
    # nothing between the worker and the reader (the ASGI process, nginx) held them back.
    assert len({current for _, current in steps}) >= 4, arrivals
    assert arrivals[-1][0] - steps[0][0] >= 1.5, arrivals
    detail = deployment.request("GET", f"/api/tasks/{task_id}/", Authorization=f"Bearer {token}").json()
    assert detail["task"]["state"] == TaskState.FINISHED
    # nginx sent the stream to the ASGI process, the rest to the WSGI process.
    assert f"/api/tasks/{task_id}/events/" in deployment.log("events")
    assert f"/api/tasks/{task_id}/events/" not in deployment.log("web")
    assert '"POST /api/tasks/ HTTP/1.1" 201' in deployment.log("web")


def test_stopping_a_worker_during_a_task_lets_the_task_finish_and_a_restarted_worker_takes_the_queue(
    deployment: Deployment, token: str
) -> None:
    running = submit(deployment, token, "fault_work", {"seconds": 4})
    wait_for(lambda: state_of(running) == TaskState.RUNNING, timeout=30, what="the task to start")
    started = time.monotonic()
    out = deployment.supervisorctl("stop", "ltt:worker-default")  # returns once the program has exited
    assert "stopped" in out, out
    assert time.monotonic() - started >= 1, "the worker did not wait for its task"
    # Celery's warm shutdown (SIGTERM to the main process only): the task finished before the worker exited, in
    # its first and only attempt.
    assert state_of(running) == TaskState.FINISHED
    assert HandlerRun.objects.filter(task_id=running).count() == 1
    assert "STOPPED" in deployment.supervisorctl("status", "ltt:worker-default")

    waiting = submit(deployment, token, "fault_work", {"seconds": 0.1})
    time.sleep(1)
    assert state_of(waiting) == TaskState.PENDING  # no worker reads the default queue now
    assert "started" in deployment.supervisorctl("start", "ltt:worker-default")
    wait_for(lambda: state_of(waiting) == TaskState.FINISHED, timeout=60, interval=0.2, what="the queued task")


def test_the_api_refuses_a_body_over_its_limit_and_nginx_one_far_over_it(deployment: Deployment, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limit = settings.LONG_TIME_TASK_MAX_BODY_BYTES
    over = deployment.request("POST", "/api/tasks/", body=b" " * (limit + 1), **headers)
    assert (over.status, over.json()["code"]) == (413, "request_too_large")  # the API's own JSON answer
    far_over = deployment.request("POST", "/api/tasks/", body=b" " * (4 * limit), **headers)
    assert far_over.status == 413 and b"nginx" in far_over.body  # nginx's: gunicorn never read it


def readies(deployment: Deployment, worker: str) -> int:
    return deployment.log(worker).count(" ready.")  # the log outlives the restarts


def ready_again(deployment: Deployment, worker: str, before: int) -> bool:
    return readies(deployment, worker) > before


def restarted(deployment: Deployment, before: dict[str, int]) -> None:
    for worker, count in before.items():
        wait_for(partial(ready_again, deployment, worker, count), timeout=120, interval=0.2, what=f"{worker} again")


def test_a_worker_killed_when_its_stop_timeout_runs_out_hands_its_task_back(deployment: Deployment, token: str) -> None:
    """A task longer than the worker's ``stopwaitsecs``: Supervisor then sends SIGKILL to the worker's whole process
    group (``killasgroup``), task and all. The task is not lost: nobody renews its lease, the reaper (on the
    maintenance worker) hands it back, and the worker started again runs it from the start."""
    programs = deployment.layout.etc / "supervisor" / "ltt.conf"
    recipe = programs.read_text()
    short = re.sub(r"(\[program:worker-default\][^\[]*?stopwaitsecs=)\d+", r"\g<1>2", recipe, flags=re.DOTALL)
    assert short != recipe
    programs.write_text(short)
    workers = ("worker-default", "worker-heavy", "worker-maintenance")
    try:
        readied = {worker: readies(deployment, worker) for worker in workers}
        assert "ltt" in deployment.supervisorctl("update")  # the group again, with a 2 s stop for worker-default
        restarted(deployment, readied)
        task = submit(deployment, token, "fault_work", {"seconds": 8})
        wait_for(lambda: state_of(task) == TaskState.RUNNING, timeout=30, what="the task to start")
        started = time.monotonic()
        assert "stopped" in deployment.supervisorctl("stop", "ltt:worker-default")
        assert time.monotonic() - started < 8  # killed after its 2 s, not at the task's end
        assert state_of(task) == TaskState.RUNNING  # its attempt died with the worker; only the lease knows
        wait_for(lambda: state_of(task) == TaskState.RETRYING, timeout=60, interval=0.2, what="the reaper")
        assert "started" in deployment.supervisorctl("start", "ltt:worker-default")
        wait_for(lambda: state_of(task) == TaskState.FINISHED, timeout=60, interval=0.2, what="the second attempt")
        row = LongTimeTask.objects.get(id=task)
        assert row.attempts == 2
        assert [(a.number, a.outcome, a.cause) for a in TaskAttempt.objects.filter(task_id=task)] == [
            (1, "retry", "lease_expired")
        ]
        assert sorted(HandlerRun.objects.filter(task_id=task).values_list("attempt", flat=True)) == [1, 2]
    finally:
        programs.write_text(recipe)
        readied = {worker: readies(deployment, worker) for worker in workers}
        deployment.supervisorctl("update")
        restarted(deployment, readied)

"""A rediss:// broker with a password and a verified certificate: publish and consume over TLS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from long_time_task.models import LongTimeTask, TaskState
from tests.workers import ROOT, WorkerProcess, free_port, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def make_certificates(folder: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr")  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Any:
    make_certificates(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.pem", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.pem",
         "--tls-auth-clients", "no", "--requirepass", "s3cret", "--save", "", "--appendonly", "no"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield f"rediss://:s3cret@localhost:{port}/0", tmp_path / "ca.pem", port
    server.terminate()
    server.wait(15)


def test_tasks_flow_over_a_tls_broker_with_a_password(worker_database, tls_redis, tmp_path):
    url, ca, port = tls_redis
    env = worker_env(worker_database, CELERY_BROKER_URL=url, TEST_REDIS_URL=url, CELERY_BROKER_SSL_CA_CERTS=ca)
    worker = WorkerProcess(queues="default", concurrency=1, name="tls", log_path=tmp_path / "w.log", env=env)
    worker.start()
    try:
        assert f"rediss://:**@localhost:{port}/0" in worker.output()
        script = "from long_time_task.services import submit_task; print(submit_task('test_echo', {'tls': True}).id)"
        result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        task_id = int(result.stdout.strip().splitlines()[-1])
        done = wait_for(
            lambda: LongTimeTask.objects.filter(id=task_id, state=TaskState.FINISHED).first(),
            timeout=30,
            what="the task to finish over TLS",
        )
        assert done.result == {"echo": {"tls": True}, "task_id": task_id}
    finally:
        worker.stop()

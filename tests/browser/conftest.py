"""A live stack for the browser tests: ``runserver`` and a real Celery worker on the test database (PostgreSQL,
Redis), and Debian's chromium driven by Playwright. Without chromium or Playwright the tests skip on a laptop
and fail under CI=true."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.workers import WebServer, WorkerProcess, worker_env

CHROMIUM = os.environ.get("LTT_CHROMIUM", "/usr/bin/chromium")
# Worker side: write every progress report (the default throttles to one a second). Web side: runserver's
# streams as `make run` has them (a thread per connection: the Procfile allows 10 at once).
STACK_ENV = {
    "LONG_TIME_TASK_PROGRESS_INTERVAL": "0.2",
    "LONG_TIME_TASK_CANCEL_GRACE_SECONDS": "5",
    "LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS": "10",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in str(item.path):
            item.add_marker(pytest.mark.services)


def _missing(reason: str) -> None:
    if settings.CI:
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed (pip install -e '.[dev]')")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the tests' own ORM calls are still synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


# Module scope: the worker and the server go when the browser tests end, so that the worker cannot take the
# messages of later tests that start their own workers on the same queues.
@pytest.fixture(scope="module")
def web_server(worker_database: str, broker: Any, tmp_path_factory: Any) -> Iterator[str]:
    log = tmp_path_factory.mktemp("web") / "web.log"
    with WebServer(worker_env(worker_database, **STACK_ENV), log) as web:
        yield f"http://127.0.0.1:{web.port}"


@pytest.fixture(scope="module")
def start_dashboard_worker(worker_database: str, broker: Any, tmp_path_factory: Any) -> Iterator[Callable[[], None]]:
    """Starts the worker on first call (so a test can see a task wait as PENDING first); stopped at the end."""
    worker = WorkerProcess(
        queues="default,heavy",
        concurrency=2,
        name="dashboard",
        log_path=tmp_path_factory.mktemp("worker") / "worker.log",
        env=worker_env(worker_database, **STACK_ENV),
    )

    def start() -> None:
        if worker.process is None:
            worker.start()

    yield start
    worker.stop()


@pytest.fixture
def stack(web_server: str, start_dashboard_worker: Callable[[], None], chromium: Any) -> str:
    return web_server


@pytest.fixture
def new_page(chromium: Any, stack: str) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []

    def open_page(**options: Any) -> Any:
        options = {"locale": "en-US", "timezone_id": "Europe/Paris", **options}
        context = chromium.new_context(base_url=stack, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def login(page: Any, username: str, password: str) -> None:
    page.goto("/dashboard/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/dashboard/")


SCREENSHOTS = os.environ.get("LTT_DASHBOARD_SCREENSHOTS")  # a directory, e.g. docs/img: `make screenshots`


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"dashboard-{name}.png"), full_page=True)

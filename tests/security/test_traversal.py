"""Path traversal, against the live stack: file_processing's ``file_path`` (at submit, through every door, and
again in the worker), and the dashboard's file download URL.

The secret file lies next to the files and results directories; nothing may read it, name it, or say where the
directories are.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.utils import timezone

from long_time_task.models import TERMINAL_STATES, LongTimeTask, TaskState
from long_time_task.tasks_definitions import NOT_A_FILE
from tests.security.conftest import Person
from tests.security.stack import Response, Stack
from tests.workers import wait_for

SECRET = f"secret-{uuid.uuid4().hex}"
SUFFIX_RULE = "Invalid params at params.file_path: only .csv and .json files can be converted"
NUL_RULE = "Invalid params at params.file_path: NUL characters are not allowed"


@pytest.fixture(scope="module")
def layout(stack: Stack) -> Stack:
    """<root>/secret.csv beside <root>/files (with a harmless ok.csv, and symlinks out) and <root>/results."""
    (stack.root / "secret.csv").write_text(f"name,value\n{SECRET},1\n")
    (stack.files_dir / "ok.csv").write_text("name,value\nok,1\n")
    (stack.files_dir / "sub").mkdir(exist_ok=True)
    (stack.files_dir / "link.csv").symlink_to(stack.root / "secret.csv")
    (stack.files_dir / "sub" / "up").symlink_to(stack.root)
    (stack.results_dir / "files").mkdir(parents=True, exist_ok=True)
    (stack.results_dir / "files" / "link.json").symlink_to(stack.root / "secret.csv")
    return stack


def bad_paths(stack: Stack) -> list[str]:
    return [
        "../secret.csv",
        "sub/../../secret.csv",
        "./../secret.csv",
        str(stack.root / "secret.csv"),
        "//" + str(stack.root / "secret.csv").lstrip("/"),
        "link.csv",  # a symlink out
        "sub/up/secret.csv",  # through a symlinked directory
        "..\\secret.csv",
        "%2e%2e/secret.csv",
        "..%2fsecret.csv",
        "....//secret.csv",
        "~/secret.csv",
        "file:///" + str(stack.root / "secret.csv").lstrip("/"),
        "ok.csv\x00.csv",
        "a" * 1020 + ".csv",
        "é" * 600 + ".csv",  # short in characters, too long in bytes
        "sub",
        "sub/",
        "missing.csv",
        "/etc/passwd",
        "../../../../../../etc/passwd",
    ]


def assert_refused(response: Response, stack: Stack, sent: str, status: int = 400) -> None:
    assert response.status == status, (response.status, response.text[:300])
    assert SECRET not in response.text
    # No server path in the answer (a form may give back what was typed in it).
    typed = response.text.replace(html.escape(sent), "").replace(sent, "")
    assert str(stack.root) not in typed, sent


@pytest.fixture
def author(make_person: Callable[..., Person], orm: None) -> Iterator[Person]:
    person = make_person("user")
    yield person
    assert not LongTimeTask.objects.filter(owner=person.user).exclude(task_params={"file_path": "ok.csv"}).exists()


def test_submit_refuses_every_path_that_is_not_a_readable_file_inside_the_directory(
    layout: Stack, author: Person
) -> None:
    api = author.api()
    ok = api.post_json("/api/tasks/", {"task_type": "file_processing", "params": {"file_path": "ok.csv"}})
    assert ok.status == 201, ok.text  # the door is open: only the paths are refused
    for path in bad_paths(layout):
        response = api.post_json("/api/tasks/", {"task_type": "file_processing", "params": {"file_path": path}})
        assert_refused(response, layout, path)
        assert response.json()["code"] == "invalid_params", path
        assert response.json()["error"] in (NOT_A_FILE, SUFFIX_RULE, NUL_RULE), (path, response.json())


def test_the_dashboards_submit_form_refuses_them_too(layout: Stack, author: Person) -> None:
    for path in bad_paths(layout):
        if "\x00" in path:
            continue  # a form field with a NUL is refused by the form itself (below)
        fields = {"task_type": "file_processing", "file_path": path, "output_format": '"json"'}
        response = author.web.post_form("/dashboard/submit/", fields)
        assert_refused(response, layout, path)
    response = author.web.post_form("/dashboard/submit/", {"task_type": "file_processing", "file_path": "ok\x00.csv"})
    assert_refused(response, layout, "ok\x00.csv")


def test_the_admins_retry_form_refuses_them_too(
    layout: Stack, people: dict[str, Person], make_task: Callable[..., LongTimeTask], orm: None
) -> None:
    task = make_task(people["owner"].user, task_type="file_processing", state=TaskState.FAILED)
    for path in ("../secret.csv", "link.csv", str(layout.root / "secret.csv")):
        params = f'{{"file_path": "{path}"}}'
        response = people["staff"].web.post_form(
            f"/admin/long_time_task/longtimetask/{task.id}/retry/", {"params": params}
        )
        assert_refused(response, layout, path, status=200)  # the form again, with the error
        assert NOT_A_FILE in response.text or "no readable file" in response.text
    assert not LongTimeTask.objects.filter(retry_of=task).exists()


def test_the_worker_checks_the_path_again_when_it_runs(
    layout: Stack, make_person: Callable[..., Person], orm: None
) -> None:
    """A file swapped for a symlink out between the submit and the run: the handler refuses it."""
    layout.start_worker()
    author = make_person("user")
    (layout.files_dir / "swap.csv").write_text("name,value\nswap,1\n")
    body = {"task_type": "file_processing", "params": {"file_path": "swap.csv"}, "countdown": 3}
    response = author.api().post_json("/api/tasks/", body)
    assert response.status == 201, response.text
    task_id = response.json()["task_id"]
    (layout.files_dir / "swap.csv").unlink()
    (layout.files_dir / "swap.csv").symlink_to(layout.root / "secret.csv")

    def ended() -> LongTimeTask | None:
        task = LongTimeTask.objects.get(id=task_id)
        return task if task.state in TERMINAL_STATES else None

    task = wait_for(ended, timeout=60, interval=0.2, what="the task to run")
    assert task.state == TaskState.FAILED and task.result is None
    detail = author.api().get(f"/api/tasks/{task_id}/")
    assert SECRET not in detail.text and str(layout.root) not in detail.text
    assert not any(SECRET in p.read_text() for p in layout.results_dir.rglob("*") if p.is_file() and not p.is_symlink())


# ---------------------------------------------------------------- the download URL


def test_the_download_url_serves_only_the_files_a_result_names_inside_the_results_directory(
    layout: Stack, people: dict[str, Person], make_task: Callable[..., LongTimeTask], orm: None
) -> None:
    owner = people["owner"]
    now = timezone.now()

    def finished(task_type: str, result: dict[str, Any]) -> int:
        return int(
            make_task(owner.user, task_type=task_type, state=TaskState.FINISHED, result=result, finish_at=now).id
        )

    good = finished("file_processing", {})
    (layout.results_dir / "files" / f"{good}.json").write_text('[{"ok": 1}]')
    LongTimeTask.objects.filter(id=good).update(result={"output_file": f"files/{good}.json"})
    response = owner.web.get(f"/dashboard/tasks/{good}/files/{good}.json")
    assert response.status == 200 and response.body == b'[{"ok": 1}]'  # the door is open

    raw_paths = [
        f"/dashboard/tasks/{good}/files/..%2F..%2Fsecret.csv",
        f"/dashboard/tasks/{good}/files/../../secret.csv",
        f"/dashboard/tasks/{good}/files/%2e%2e%2f%2e%2e%2fsecret.csv",
        f"/dashboard/tasks/{good}/files/..%5C..%5Csecret.csv",
        f"/dashboard/tasks/{good}/files/..",
        f"/dashboard/tasks/{good}/files/%2e%2e",
        f"/dashboard/tasks/{good}/files/secret.csv",
        f"/dashboard/tasks/{good}/files/{good}.json%00.csv",
        f"/dashboard/tasks/{good}/files/link.json",
        f"/dashboard/tasks/{good}/files/" + "%2E%2E%2F" * 8 + "etc%2Fpasswd",
    ]
    # Results that name files out of bounds (a handler's bug, or a row written by other tools).
    for task_type, output in [
        ("file_processing", "../secret.csv"),
        ("file_processing", str(layout.root / "secret.csv")),
        ("file_processing", "files/link.json"),  # a symlink out of the results directory
        ("file_processing", "files/../../secret.csv"),
        ("test_echo", f"files/{good}.json"),  # a type that declares no result files
    ]:
        task = finished(task_type, {"output_file": output})
        name = output.rsplit("/", 1)[-1]
        raw_paths.append(f"/dashboard/tasks/{task}/files/{name}")
    for path in raw_paths:
        response = owner.web.get(path)
        assert response.status == 404, (path, response.status)
        assert SECRET not in response.text and str(layout.root) not in response.text, path

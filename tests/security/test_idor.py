"""Who may read and act on a task, door by door, against the live stack: anonymous, the owner, another user,
staff (a superuser) and a viewer (holds view_all_tasks, is not staff).

Another user's task must be indistinguishable from a task that does not exist: the same status and the same
body as a missing id, through the API, the event streams, the dashboard and its file downloads. The admin
is for staff only. Every refused action leaves the task as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import Any

import pytest
from django.utils import timezone

from long_time_task.models import LongTimeTask, TaskState
from tests.security.conftest import ROLES, Person
from tests.security.stack import Client, Response

SECRET = f"owner-secret-{uuid.uuid4().hex}"  # in the owner's params, result and files: never shown to another user
MISSING = 10**12  # an id no task has
ADMIN = "/admin/long_time_task/longtimetask"

# What a role gets at a door: a status, or one of these.
HIDDEN = "hidden"  # 404, with exactly the status and body of a missing id
LOGIN = "login"  # 302 to the dashboard's login page
ADMIN_LOGIN = "admin login"  # 302 to the admin's login page


@dataclass(frozen=True)
class Tasks:
    control_owner: LongTimeTask
    control_other: LongTimeTask
    target: LongTimeTask  # FAILED, the owner's
    download: LongTimeTask  # FINISHED file_processing with a result file, the owner's


@pytest.fixture(scope="module")
def tasks(
    stack: Any, people: dict[str, Person], make_task: Callable[..., LongTimeTask], django_db_blocker: Any
) -> Tasks:
    owner, other = people["owner"].user, people["other"].user
    now = timezone.now()
    # The controls first: a list stream sends its tasks newest first, so a control's event comes last.
    control_owner = make_task(owner, state=TaskState.FINISHED, result={"n": 1}, finish_at=now)
    control_other = make_task(other, state=TaskState.FINISHED, result={"n": 2}, finish_at=now)
    target = make_task(
        owner,
        state=TaskState.FAILED,
        task_params={"note": SECRET},
        error_message=f"failed: {SECRET}",
        error_code="handler_error",
        error_traceback=f"Traceback: {SECRET}",
        finish_at=now,
    )
    download = make_task(owner, task_type="file_processing", state=TaskState.FINISHED, finish_at=now)
    (stack.results_dir / "files").mkdir(parents=True, exist_ok=True)
    (stack.results_dir / "files" / f"{download.id}.json").write_text(f'[{{"secret": "{SECRET}"}}]')
    with django_db_blocker.unblock():
        LongTimeTask.objects.filter(id=download.id).update(result={"output_file": f"files/{download.id}.json"})
    return Tasks(control_owner, control_other, target, download)


def read_stream(client: Client, path: str) -> Response:
    status, text = client.stream(path, until=lambda text: "event: end" in text)
    return Response(status, HTTPMessage(), text.encode())


# Each read door: which task it is tried on, and how a role reaches it.
READ_DOORS: dict[str, tuple[str, Callable[[Person, int], Response]]] = {
    "api detail": ("target", lambda p, i: p.api().get(f"/api/tasks/{i}/")),
    "api events": ("target", lambda p, i: read_stream(p.api(streams=True), f"/api/tasks/{i}/events/")),
    "api events on gthread": ("target", lambda p, i: read_stream(p.api(), f"/api/tasks/{i}/events/")),
    "dashboard detail": ("target", lambda p, i: p.web.get(f"/dashboard/tasks/{i}/")),
    "dashboard file": ("download", lambda p, i: p.web.get(f"/dashboard/tasks/{i}/files/{i}.json")),
    "admin change page": ("target", lambda p, i: p.web.get(f"{ADMIN}/{i}/change/")),
    "admin retry page": ("target", lambda p, i: p.web.get(f"{ADMIN}/{i}/retry/")),
}
READ_EXPECTED: dict[str, dict[str, Any]] = {
    "api detail": {"anonymous": 401, "owner": 200, "other": HIDDEN, "staff": 200, "viewer": 200},
    "api events": {"anonymous": 401, "owner": 200, "other": HIDDEN, "staff": 200, "viewer": 200},
    "api events on gthread": {"anonymous": 401, "owner": 200, "other": HIDDEN, "staff": 200, "viewer": 200},
    "dashboard detail": {"anonymous": LOGIN, "owner": 200, "other": HIDDEN, "staff": 200, "viewer": 200},
    # A viewer may see the task but not download its files: 404, like a missing one.
    "dashboard file": {"anonymous": LOGIN, "owner": 200, "other": HIDDEN, "staff": 200, "viewer": HIDDEN},
    "admin change page": {r: ADMIN_LOGIN for r in ROLES} | {"staff": 200},
    "admin retry page": {r: ADMIN_LOGIN for r in ROLES} | {"staff": 200},
}


def assert_answer(expected: Any, response: Response, missing: Callable[[], Response]) -> None:
    if expected == HIDDEN:
        like_missing = missing()
        assert response.status == 404, (response.status, response.text[:300])
        assert (response.status, response.body) == (like_missing.status, like_missing.body)
    elif expected == LOGIN:
        assert response.status == 302 and response.location.startswith("/dashboard/login/?next="), response.location
    elif expected == ADMIN_LOGIN:
        assert response.status == 302 and response.location.startswith("/admin/login/?next="), response.location
    else:
        assert response.status == expected, (response.status, response.text[:300])
    if expected != 200:
        assert SECRET not in response.text


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("door", READ_DOORS)
def test_reading_a_task(door: str, role: str, people: dict[str, Person], tasks: Tasks) -> None:
    which, reach = READ_DOORS[door]
    task_id = getattr(tasks, which).id
    person = people[role]
    response = reach(person, task_id)
    assert_answer(READ_EXPECTED[door][role], response, lambda: reach(person, MISSING))
    if READ_EXPECTED[door][role] == 200:  # and it is the task: its params, its file, its event
        assert (f'"id":{task_id},' if door.startswith("api events") else SECRET) in response.text


# ---------------------------------------------------------------- lists and streams


def api_ids(person: Person, path: str) -> set[int] | int:
    response = person.api().get(path)
    if response.status != 200:
        return response.status
    return {task["id"] for task in response.json()["tasks"]}


@pytest.mark.parametrize("role", ROLES)
def test_lists_and_list_streams_show_another_users_task_to_no_one_but_staff(
    role: str, people: dict[str, Person], tasks: Tasks
) -> None:
    person, target = people[role], tasks.target.id
    sees = role in ("owner", "staff", "viewer")
    for path in (
        "/api/tasks/",
        "/api/tasks/list/?page_size=100",
        "/api/tasks/?state=FAILED",
        "/api/tasks/?task_type=test_echo&page_size=100",
    ):
        ids = api_ids(person, path)
        if role == "anonymous":
            assert ids == 401, path
        else:
            assert isinstance(ids, set) and (target in ids) == sees, (path, ids)

    # The list stream ignores ids the caller may not see; the control (an older task of theirs) comes last.
    control = tasks.control_other.id if role == "other" else tasks.control_owner.id
    status, text = person.api(streams=True).stream(
        f"/api/tasks/events/?ids={target},{control}", until=lambda text: f'"id":{control},' in text
    )
    if role == "anonymous":
        assert status == 401
    else:
        assert status == 200 and f'"id":{control},' in text
        assert (f'"id":{target},' in text) == sees

    for path in ("/dashboard/?state=FAILED", f"/dashboard/?q={target}", "/dashboard/overview/"):
        response = person.web.get(path)
        if role == "anonymous":
            assert response.status == 302 and response.location.startswith("/dashboard/login/"), path
            continue
        assert response.status == 200, path
        assert (f'href="/dashboard/tasks/{target}/"' in response.text) == sees, path
        assert (SECRET in response.text) == (sees and "overview" in path), path


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    state: str  # the state of the task it is tried on
    reach: Callable[[Person, int], Response]
    expected: dict[str, Any]

    def done(self, task_id: int) -> bool:
        """Whether the action happened: the task cancelled, or a new task made from it."""
        if self.state == TaskState.PENDING:
            return LongTimeTask.objects.get(id=task_id).state == TaskState.CANCELLED
        return LongTimeTask.objects.filter(retry_of_id=task_id).exists()


def api_post(path: str) -> Callable[[Person, int], Response]:
    return lambda p, i: p.api().request("POST", path.format(i))


def form_post(path: str, **fields: Any) -> Callable[[Person, int], Response]:
    return lambda p, i: p.web.post_form(path.format(i), {k: str(v).format(i) for k, v in fields.items()})


API = {"anonymous": 401, "owner": 200, "other": HIDDEN, "staff": 200, "viewer": 403}
API_NEW = API | {"owner": 201, "staff": 201}
DASHBOARD = {"anonymous": LOGIN, "owner": 302, "other": HIDDEN, "staff": 302, "viewer": 403}
ADMIN_ONLY = {r: ADMIN_LOGIN for r in ROLES} | {"staff": 302}
ACTIONS = {
    "api cancel": Action(TaskState.PENDING, api_post("/api/tasks/{}/cancel/"), API),
    "api retry": Action(TaskState.FAILED, api_post("/api/tasks/{}/retry/"), API_NEW),
    "api rerun": Action(TaskState.FINISHED, api_post("/api/tasks/{}/rerun/"), API_NEW),
    "dashboard cancel": Action(TaskState.PENDING, form_post("/dashboard/tasks/{}/cancel/"), DASHBOARD),
    "dashboard retry": Action(TaskState.FAILED, form_post("/dashboard/tasks/{}/retry/"), DASHBOARD),
    "dashboard rerun": Action(TaskState.FINISHED, form_post("/dashboard/tasks/{}/rerun/"), DASHBOARD),
    "admin cancel action": Action(
        TaskState.PENDING, form_post(f"{ADMIN}/", action="cancel_tasks", _selected_action="{}"), ADMIN_ONLY
    ),
    "admin retry action": Action(
        TaskState.FAILED, form_post(f"{ADMIN}/", action="retry_tasks", _selected_action="{}"), ADMIN_ONLY
    ),
    "admin rerun action": Action(
        TaskState.FINISHED, form_post(f"{ADMIN}/", action="rerun_tasks", _selected_action="{}"), ADMIN_ONLY
    ),
    "admin cancel button": Action(TaskState.PENDING, form_post(f"{ADMIN}/{{}}/cancel/"), ADMIN_ONLY),
    "admin retry form": Action(TaskState.FAILED, form_post(f"{ADMIN}/{{}}/retry/", params='{{"n": 2}}'), ADMIN_ONLY),
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("door", ACTIONS)
def test_acting_on_a_task(
    door: str, role: str, people: dict[str, Person], make_task: Callable[..., LongTimeTask], orm: None
) -> None:
    action = ACTIONS[door]
    task = make_task(people["owner"].user, state=action.state, task_params={"n": 1}, finish_at=timezone.now())
    person = people[role]
    expected = action.expected[role]
    response = action.reach(person, task.id)
    assert_answer(expected, response, lambda: action.reach(person, MISSING))
    assert action.done(task.id) == (expected in (200, 201, 302)), (door, role, response.status)

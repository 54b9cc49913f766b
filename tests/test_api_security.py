"""Who may do what, and the limits: an authorization matrix, per-type permissions, size caps, throttles."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from long_time_task import ratelimit
from long_time_task.models import LongTimeTask

from .conftest import client_as, token_client
from .test_api import assert_error, submit

pytestmark = pytest.mark.django_db

READS = ["/api/tasks/", "/api/tasks/list/", "/api/task-types/", "/api/schema/", "/api/docs/"]


@pytest.fixture
def task(user):
    return LongTimeTask.objects.create(task_type="test_echo", owner=user)


@pytest.mark.parametrize(
    ("who", "detail", "submit_status", "sees_all"),
    [
        ("anonymous", 401, 401, None),
        ("owner", 200, 201, False),
        ("other", 404, 201, False),
        ("staff", 200, 201, True),
        ("viewer", 200, 201, True),  # holds long_time_task.view_all_tasks
    ],
)
def test_authorization_matrix(who, detail, submit_status, sees_all, task, user, other_user, staff_user):
    client = client_as(who, user=user, other_user=other_user, staff_user=staff_user)
    assert client.get(f"/api/tasks/{task.id}/").status_code == detail
    for path in READS:
        response = client.get(path)
        assert response.status_code == (401 if who == "anonymous" else 200), (path, response.status_code)
    if sees_all is not None:
        listed = {t["id"] for t in client.get("/api/tasks/").json()["tasks"]}
        assert (task.id in listed) == (sees_all or who == "owner")
    before = LongTimeTask.objects.count()
    assert submit(client, {"task_type": "test_echo"}).status_code == submit_status
    assert LongTimeTask.objects.count() == before + (1 if submit_status == 201 else 0)


def test_a_type_with_a_permission_needs_it_to_submit_and_to_be_listed(user, api):
    response = submit(api, {"task_type": "test_restricted"})
    assert_error(response, 403, "permission_denied", "You may not submit tasks of type test_restricted.")
    assert not LongTimeTask.objects.exists()
    assert "test_restricted" not in {t["task_type"] for t in api.get("/api/task-types/").json()["task_types"]}
    user.user_permissions.add(Permission.objects.get(codename="run_restricted"))
    allowed = token_client(type(user).objects.get(id=user.id))
    assert submit(allowed, {"task_type": "test_restricted"}).status_code == 201
    assert "test_restricted" in {t["task_type"] for t in allowed.get("/api/task-types/").json()["task_types"]}


def test_task_types_describe_each_type(api):
    types = {t["task_type"]: t for t in api.get("/api/task-types/").json()["task_types"]}
    analysis = types["data_analysis"]
    assert (analysis["queue"], analysis["priority"], analysis["timeout"], analysis["soft_timeout"]) == (
        "heavy",
        5,
        7200,
        6900,
    )
    assert analysis["param_schema"]["required"] == ["dataset_id"] and analysis["description"]


def test_request_body_over_the_cap_is_a_413(api, settings):
    settings.LONG_TIME_TASK_MAX_BODY_BYTES = 1000
    response = submit(api, {"task_type": "test_echo", "params": {"blob": "x" * 2000}})
    assert_error(response, 413, "request_too_large", "larger than 1000 bytes")
    assert not LongTimeTask.objects.exists()


def test_params_over_the_cap_are_a_400(api, settings):
    settings.LONG_TIME_TASK_MAX_PARAMS_BYTES = 100
    response = submit(api, {"task_type": "test_echo", "params": {"blob": "x" * 200}})
    assert_error(response, 400, "invalid_params", "the limit is 100")
    assert not LongTimeTask.objects.exists()


def test_submissions_are_throttled_per_user_with_retry_after(api, other_user, settings, monkeypatch):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "3/min"
    monkeypatch.setattr(ratelimit, "now", lambda: 1_800_000_000 // 60 * 60 + 10)  # 10 s into a minute
    assert [submit(api, {"task_type": "test_echo"}).status_code for _ in range(3)] == [201, 201, 201]
    response = submit(api, {"task_type": "test_echo"})
    assert_error(response, 429, "throttled")
    # The sliding window: the next minute, once 3 x (1 - t/60) + 1 <= 3, at t = 20 s: 50 + 20 s from now.
    assert response["Retry-After"] == "70"
    assert api.get("/api/tasks/").status_code == 200  # reads are not throttled
    assert submit(token_client(other_user), {"task_type": "test_echo"}).status_code == 201  # per user
    assert LongTimeTask.objects.count() == 4


def test_unfinished_tasks_are_capped_per_user(api, user, settings):
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 2
    assert [submit(api, {"task_type": "test_echo"}).status_code for _ in range(2)] == [201, 201]
    response = submit(api, {"task_type": "test_echo"})
    assert_error(response, 429, "too_many_unfinished", "You already have 2 unfinished tasks")
    assert response["Retry-After"] == "30"
    LongTimeTask.objects.filter(owner=user).update(state="FINISHED")
    assert submit(api, {"task_type": "test_echo"}).status_code == 201


def test_the_openapi_schema_documents_params_per_task_type(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    body = schema["paths"]["/api/tasks/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "task_type"
    analysis = schema["components"]["schemas"]["Submit_DataAnalysis"]
    assert analysis["properties"]["params"]["properties"]["dataset_id"] == {"type": "integer", "minimum": 1}
    assert "Submit_TestRestricted" not in schema["components"]["schemas"]  # not submittable by this user
    assert schema["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
    for path in ("/api/tasks/", "/api/tasks/{task_id}/", "/api/task-types/"):
        assert path in schema["paths"]


def test_the_docs_page_needs_no_cdn(admin_client):
    html = admin_client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn" not in html.lower()

"""One submit rate per user (LONG_TIME_TASK_SUBMIT_RATE), counted in ``services.submit`` whatever the door: the
API's submit, retry and re-run, the dashboard's submit and buttons, the admin's actions and the CLI with
``--user``. Only submits that pass validation, permission and quota count; replays and server code don't."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from long_time_task import ratelimit, services
from long_time_task.models import LongTimeTask, TaskState
from long_time_task.ratelimit import Rate, RateExceeded, reserve, wait_seconds

from .conftest import token_client
from .test_api import assert_error, submit

pytestmark = pytest.mark.django_db

START = 1_800_000_000 // 3600 * 3600  # the start of an hour (and of a minute, and of a second)
CHANGELIST = "/admin/long_time_task/longtimetask/"


class Clock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def clock(monkeypatch: Any) -> Clock:
    """The rate counter's clock, 10 s into a minute; tests move it."""
    fixed = Clock(START + 10)
    monkeypatch.setattr(ratelimit, "now", fixed)
    return fixed


def failed_task(owner: Any) -> LongTimeTask:
    return LongTimeTask.objects.create(task_type="test_echo", task_params={"n": 1}, owner=owner, state=TaskState.FAILED)


def dashboard(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


# ---------------------------------------------------------------- the counter


@pytest.mark.parametrize(
    ("text", "limit", "period"),
    [
        ("60/min", 60, 60),
        ("10/s", 10, 1),
        ("5 / hour", 5, 3600),
        ("1000/day", 1000, 86400),
        ("3/m", 3, 60),
        # DRF's throttles read the period by its first letter: a project's existing rate keeps working.
        ("100/hours", 100, 3600),
        ("60/minutes", 60, 60),
        ("10/seconds", 10, 1),
        ("5/days", 5, 86400),
    ],
)
def test_rates_parse(text, limit, period):
    assert (Rate.parse(text).limit, Rate.parse(text).period) == (limit, period)


@pytest.mark.parametrize("text", ["60", "0/min", "x/min", "60/fortnight", "-1/s"])
def test_a_bad_rate_is_a_configuration_error(text):
    with pytest.raises(ImproperlyConfigured, match="is not a rate"):
        Rate.parse(text)


def test_the_window_slides_and_the_wait_is_exact(clock):
    rate = Rate.parse("3/min")
    for _ in range(3):
        reserve("n", rate)
    with pytest.raises(RateExceeded) as refused:
        reserve("n", rate)
    # Next window, once 3 x (1 - t/60) + 1 <= 3: t = 20 s, so 50 + 20 s from now.
    assert refused.value.wait == 70
    clock.at += 69
    with pytest.raises(RateExceeded) as refused:
        reserve("n", rate)
    assert refused.value.wait == 1
    clock.at += 1
    reserve("n", rate)
    with pytest.raises(RateExceeded):
        reserve("n", rate)


def test_no_burst_of_twice_the_rate_across_a_windows_edge(clock):
    rate = Rate.parse("3/min")
    clock.at = START + 59
    for _ in range(3):
        reserve("edge", rate)
    clock.at = START + 61  # a new window, but the last 60 s already hold 3
    with pytest.raises(RateExceeded) as refused:
        reserve("edge", rate)
    assert refused.value.wait == 19  # 3 x (1 - t/60) + 1 <= 3 at t = 20 s into this window, 19 s from now
    assert wait_seconds(rate, previous=3, taken=0, offset=50) == 1


def test_names_are_counted_apart(clock):
    rate = Rate.parse("1/min")
    reserve("a", rate)
    reserve("b", rate)
    with pytest.raises(RateExceeded):
        reserve("a", rate)


def test_a_released_slot_is_free_again(clock):
    rate = Rate.parse("1/min")
    reserve("r", rate).release()
    reserve("r", rate)


def test_a_loop_of_submits_creates_exactly_the_rate(user, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "4/day"
    outcomes = []
    for _ in range(10):
        try:
            services.submit("test_echo", {"n": 1}, owner=user)
            outcomes.append("created")
        except services.SubmitRateExceeded:
            outcomes.append("refused")
    assert outcomes == ["created"] * 4 + ["refused"] * 6
    assert LongTimeTask.objects.filter(owner=user).count() == 4


# ---------------------------------------------------------------- every door counts against one rate


def test_the_api_answers_429_throttled_with_retry_after(api, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "3/min"
    assert [submit(api, {"task_type": "test_echo"}).status_code for _ in range(3)] == [201] * 3
    response = submit(api, {"task_type": "test_echo"})
    assert_error(response, 429, "throttled", "Too many submissions: the limit is 3/min per user.")
    assert response["Retry-After"] == "70"


def test_retry_and_rerun_in_the_api_use_the_same_rate(api, user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "2/min"
    failed = failed_task(user)
    assert api.post(f"/api/tasks/{failed.id}/retry/").status_code == 201
    assert submit(api, {"task_type": "test_echo"}).status_code == 201
    assert_error(api.post(f"/api/tasks/{failed.id}/rerun/"), 429, "throttled")
    assert_error(api.post(f"/api/tasks/{failed.id}/retry/"), 429, "throttled")
    assert LongTimeTask.objects.filter(owner=user).count() == 3


def test_the_dashboard_submit_page_answers_429_with_the_reason(user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "2/min"
    client = dashboard(user)
    url = reverse("ltt_dashboard:submit")
    statuses = [client.post(url, {"task_type": "test_echo", "n": "1"}).status_code for _ in range(2)]
    assert statuses == [303, 303]
    page = client.post(url, {"task_type": "test_echo", "n": "1"})
    assert page.status_code == 429 and page["Retry-After"] == "80"
    assert "Too many submissions: the limit is 2/min per user. Try again in 80 seconds." in page.content.decode()
    assert LongTimeTask.objects.filter(owner=user).count() == 2


def test_the_dashboard_retry_button_shares_the_rate_with_the_api(api, user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "1/min"
    failed = failed_task(user)
    assert submit(api, {"task_type": "test_echo"}).status_code == 201
    client = dashboard(user)
    response = client.post(reverse("ltt_dashboard:task_retry", kwargs={"task_id": failed.id}), follow=True)
    assert "Too many submissions: the limit is 1/min per user." in response.content.decode()
    assert not LongTimeTask.objects.filter(retry_of=failed).exists()


def test_admin_actions_report_the_rate(django_user_model, clock, settings):
    operator = django_user_model.objects.create_superuser("operator", "op@example.com", "operator-password")
    settings.LONG_TIME_TASK_SUBMIT_RATE = "1/min"
    first, second = failed_task(operator), failed_task(operator)
    client = dashboard(operator)
    data = {"action": "retry_tasks", "_selected_action": [first.id, second.id], "index": "0"}
    page = client.post(CHANGELIST, data, follow=True)
    texts = [str(message) for message in page.context["messages"]]
    assert any("Submitted 1 new task" in text for text in texts)
    assert any(f"Task {second.id}: Too many submissions: the limit is 1/min per user." in text for text in texts)
    page = client.post(f"{CHANGELIST}{first.id}/retry/", {"params": '{"n": 2}'})
    assert page.status_code == 200 and "Too many submissions" in page.content.decode()
    assert LongTimeTask.objects.filter(retry_of__isnull=False).count() == 1


def test_the_cli_with_a_user_is_limited_and_exits_with_an_error(user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "1/min"
    call_command("tasks", "submit", "test_echo", "--user", "alice", stdout=io.StringIO())
    with pytest.raises(CommandError, match="Too many submissions: the limit is 1/min per user. Try again in"):
        call_command("tasks", "submit", "test_echo", "--user", "alice", stdout=io.StringIO())
    failed = failed_task(user)
    with pytest.raises(CommandError, match="Too many submissions"):
        call_command("tasks", "retry", str(failed.id), "--user", "alice", stdout=io.StringIO())
    for _ in range(3):  # the system (no --user) is not limited
        call_command("tasks", "submit", "test_echo", stdout=io.StringIO())


def test_server_code_is_not_limited(user, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "1/min"
    for _ in range(5):
        services.submit("test_echo", {"n": 1})
    failed = failed_task(user)
    services.submit("test_echo", {"n": 1}, owner=user)  # the user's one
    for _ in range(3):  # a retry by server code keeps the owner but is not counted against them
        assert services.retry_task(failed.id, user=None).owner == user
    with pytest.raises(services.SubmitRateExceeded):
        services.retry_task(failed.id, user=user)


# ---------------------------------------------------------------- what does not count


def test_a_rate_the_service_cannot_read_is_a_system_check_error(settings):
    from long_time_task.checks import check_submit_rate

    settings.LONG_TIME_TASK_SUBMIT_RATE = "60/fortnight"
    assert [error.id for error in check_submit_rate()] == ["long_time_task.E002"]
    settings.LONG_TIME_TASK_SUBMIT_RATE = "60/minutes"
    assert check_submit_rate() == []


def test_rejected_submits_do_not_use_up_the_rate(api, user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "2/min"
    settings.LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = 3
    assert_error(submit(api, {"task_type": "data_analysis", "params": {"dataset_id": "x"}}), 400, "invalid_params")
    assert_error(submit(api, {"task_type": "no_such_type"}), 400)
    assert_error(submit(api, {"task_type": "test_restricted"}), 403, "permission_denied")
    with pytest.raises(services.NotPermitted):
        services.submit("test_restricted", {}, owner=user)
    with pytest.raises(Exception, match="Invalid params"):
        services.submit("data_analysis", {"dataset_id": "x"}, owner=user)
    for _ in range(3):
        LongTimeTask.objects.create(task_type="test_echo", owner=user)
    assert_error(submit(api, {"task_type": "test_echo"}), 429, "too_many_unfinished")  # the quota, first
    LongTimeTask.objects.filter(owner=user).update(state=TaskState.FINISHED)
    assert [submit(api, {"task_type": "test_echo"}).status_code for _ in range(2)] == [201, 201]  # the whole rate
    assert_error(submit(api, {"task_type": "test_echo"}), 429, "throttled")


def test_idempotent_replays_do_not_count(api, user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "2/min"
    first = submit(api, {"task_type": "test_echo"}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert first.status_code == 201
    for _ in range(3):
        replay = submit(api, {"task_type": "test_echo"}, HTTP_IDEMPOTENCY_KEY="k-1")
        assert replay.status_code == 200 and replay.json()["task_id"] == first.json()["task_id"]
    assert submit(api, {"task_type": "test_echo"}).status_code == 201
    assert_error(submit(api, {"task_type": "test_echo"}, HTTP_IDEMPOTENCY_KEY="k-2"), 429, "throttled")
    # A replay is still answered once the rate is used up: it submits nothing.
    assert submit(api, {"task_type": "test_echo"}, HTTP_IDEMPOTENCY_KEY="k-1").status_code == 200


def test_the_rate_is_per_user(api, other_user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "1/min"
    assert submit(api, {"task_type": "test_echo"}).status_code == 201
    assert_error(submit(api, {"task_type": "test_echo"}), 429, "throttled")
    assert api.get("/api/tasks/").status_code == 200  # reads are not limited
    assert submit(token_client(other_user), {"task_type": "test_echo"}).status_code == 201


def test_the_restricted_type_counts_once_permitted(api, user, clock, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "1/min"
    user.user_permissions.add(Permission.objects.get(codename="run_restricted"))
    allowed = token_client(type(user).objects.get(id=user.id))
    assert submit(allowed, {"task_type": "test_restricted"}).status_code == 201
    assert_error(submit(allowed, {"task_type": "test_restricted"}), 429, "throttled")


# ---------------------------------------------------------------- atomic against the real cache


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_parallel_submits_cannot_all_pass(redis_cache, user, settings):
    settings.LONG_TIME_TASK_SUBMIT_RATE = "5/day"
    threads_count, barrier = 16, threading.Barrier(16)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            try:
                # Held in the database (a far start): nothing is published to the broker.
                services.submit("test_echo", {"n": 1}, owner=user, countdown=86_000)
                outcome = "created"
            except services.SubmitRateExceeded as exc:
                outcome = f"refused:{exc.wait > 0}"
            with lock:
                outcomes.append(outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["created"] * 5 + ["refused:True"] * 11
    assert LongTimeTask.objects.filter(owner=user).count() == 5
    client, prefix = redis_cache
    counters = [int(client.get(key)) for key in client.scan_iter(f"{prefix}:*:ltt-rate:*")]
    assert counters == [5]  # the refused ones gave their slot back

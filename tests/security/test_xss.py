"""Cross-site scripting: markup in every field a user controls, shown in the dashboard and the admin, against the
live stack with a real worker (results and tracebacks come from running the tasks).

The fields: params (keys and values), a file's name (file_processing), the Idempotency-Key, what a failing
handler raised (in the traceback staff see), usernames (the owner, and the staff member in the audit trail),
and the query strings the pages reflect. Each page must show the field (its marker is there) and never the
markup itself: no payload verbatim, no injected tag, no ``javascript:`` link.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from long_time_task.models import TERMINAL_STATES, LongTimeTask
from tests.security.conftest import Person
from tests.security.stack import Stack
from tests.workers import wait_for

SCRIPT = '<script>alert("xss-script")</script>'
ATTRIBUTE = '"><img src=x onerror=alert("xss-attribute")>'
SINGLE = "'><svg onload=alert('xss-single')>"
TEXTAREA = '</textarea><script>alert("xss-textarea")</script>'
URL = 'javascript:alert("xss-url")'
PAYLOADS = (SCRIPT, ATTRIBUTE, SINGLE, TEXTAREA, URL)

OWNER_NAME = '<script>alert("xss-owner")</script>'
STAFF_NAME = '"><img src=x onerror=alert("xss-staff")>'
FILE_NAME = '"><img src=x onerror=alert("xss-file")>.csv'
KEY_NAME = '<script>alert("xss-key-name")</script>'
IDEMPOTENCY_KEY = "\"><svg/onload=alert('xss-idempotency')>"  # no spaces: the header's rule
EVERY_PAYLOAD = (*PAYLOADS, OWNER_NAME, STAFF_NAME, FILE_NAME, KEY_NAME, IDEMPOTENCY_KEY)

INJECTED = re.compile(r"<(script|img|svg)\b[^>]*(alert|onerror|onload)", re.IGNORECASE)
JAVASCRIPT_LINK = re.compile(r"""(href|src|action|formaction)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def assert_escaped(html: str, *, shows: Iterable[str]) -> None:
    """No payload verbatim, no injected element, no javascript: link; and the page does show each marker."""
    for payload in EVERY_PAYLOAD:
        assert payload not in html, payload
    assert not INJECTED.search(html), INJECTED.search(html)
    assert not JAVASCRIPT_LINK.search(html), JAVASCRIPT_LINK.search(html)
    for marker in shows:
        assert marker in html, f"the page does not show {marker!r}: the test would prove nothing"


@dataclass(frozen=True)
class Tasks:
    echo: int  # FINISHED: params with every payload, a payload as a key, the result echoing them, a payload key
    failed: int  # FAILED: the handler raised the payloads (the traceback shows them to staff)
    converted: int  # FINISHED file_processing of a file whose name is a payload
    cancelled: int  # CANCELLED by a staff member whose username is a payload (the audit trail)


@pytest.fixture(scope="module")
def author(make_person: Callable[..., Person]) -> Person:
    return make_person("user", username=OWNER_NAME)


@pytest.fixture(scope="module")
def canceller(make_person: Callable[..., Person]) -> Person:
    return make_person("staff", username=STAFF_NAME)


@pytest.fixture(scope="module")
def tasks(stack: Stack, author: Person, canceller: Person, django_db_blocker: Any) -> Tasks:
    stack.start_worker()
    (stack.files_dir / FILE_NAME).write_text("a,b\n1,2\n")
    api = author.api()

    def submit(body: dict[str, Any], **headers: str) -> int:
        response = api.post_json("/api/tasks/", body, headers=headers)
        assert response.status == 201, response.text
        return int(response.json()["task_id"])

    echo = submit(
        {"task_type": "test_echo", "params": {"note": SCRIPT, "attribute": ATTRIBUTE, "single": SINGLE, "url": URL}},
        **{"Idempotency-Key": IDEMPOTENCY_KEY},
    )
    failed = submit({"task_type": "test_fail", "params": {"message": f"{TEXTAREA} {URL}", KEY_NAME: 1}})
    converted = submit({"task_type": "file_processing", "params": {"file_path": FILE_NAME}})
    cancelled = submit({"task_type": "test_echo", "params": {"note": SCRIPT}, "countdown": 3600})
    assert canceller.api().request("POST", f"/api/tasks/{cancelled}/cancel/").status == 200

    def ended() -> bool:
        with django_db_blocker.unblock():
            states = LongTimeTask.objects.filter(id__in=[echo, failed, converted]).values_list("state", flat=True)
            return len(states) == 3 and all(state in TERMINAL_STATES for state in states)

    wait_for(ended, timeout=60, interval=0.2, what="the tasks to run")
    with django_db_blocker.unblock():
        states = dict(LongTimeTask.objects.filter(id__in=[echo, failed, converted]).values_list("id", "state"))
    assert states == {echo: "FINISHED", failed: "FAILED", converted: "FINISHED"}, states
    return Tasks(echo, failed, converted, cancelled)


def page(client: Any, path: str) -> str:
    response = client.get(path)
    assert response.status == 200, (path, response.status, response.text[:300])
    assert response.content_type.startswith("text/html"), response.content_type
    return str(response.text)


def test_the_dashboard_escapes_what_its_owner_wrote(author: Person, tasks: Tasks) -> None:
    web = author.web
    assert_escaped(page(web, "/dashboard/"), shows=["xss-owner"])  # the header names the user
    assert_escaped(
        page(web, f"/dashboard/tasks/{tasks.echo}/"),
        shows=["xss-script", "xss-attribute", "xss-single", "xss-url"],  # params, and the result echoing them
    )
    failed = page(web, f"/dashboard/tasks/{tasks.failed}/")
    assert_escaped(failed, shows=["xss-textarea", "xss-key-name"])
    assert "Traceback" not in failed  # staff only
    assert_escaped(page(web, f"/dashboard/tasks/{tasks.converted}/"), shows=["xss-file"])
    assert_escaped(page(web, f"/dashboard/tasks/{tasks.cancelled}/"), shows=["xss-script"])  # (no staff names)
    assert_escaped(page(web, "/dashboard/overview/"), shows=[f"#{tasks.failed}"])


def test_the_dashboard_escapes_every_field_for_staff(people: dict[str, Person], tasks: Tasks) -> None:
    web = people["staff"].web
    assert_escaped(page(web, "/dashboard/"), shows=["xss-owner"])  # the owner column
    assert_escaped(page(web, f"/dashboard/tasks/{tasks.echo}/"), shows=["xss-owner", "xss-script", "xss-attribute"])
    failed = page(web, f"/dashboard/tasks/{tasks.failed}/")
    assert "Traceback (most recent call last)" in failed
    assert_escaped(failed, shows=["xss-textarea", "xss-url"])  # the exception's text, in the traceback
    assert_escaped(page(web, f"/dashboard/tasks/{tasks.converted}/"), shows=["xss-file"])
    assert_escaped(page(web, f"/dashboard/tasks/{tasks.cancelled}/"), shows=["xss-staff", "xss-owner"])
    assert_escaped(page(web, "/dashboard/overview/"), shows=[f"#{tasks.failed}"])


ADMIN = "/admin/long_time_task/longtimetask"


def test_the_admin_escapes_every_field(people: dict[str, Person], tasks: Tasks) -> None:
    web = people["staff"].web
    assert_escaped(page(web, f"{ADMIN}/"), shows=["xss-owner"])
    assert_escaped(
        page(web, f"{ADMIN}/{tasks.echo}/change/"),
        shows=["xss-owner", "xss-script", "xss-attribute", "xss-single", "xss-url", "xss-idempotency"],
    )
    assert_escaped(page(web, f"{ADMIN}/{tasks.failed}/change/"), shows=["xss-textarea", "xss-key-name"])
    assert_escaped(page(web, f"{ADMIN}/{tasks.converted}/change/"), shows=["xss-file"])
    assert_escaped(page(web, f"{ADMIN}/{tasks.cancelled}/change/"), shows=["xss-staff"])  # the audit trail
    # The retry form puts the params in a <textarea>: a "</textarea>" in them must not close it.
    assert_escaped(page(web, f"{ADMIN}/{tasks.failed}/retry/"), shows=["xss-textarea", "xss-key-name"])
    assert_escaped(page(web, f"{ADMIN}/?q={quote(SCRIPT)}"), shows=["xss-script"])
    assert_escaped(page(web, "/admin/auth/user/"), shows=["xss-owner", "xss-staff"])


def test_what_the_pages_reflect_from_the_query_string_is_escaped(
    author: Person, people: dict[str, Person], make_person: Callable[..., Person]
) -> None:
    web = author.web
    response = web.get(f"/dashboard/submit/?{urlencode({'task_type': SCRIPT})}")  # "Unknown task type: …"
    assert_escaped(response.text, shows=["xss-script"])
    filters = {"q": ATTRIBUTE, "state": SCRIPT, "task_type": SINGLE, "created_from": URL, "created_to": TEXTAREA}
    assert_escaped(page(web, f"/dashboard/?{urlencode(filters)}"), shows=["xss-attribute"])
    login = make_person("anonymous").web.get(f"/dashboard/login/?{urlencode({'next': ATTRIBUTE})}")
    assert login.status == 200
    assert_escaped(login.text, shows=["xss-attribute"])
    staff = people["staff"].web
    assert_escaped(page(staff, f"{ADMIN}/?{urlencode({'q': ATTRIBUTE, 'task_type': SCRIPT})}"), shows=["xss-attribute"])


def test_the_submit_form_escapes_what_it_gives_back(author: Person) -> None:
    """A refused form comes back with what was typed in it."""
    web = author.web
    response = web.post_form("/dashboard/submit/", {"task_type": "test_echo", "params": TEXTAREA})
    assert response.status == 400
    assert_escaped(response.text, shows=["xss-textarea"])
    fields = {"task_type": "file_processing", "file_path": ATTRIBUTE, "output_format": '"json"'}
    response = web.post_form("/dashboard/submit/", fields)
    assert response.status == 400
    assert_escaped(response.text, shows=["xss-attribute"])

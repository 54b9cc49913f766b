from __future__ import annotations

import gettext
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.utils import translation

from long_time_task.models import LongTimeTask, TaskState

LOCALE = Path(__file__).resolve().parent.parent / "long_time_task" / "locale" / "zh_Hans" / "LC_MESSAGES"


def po_entries() -> dict[str, str]:
    text = (LOCALE / "django.po").read_text(encoding="utf-8")
    pairs = re.findall(r'^msgid "((?:[^"\\]|\\.)*)"\nmsgstr "((?:[^"\\]|\\.)*)"', text, flags=re.M)
    return {mid.replace('\\"', '"'): mstr.replace('\\"', '"') for mid, mstr in pairs if mid}


def test_every_string_has_a_simplified_chinese_translation_and_the_mo_is_current():
    entries = po_entries()
    assert len(entries) > 40
    assert "#, fuzzy" not in (LOCALE / "django.po").read_text(encoding="utf-8")
    assert [mid for mid, mstr in entries.items() if not mstr] == []
    with (LOCALE / "django.mo").open("rb") as fh:
        compiled = gettext.GNUTranslations(fh)
    stale = [mid for mid, mstr in entries.items() if compiled.gettext(mid) != mstr]
    assert stale == [], "run `make messages` to recompile django.mo"


def test_the_seeds_wording_is_the_chinese_translation():
    with translation.override("zh-hans"):
        assert [str(label) for label in TaskState.labels] == [
            "等待执行",
            "正在执行",
            "等待重试",
            "已完成",
            "执行失败",
            "已取消",
        ]
        assert str(LongTimeTask._meta.verbose_name) == "长耗时任务"
        assert str(LongTimeTask._meta.get_field("celery_task_id").verbose_name) == "Celery任务ID"
    with translation.override("en"):
        assert str(TaskState.PENDING.label) == "Pending"


@pytest.mark.django_db
def test_api_messages_follow_the_browsers_language(api):
    response = api.post("/api/tasks/", {"task_type": "test_echo"}, format="json", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.json()["message"] == "任务提交成功"


@pytest.fixture
def admin_client_logged_in(client, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", "admin@example.com", "admin-password")
    client.force_login(admin)
    return client


@pytest.mark.django_db
def test_admin_list_shows_colored_states_filters_and_search(admin_client_logged_in, user):
    done = LongTimeTask.objects.create(task_type="test_echo", owner=user, state=TaskState.FINISHED)
    LongTimeTask.objects.create(task_type="test_fail", owner=user, state=TaskState.FAILED)
    page = admin_client_logged_in.get("/admin/long_time_task/longtimetask/")
    html = page.content.decode()
    assert page.status_code == 200
    assert '<span class="ltt-state ltt-state-FINISHED">Finished</span>' in html
    assert '<span class="ltt-state ltt-state-FAILED">Failed</span>' in html
    assert 'href="/static/long_time_task/admin.css"' in html  # the colours (no inline style: the CSP)
    css = Path(finders.find("long_time_task/admin.css")).read_text()
    assert ".ltt-state-FINISHED { color: #28a745; }" in css and ".ltt-state-FAILED { color: #dc3545; }" in css
    assert "style=" not in html.split('id="result_list"')[1]  # the columns
    assert "state__exact=FAILED" in html and "?task_type=test_fail" in html  # the filters
    found = admin_client_logged_in.get(f"/admin/long_time_task/longtimetask/?q={done.id}")
    assert found.context["cl"].result_count == 1
    by_type = admin_client_logged_in.get("/admin/long_time_task/longtimetask/?q=test_fail")
    assert by_type.context["cl"].result_count == 1


@pytest.mark.django_db
def test_admin_is_read_only(admin_client_logged_in, user):
    task = LongTimeTask.objects.create(task_type="test_echo", owner=user)
    detail = admin_client_logged_in.get(f"/admin/long_time_task/longtimetask/{task.id}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    posted = admin_client_logged_in.post(f"/admin/long_time_task/longtimetask/{task.id}/change/", {"state": "FINISHED"})
    assert posted.status_code == 403
    assert admin_client_logged_in.get("/admin/long_time_task/longtimetask/add/").status_code == 403
    assert admin_client_logged_in.get(f"/admin/long_time_task/longtimetask/{task.id}/delete/").status_code == 403
    task.refresh_from_db()
    assert task.state == TaskState.PENDING


@pytest.mark.django_db
def test_admin_speaks_chinese(admin_client_logged_in):
    LongTimeTask.objects.create(task_type="test_echo")
    html = admin_client_logged_in.get(
        "/admin/long_time_task/longtimetask/", HTTP_ACCEPT_LANGUAGE="zh-hans"
    ).content.decode()
    assert "长耗时任务" in html and "等待执行" in html

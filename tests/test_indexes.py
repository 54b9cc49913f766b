"""The hot queries use an index (PostgreSQL's EXPLAIN), so they stay fast as the table grows.

The test table is small, so sequential scans are switched off for the EXPLAIN: the question is whether an
index *can* serve the query, which is what decides it on a big table.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.utils import timezone

from long_time_task.models import LongTimeTask, TaskState
from long_time_task.pagination import after_cursor, encode_cursor

from .conftest import require_services

pytestmark = pytest.mark.django_db


def plan_of(queryset, *, no_sort: bool = False) -> list[dict]:
    """The plan's nodes, flattened."""
    statement, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        # Discourage what a tiny table makes cheap (a sequential scan; sorting 20 rows), so the plan shows
        # whether an index can serve the query, as it must on a big table.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"SET LOCAL enable_sort = {'off' if no_sort else 'on'}")
        cursor.execute(f"EXPLAIN (FORMAT JSON) {statement}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    nodes, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


def index_conditions(nodes: list[dict]) -> str:
    """What the plan looks up through an index (not what it filters row by row afterwards)."""
    return " ".join(str(n.get("Index Cond", "")) + " " + str(n.get("Recheck Cond", "")) for n in nodes)


def indexes_scanned(nodes: list[dict]) -> set[str]:
    return {n["Index Name"] for n in nodes if "Index Name" in n}


@pytest.fixture(autouse=True)
def postgres_only():
    require_services()


@pytest.fixture
def rows(user):
    return [LongTimeTask.objects.create(task_type="test_echo", owner=user) for _ in range(20)]


def test_detail_and_claim_use_the_primary_key(rows):
    nodes = plan_of(LongTimeTask.objects.filter(id=rows[0].id))
    assert "long_time_task_pkey" in indexes_scanned(nodes) and "(id =" in index_conditions(nodes)


def test_the_first_page_of_the_list_reads_the_create_at_index_in_order(rows):
    nodes = plan_of(LongTimeTask.objects.order_by("-create_at", "-id")[:21], no_sort=True)
    assert any("create_at" in name for name in indexes_scanned(nodes))
    assert not any(n["Node Type"] == "Sort" for n in nodes)  # no full sort of the table (incremental is fine)


def test_a_state_filtered_page_looks_the_state_up_in_an_index(rows):
    nodes = plan_of(LongTimeTask.objects.filter(state=TaskState.FAILED).order_by("-create_at", "-id")[:21])
    assert "state" in index_conditions(nodes)


def test_a_deep_page_by_cursor_seeks_with_the_index_instead_of_an_offset(rows):
    cursor = encode_cursor(timezone.now(), 10**9)
    nodes = plan_of(after_cursor(LongTimeTask.objects.order_by("-create_at", "-id"), cursor)[:21], no_sort=True)
    # The scan starts at the cursor (an Index Cond), rather than reading from the newest row.
    assert any("create_at" in str(n.get("Index Cond", "")) for n in nodes)


def test_an_owners_list_and_the_reaper_look_up_through_indexes(rows, user):
    assert "owner_id" in index_conditions(plan_of(LongTimeTask.objects.filter(owner=user)))
    assert "state" in index_conditions(plan_of(LongTimeTask.objects.lease_expired()))


def test_the_check_tells_a_lookup_from_a_filter(rows):
    # The control: `worker` has no index, so it can only be a row-by-row filter, never an index condition.
    nodes = plan_of(LongTimeTask.objects.filter(worker="w@host"))
    assert "worker" not in index_conditions(nodes)
    assert any("worker" in str(n.get("Filter", "")) for n in nodes)


def test_a_state_transition_pays_only_for_the_indexes_the_queries_use():
    """Every claim and finish updates an indexed column (state), so each UPDATE writes an entry into every
    full index: the table carries only the ones a query needs, and the rare lookups get partial indexes."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'long_time_task'")
        definitions = dict(cursor.fetchall())
    assert not [name for name, sql in definitions.items() if "pattern_ops" in sql]  # no LIKE twins
    full = sorted(name for name, sql in definitions.items() if " WHERE " not in sql)
    partial = sorted(name for name, sql in definitions.items() if " WHERE " in sql)
    assert len(full) == 6, full  # primary key, celery id, create_at, and one per list filter (state, type, owner)
    # The runs of schedules: a task that is not one has no entry.
    assert partial == ["ltt_owner_idempotency_key", "ltt_retry_of", "ltt_schedule_due_time", "ltt_schedule_runs"]


def test_the_retries_of_a_task_are_found_through_the_partial_index(user):
    original = LongTimeTask.objects.create(task_type="test_echo", owner=user)
    LongTimeTask.objects.create(task_type="test_echo", owner=user, retry_of=original)
    nodes = plan_of(LongTimeTask.objects.filter(retry_of=original.id))
    assert "ltt_retry_of" in indexes_scanned(nodes)


def test_a_schedules_runs_are_listed_newest_first_from_their_own_index_without_a_sort(user):
    """``GET /api/tasks/?schedule=`` and the dashboard's schedule page: a schedule with years of runs lists its
    newest page by a backward scan of (schedule, create_at, id), not by sorting every run it ever had."""
    from long_time_task.models import Schedule

    schedule = Schedule.objects.create(name="s", task_type="test_echo", interval_seconds=60, timezone="UTC")
    LongTimeTask.objects.create(task_type="test_echo", owner=user, schedule=schedule)
    ids = LongTimeTask.objects.filter(schedule=schedule.id).order_by("-create_at", "-id").values_list("id", flat=True)
    nodes = plan_of(ids[:21], no_sort=True)
    assert "ltt_schedule_runs" in indexes_scanned(nodes)
    assert not any("Sort" in n["Node Type"] for n in nodes)


@pytest.mark.parametrize("field", ["owner", "state", "task_type"])
def test_each_list_filter_has_an_index_in_the_lists_exact_order(rows, user, field):
    """The first page of a filtered list is a backward scan of that filter's own index with no sort step,
    whatever the data: never a walk down create_at that filters row by row (slow when the matches are old)."""
    value = {"owner": user, "state": TaskState.PENDING, "task_type": "test_echo"}[field]
    queryset = LongTimeTask.objects.filter(**{field: value}).order_by("-create_at", "-id")[:21]
    nodes = plan_of(queryset, no_sort=True)
    column = "owner_id" if field == "owner" else field
    assert column in index_conditions(nodes)
    assert not any("Sort" in n["Node Type"] for n in nodes)  # not even an incremental sort


@pytest.mark.parametrize("field", ["owner", "state", "task_type"])
def test_a_pages_ids_come_from_the_filters_own_index_alone(rows, user, field):
    """fetch_page reads a page's ids first: covered by the filter's (filter, create_at, id) index, so the
    plan needs no table rows to decide the page, and no other index can look cheaper."""
    value = {"owner": user, "state": TaskState.PENDING, "task_type": "test_echo"}[field]
    ids = LongTimeTask.objects.filter(**{field: value}).order_by("-create_at", "-id").values_list("id", flat=True)
    nodes = plan_of(ids[:21], no_sort=True)
    scans = [n for n in nodes if "Index Name" in n]
    assert [n["Node Type"] for n in scans] == ["Index Only Scan"], scans
    assert {"owner": "ltt_owner_created", "state": "ltt_state_create_at", "task_type": "ltt_type_create_at"}[
        field
    ] in indexes_scanned(nodes)

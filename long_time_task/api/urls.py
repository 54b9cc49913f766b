from __future__ import annotations

from django.urls import path, re_path
from django.views.decorators.cache import never_cache

from .errors import api_not_found
from .events import TaskEventsView, TaskListEventsView
from .openapi import ApiDocsView, SchemaView
from .schedules import ScheduleDetailView, ScheduleListView, ScheduleRunView
from .views import (
    TaskCancelView,
    TaskDetailView,
    TaskListView,
    TaskRerunView,
    TaskRetryView,
    TaskSubmitView,
    TaskTypeListView,
)

# Every answer carries the caller's own data (or says whether a task exists): no cache keeps a copy
# (Cache-Control: no-store, private). The docs page and the schema describe the API to logged-in users only.
urlpatterns = [
    path("tasks/", never_cache(TaskSubmitView.as_view()), name="task_submit"),
    path("tasks/list/", never_cache(TaskListView.as_view()), name="task_list"),
    path("tasks/<int:task_id>/", never_cache(TaskDetailView.as_view()), name="task_detail"),
    path("tasks/events/", never_cache(TaskListEventsView.as_view()), name="task_list_events"),
    path("tasks/<int:task_id>/events/", never_cache(TaskEventsView.as_view()), name="task_events"),
    path("tasks/<int:task_id>/cancel/", never_cache(TaskCancelView.as_view()), name="task_cancel"),
    path("tasks/<int:task_id>/retry/", never_cache(TaskRetryView.as_view()), name="task_retry"),
    path("tasks/<int:task_id>/rerun/", never_cache(TaskRerunView.as_view()), name="task_rerun"),
    path("schedules/", never_cache(ScheduleListView.as_view()), name="schedule_list"),
    path("schedules/<int:schedule_id>/", never_cache(ScheduleDetailView.as_view()), name="schedule_detail"),
    path("schedules/<int:schedule_id>/run/", never_cache(ScheduleRunView.as_view()), name="schedule_run"),
    path("task-types/", never_cache(TaskTypeListView.as_view()), name="task_types"),
    path("schema/", never_cache(SchemaView.as_view()), name="api_schema"),
    path("docs/", never_cache(ApiDocsView.as_view(url_name="api_schema")), name="api_docs"),
    # Anything else under the API answers a JSON 404, never an HTML page.
    re_path(r"^", never_cache(api_not_found)),
]

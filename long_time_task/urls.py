from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .errors import api_not_found
from .events import TaskEventsView, TaskListEventsView
from .views import (
    TaskCancelView,
    TaskDetailView,
    TaskListView,
    TaskRerunView,
    TaskRetryView,
    TaskSubmitView,
    TaskTypeListView,
)

urlpatterns = [
    path("tasks/", TaskSubmitView.as_view(), name="task_submit"),
    path("tasks/list/", TaskListView.as_view(), name="task_list"),
    path("tasks/<int:task_id>/", TaskDetailView.as_view(), name="task_detail"),
    path("tasks/events/", TaskListEventsView.as_view(), name="task_list_events"),
    path("tasks/<int:task_id>/events/", TaskEventsView.as_view(), name="task_events"),
    path("tasks/<int:task_id>/cancel/", TaskCancelView.as_view(), name="task_cancel"),
    path("tasks/<int:task_id>/retry/", TaskRetryView.as_view(), name="task_retry"),
    path("tasks/<int:task_id>/rerun/", TaskRerunView.as_view(), name="task_rerun"),
    path("task-types/", TaskTypeListView.as_view(), name="task_types"),
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    # Anything else under the API answers a JSON 404, never an HTML page.
    re_path(r"^", api_not_found),
]

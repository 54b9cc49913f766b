from __future__ import annotations

from django.urls import path, re_path

from .errors import api_not_found
from .views import TaskDetailView, TaskListView, TaskSubmitView

urlpatterns = [
    path("tasks/", TaskSubmitView.as_view(), name="task_submit"),
    path("tasks/list/", TaskListView.as_view(), name="task_list"),
    path("tasks/<int:task_id>/", TaskDetailView.as_view(), name="task_detail"),
    # Anything else under the API answers a JSON 404, never an HTML page.
    re_path(r"^", api_not_found),
]

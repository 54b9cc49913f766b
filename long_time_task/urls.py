from __future__ import annotations

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from .errors import api_not_found
from .views import TaskDetailView, TaskListView, TaskSubmitView, TaskTypeListView

urlpatterns = [
    path("tasks/", TaskSubmitView.as_view(), name="task_submit"),
    path("tasks/list/", TaskListView.as_view(), name="task_list"),
    path("tasks/<int:task_id>/", TaskDetailView.as_view(), name="task_detail"),
    path("task-types/", TaskTypeListView.as_view(), name="task_types"),
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
    # Anything else under the API answers a JSON 404, never an HTML page.
    re_path(r"^", api_not_found),
]

"""The dashboard's URLs: ``path("dashboard/", include("long_time_task.dashboard.urls"))``."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "ltt_dashboard"

urlpatterns = [
    path("", views.task_list, name="task_list"),
    path("overview/", views.overview, name="overview"),
    path("submit/", views.submit, name="submit"),
    path("tasks/<int:task_id>/", views.task_detail, name="task_detail"),
    path("tasks/<int:task_id>/cancel/", views.task_action, {"action": "cancel"}, name="task_cancel"),
    path("tasks/<int:task_id>/retry/", views.task_action, {"action": "retry"}, name="task_retry"),
    path("tasks/<int:task_id>/rerun/", views.task_action, {"action": "rerun"}, name="task_rerun"),
    path("tasks/<int:task_id>/files/<str:name>", views.download, name="task_file"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="long_time_task_dashboard/login.html",
            redirect_authenticated_user=True,
            next_page="ltt_dashboard:task_list",
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="ltt_dashboard:login"), name="logout"),
]

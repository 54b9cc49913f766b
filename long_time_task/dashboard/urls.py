"""The dashboard's URLs: ``path("dashboard/", include("long_time_task.dashboard.urls"))``."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from . import schedules, views

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
    path("schedules/", schedules.schedule_list, name="schedule_list"),
    path("schedules/new/", schedules.schedule_new, name="schedule_new"),
    path("schedules/preview/", schedules.schedule_preview, name="schedule_preview"),
    path("schedules/<int:schedule_id>/", schedules.schedule_detail, name="schedule_detail"),
    path("schedules/<int:schedule_id>/pause/", schedules.schedule_action, {"action": "pause"}, name="schedule_pause"),
    path(
        "schedules/<int:schedule_id>/resume/", schedules.schedule_action, {"action": "resume"}, name="schedule_resume"
    ),
    path("schedules/<int:schedule_id>/run/", schedules.schedule_action, {"action": "run"}, name="schedule_run"),
    path("schedules/<int:schedule_id>/delete/", schedules.schedule_delete, name="schedule_delete"),
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

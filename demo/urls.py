from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("long_time_task.urls")),
    path("dashboard/", include("long_time_task.dashboard.urls")),
    path("", RedirectView.as_view(pattern_name="ltt_dashboard:task_list"), name="home"),
]

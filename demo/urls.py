from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView


def favicon(request: HttpRequest) -> HttpResponseRedirect:
    """Browsers ask every site for /favicon.ico (the admin's pages name no icon): the dashboard's."""
    return HttpResponseRedirect(static("long_time_task_dashboard/favicon.ico"))


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("long_time_task.api.urls")),
    path("dashboard/", include("long_time_task.dashboard.urls")),
    path("favicon.ico", favicon, name="favicon"),
    path("", RedirectView.as_view(pattern_name="ltt_dashboard:task_list"), name="home"),
]

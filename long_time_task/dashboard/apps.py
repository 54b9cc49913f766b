from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class DashboardConfig(AppConfig):
    name = "long_time_task.dashboard"
    label = "long_time_task_dashboard"
    verbose_name = _("Task dashboard")

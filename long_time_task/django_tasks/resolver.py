"""Finding a Django task function's type in a process that has not imported its module yet (a worker, beat).

A row names its task type by the function's module path. The resolver imports that module only when it is safe
to: the project uses this backend (``TASKS``, read when asked), the path is made of identifiers, its module is an
installed app or inside one, and what the path names, once imported, is a Django ``Task`` on this backend (its
module registers it when it is imported). Any other name is left unknown: a path from the database never makes a
process import anything outside the project's installed apps, nor run anything that is not a Django task.
"""

from __future__ import annotations

import importlib
import logging
import re
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

logger = logging.getLogger(__name__)

BACKEND = "long_time_task.django_tasks.backend.LongTimeTaskBackend"
DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
MAX_UNKNOWN = 1024
_unknown: set[str] = set()  # names found not to be Django tasks (bounded)


def uses_backend() -> bool:
    tasks: Any = getattr(settings, "TASKS", None)
    return isinstance(tasks, dict) and any(
        isinstance(params, dict) and params.get("BACKEND") == BACKEND for params in tasks.values()
    )


def in_installed_app(module: str) -> bool:
    return any(module == app.name or module.startswith(app.name + ".") for app in apps.get_app_configs())


def resolve(task_type: str) -> None:
    """Import the module of ``task_type`` if it may be a Django task on this backend (it registers itself)."""
    if task_type in _unknown or not DOTTED.match(task_type) or not uses_backend():
        return
    module_name, _, attribute = task_type.rpartition(".")
    found = None
    # The function may be nested in a class (qualname ``Class.func``): try the longest module first.
    while module_name and found is None:
        if in_installed_app(module_name):
            try:
                found = importlib.import_module(module_name)
            except ImportError:
                found = None
        if found is None:
            module_name, _, outer = module_name.rpartition(".")
            attribute = f"{outer}.{attribute}"
    target: Any = found
    for part in attribute.split(".") if found is not None else ():
        target = getattr(target, part, None)
    from .backend import LongTimeTaskBackend
    from .compat import Task

    if isinstance(target, Task) and target.module_path == task_type:
        try:
            backend = target.get_backend()
        except ImproperlyConfigured:  # its backend alias is not in TASKS (any more)
            backend = None
        if isinstance(backend, LongTimeTaskBackend):
            backend.config_for(target)  # registered at import already, unless the settings changed since
            return
    if len(_unknown) < MAX_UNKNOWN:
        _unknown.add(task_type)
    logger.debug("%r is not a Django task on this backend; left unknown", task_type)


@receiver(setting_changed, dispatch_uid="long_time_task.django_tasks.resolver.forget")
def _forget_unknown(setting: str, **kwargs: Any) -> None:
    if setting in ("TASKS", "INSTALLED_APPS"):
        _unknown.clear()

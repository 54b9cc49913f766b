"""Django's tasks API (``django.tasks`` on Django 6.0+, the ``django-tasks`` backport on 5.2) on tracked Celery workers.

``TASKS = {"default": {"BACKEND": "long_time_task.django_tasks.backend.LongTimeTaskBackend"}}`` makes every
``@task`` function's ``.enqueue()`` go through ``services.submit``: one ``LongTimeTask`` row, published after the
commit, run by the executor like a registered task type (docs/django-tasks.md).

Nothing here is imported unless the backend is used: ``resolver`` (installed by the app) reads only settings.
"""

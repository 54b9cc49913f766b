"""The raw Celery tasks of the baseline and of the django-celery-results peer."""

from __future__ import annotations

from celery import shared_task

from .marks import mark


@shared_task(name="bench.raw_noop", ignore_result=True)
def raw_noop(sent_at: float) -> None:
    mark(sent_at)


@shared_task(name="bench.dcr_noop", ignore_result=False)
def dcr_noop(sent_at: float) -> None:
    mark(sent_at)

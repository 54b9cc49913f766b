from __future__ import annotations

from django.db import models


class HandlerRun(models.Model):
    """One row per handler invocation, written by the test handlers themselves (the side effect we count)."""

    task_id = models.BigIntegerField()
    task_type = models.CharField(max_length=100)
    attempt = models.PositiveIntegerField()
    routing_key = models.CharField(max_length=100, blank=True, default="")
    pid = models.IntegerField()
    db_backend_pid = models.IntegerField(null=True)  # type: ignore[misc]
    at = models.DateTimeField(auto_now_add=True)
    ended = models.DateTimeField(null=True)  # type: ignore[misc]  # set by handlers that record their end (fault_work)

    class Meta:
        ordering = ["id"]
        permissions = [("run_restricted", "Can submit the test_restricted task type")]

    def __str__(self) -> str:
        return f"{self.task_type}#{self.task_id} attempt {self.attempt}"

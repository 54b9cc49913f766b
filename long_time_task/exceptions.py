"""Exceptions a task handler may raise on purpose."""

from __future__ import annotations


class TaskError(Exception):
    """Fail the task with a message that is safe to show its owner (other errors show a generic message).

    ``raise TaskError("Dataset 42 is empty", code="empty_dataset")``: the owner sees the message and the
    code; staff also see the traceback. It is never retried unless the type lists it as retryable.
    """

    def __init__(self, message: str, *, code: str = "task_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

"""What `celery events` and Flower see: Celery's public event receiver, in a thread of the test process.

``EventCapture`` consumes the broker's event stream with ``app.events.Receiver`` (what ``celery events --dump`` runs)
and folds every event into ``app.events.State`` (the state machine Flower's own ``EventsState`` extends), so a test
can ask what a monitor shows for a task: its name, its state, its exception.
"""

from __future__ import annotations

import threading
from typing import Any

from tests.workers import wait_for


class EventCapture:
    """``with EventCapture(app) as events: ...``; ``events.sync(hostname)`` before the events that matter."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.state = app.events.State()
        self._lock = threading.Lock()
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, name="event-capture", daemon=True)

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)
            self.state.event(event)

    def __enter__(self) -> EventCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)

    def sync(self, hostname: str, timeout: float = 20) -> None:
        """Wait until a worker-heartbeat event from ``hostname`` arrives after every event received so far: the
        receiver is subscribed, that worker sends events, and what it sent before has arrived (one connection, in
        order). The worker is asked for a heartbeat at each poll (``celery control heartbeat``)."""
        start = len(self.snapshot())

        def heard() -> bool:
            if any(e["type"] == "worker-heartbeat" and e.get("hostname") == hostname for e in self.snapshot()[start:]):
                return True
            self.app.control.heartbeat(destination=[hostname])
            return False

        wait_for(heard, timeout=timeout, interval=0.5, what=f"a worker-heartbeat event from {hostname}")

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    def of_task(self, celery_id: str) -> list[dict[str, Any]]:
        """The task events of one Celery id, in the order received."""
        return [e for e in self.snapshot() if e["type"].startswith("task-") and e.get("uuid") == celery_id]

    def task_types(self, celery_id: str) -> list[str]:
        return [e["type"] for e in self.of_task(celery_id)]

    def shown(self, celery_id: str) -> Any:
        """What a monitor shows for the task (``celery.events.state.Task``: ``name``, ``state``, ``exception``...)."""
        with self._lock:
            return self.state.tasks.get(celery_id)

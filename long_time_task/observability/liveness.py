"""The files that tell the liveness probes (``probe.py``) that the worker and beat are alive.

- **Worker**: its main process touches ``WORKER_LIVENESS_FILE`` at every lease heartbeat (``worker/heartbeat.py``),
  whether or not the database answered: the file says the heartbeat thread runs, and a worker whose heartbeat is
  stuck (so that its leases will expire) goes stale. It does not say that the consumer takes messages: that needs
  the broker, which a liveness probe must not depend on.
- **Beat**: its scheduler has no tick hook, but every task it sends goes through Celery's documented
  ``before_task_publish`` signal, sent before the publish (so a broker that is down does not make beat look dead).
  When ``beat_init`` says this process runs beat, the file is touched, and a receiver is connected that touches it
  whenever the scheduler's own thread publishes; web and worker processes never get that receiver. The reaper and
  the sweeper are scheduled every few seconds (``long_time_task.W003`` warns when they are not), so a live beat
  touches its file at least that often. The schedule file's modification time would be a poorer signal: Celery
  writes it at most every 3 minutes, and django-celery-beat's scheduler has none.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from celery import signals

from ..conf import conf

logger = logging.getLogger(__name__)


class LivenessFile:
    """One file whose modification time says "alive"; creates it (and its directory) on first use. A failure is
    logged once, not at every touch: the probe, finding the file stale, reports the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failed = False

    def touch(self) -> None:
        try:
            try:
                self.path.touch()
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.touch()
        except OSError:
            if not self.failed:
                logger.warning(
                    "Cannot touch the liveness file %s: the liveness probe will fail", self.path, exc_info=True
                )
            self.failed = True
        else:
            self.failed = False


class BeatLiveness:
    """Beat's file, touched from the thread the scheduler runs in (with ``celery worker -B`` other threads of the
    process publish too)."""

    def __init__(self, file: LivenessFile, thread: int) -> None:
        self.file = file
        self.thread = thread

    def published(self, sender: Any = None, **kwargs: Any) -> None:
        if threading.get_ident() == self.thread:
            self.file.touch()


beat: BeatLiveness | None = None


@signals.beat_init.connect(dispatch_uid="long_time_task.observability.beat_started")
def beat_started(sender: Any = None, **kwargs: Any) -> None:
    """Sent by Celery in the thread that runs the scheduler, just before its loop."""
    global beat
    path = conf.BEAT_LIVENESS_FILE
    if path is None:
        return
    beat = BeatLiveness(LivenessFile(path), threading.get_ident())
    beat.file.touch()
    signals.before_task_publish.connect(
        beat.published, weak=False, dispatch_uid="long_time_task.observability.beat_published"
    )

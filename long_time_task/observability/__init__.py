"""What an operator watches: the web process's health endpoints (``health``), the files that tell the worker's
and beat's liveness probes they are alive (``liveness``), the probe that reads those files (``probe``), and the
library's log formats (``logs``).

Nothing is imported here: ``python -m long_time_task.observability.probe`` must start without Django or Celery.
"""

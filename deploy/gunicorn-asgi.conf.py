"""gunicorn's settings for the event streams (ASGI): ``gunicorn -c deploy/gunicorn-asgi.conf.py``.

Only ``/api/tasks/events/`` and ``/api/tasks/{id}/events/`` come here (deploy/nginx/ltt.conf routes them): under
uvicorn an open stream holds no thread, and 200 of them left the API's latency unchanged. The rest of the site
stays on the WSGI process (deploy/gunicorn.conf.py): under ASGI it ran 3-4x slower, and with persistent
database connections opened one per request until PostgreSQL refused more, hence ``DATABASE_CONN_MAX_AGE=0``
(the streams' one poller per process keeps its own connection while streams are open). README, "Deployment".
"""

from __future__ import annotations

import os

wsgi_app = os.environ.get("LTT_ASGI_APP", "demo.asgi:application")
bind = [os.environ.get("LTT_EVENTS_BIND", "127.0.0.1:8001")]

worker_class = "uvicorn_worker.UvicornWorker"
workers = int(os.environ.get("LTT_EVENTS_WORKERS", "1"))
raw_env = ["DATABASE_CONN_MAX_AGE=0"]  # set in each worker's environment before Django reads its settings

# A stream lasts LONG_TIME_TASK_EVENTS_STREAM_SECONDS (30 s); a stopping process lets the open ones end, and the
# browsers reconnect to the next process (every stream starts with the full state, so nothing is missed).
graceful_timeout = 45
timeout = 60
keepalive = 5  # uvicorn's keep-alive, above nginx's upstream keepalive_timeout (4 s)
forwarded_allow_ips = os.environ.get("LTT_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

accesslog = "-"  # uvicorn writes its own access lines (its format, not access_log_format)
errorlog = "-"
proc_name = "ltt-events"

"""gunicorn's settings for the site, the API and the admin (WSGI): ``gunicorn -c deploy/gunicorn.conf.py``.

What the README's "Deployment" measured (docs/performance.md, "API under load"): the gthread worker, one
process per core and 4 threads each. The event streams go to the ASGI process (deploy/gunicorn-asgi.conf.py);
a small site that runs none serves one stream per process here (``LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS``).
Every value can be changed on the command line, which wins over this file (``--bind 0.0.0.0:$PORT``).
"""

from __future__ import annotations

import os

wsgi_app = os.environ.get("LTT_WSGI_APP", "demo.wsgi:application")
bind = [os.environ.get("LTT_WEB_BIND", "127.0.0.1:8000")]  # behind the proxy (deploy/nginx/ltt.conf)

worker_class = "gthread"
workers = int(os.environ.get("LTT_WEB_WORKERS") or os.cpu_count() or 2)
threads = int(os.environ.get("LTT_WEB_THREADS", "4"))

# A stopping process (SIGTERM) finishes the requests it has before it exits: the longest is an event stream
# (LONG_TIME_TASK_EVENTS_STREAM_SECONDS, 30 s) or a submit waiting on a broker that stopped answering (a 10 s
# socket timeout, retried); the systemd unit's TimeoutStopSec and Supervisor's stopwaitsecs (60 s) are above it.
graceful_timeout = 45
timeout = 60  # a worker silent this long is killed and replaced (gthread: its main loop, not a request)
keepalive = 5  # nginx reuses its connections (deploy/nginx/ltt.conf: upstream keepalive_timeout 4 s, below this)

# nginx in front on the same host says the scheme (X-Forwarded-Proto) and the client (X-Forwarded-For).
forwarded_allow_ips = os.environ.get("LTT_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# One line per request on stdout, with the client as the proxy saw it and the time taken (ms).
accesslog = "-"
errorlog = "-"
access_log_format = '%({x-forwarded-for}i)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s"'
proc_name = "ltt-web"

"""Settings of the demo project.

Every setting that differs between a laptop and production is read from the environment; the README's
"The demo project's environment" table lists them (the app's own settings are in the table above it). With no
environment at all, the project runs on the *embedded default*: SQLite for the database and kombu's SQLAlchemy
transport on a second SQLite file as the broker.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import django
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("DEMO_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use true/false)")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ValueError("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false")
    SECRET_KEY = "django-insecure-local-development-only"  # noqa: S105 - only with DEBUG on
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# HTTPS. On by default when DEBUG is off (so `check --deploy` passes); each can be turned off from the
# environment, e.g. behind a proxy that already redirects (then set DJANGO_SECURE_PROXY_SSL_HEADER=true).
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", not DEBUG)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

# ---------------------------------------------------------------- security headers
# Content-Security-Policy: only this site's own scripts, styles and frames, nothing inline (the dashboard,
# long_time_task's admin pages and the API docs page have no inline script or style). Swagger UI's
# stylesheet draws its icons as data: images. Django sets the header from 6.0; on 5.2 long_time_task's
# middleware reads the same setting (long_time_task/security.py).
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "frame-ancestors": ["'none'"],
    "form-action": ["'self'"],
}
# Permissions-Policy: no page here needs a device, a sensor or a payment: deny them to every frame.
PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in (
        "accelerometer",
        "ambient-light-sensor",
        "autoplay",
        "bluetooth",
        "browsing-topics",
        "camera",
        "display-capture",
        "encrypted-media",
        "geolocation",
        "gyroscope",
        "hid",
        "idle-detection",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "screen-wake-lock",
        "serial",
        "usb",
        "xr-spatial-tracking",
    )
}
_SECURITY_HEADERS_MIDDLEWARE = [
    "django.middleware.csp.ContentSecurityPolicyMiddleware"
    if django.VERSION >= (6, 0)
    else "long_time_task.security.ContentSecurityPolicyMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "long_time_task",
    "long_time_task.dashboard",
    *env_list("DEMO_EXTRA_APPS", []),
]

MIDDLEWARE = [
    # First: answers GET/HEAD /healthz and /readyz whatever the Host header and over plain HTTP (probes use the
    # pod's IP), before ALLOWED_HOSTS or the HTTPS redirect can refuse them; passes everything else on untouched.
    "long_time_task.observability.health.HealthCheckMiddleware",
    # Then GET /metrics for Prometheus (staff API tokens and LONG_TIME_TASK_METRICS_TOKEN), for the same reasons:
    # Prometheus scrapes the pod's IP.
    "long_time_task.api.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    *_SECURITY_HEADERS_MIDDLEWARE,
    # Static files (the dashboard's CSS and script) served by the app itself in production.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # Times in the viewer's zone, once the pages' script has told it (long_time_task/timezones.py).
    "long_time_task.timezones.ViewerTimezoneMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "demo.wsgi.application"

# The embedded default keeps its files (SQLite database, broker, inputs, results) in var/.
VAR_DIR.mkdir(parents=True, exist_ok=True)

# ---------------------------------------------------------------- database
# DATABASE_URL, e.g. postgres://user:pass@host:5432/name. Default: SQLite in var/.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}


def harden_postgres(database: Any) -> None:
    """A host cut off from PostgreSQL (a partition, a dead server that never closed the connection) must not wait
    on it for the kernel's default of minutes to hours: connects give up after 5 s, an idle connection is probed
    after 10 s and dropped after three unanswered probes, and data left unacknowledged for 20 s drops it (libpq's
    connect_timeout, keepalives and tcp_user_timeout). Options in DATABASE_URL's query string win."""
    if "postgresql" not in database["ENGINE"]:
        return
    options = database.setdefault("OPTIONS", {})
    for key, value in {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 20_000,  # milliseconds
    }.items():
        options.setdefault(key, value)


harden_postgres(DATABASES["default"])
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: WAL plus IMMEDIATE transactions avoid "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# ---------------------------------------------------------------- i18n
# English is the source language; Simplified Chinese (zh-hans) carries the seed's own wording.
LANGUAGE_CODE = env_str("DJANGO_LANGUAGE_CODE", "en")
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True  # stored in UTC; shown in the viewer's zone once known, in TIME_ZONE until then

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(VAR_DIR / "static")))
# WhiteNoise serves STATIC_ROOT; before the first collectstatic it is empty, but it must exist (WhiteNoise
# warns about a missing one, and with DEBUG on the files come from the apps' static directories anyway).
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# With DEBUG off, `manage.py collectstatic` first: WhiteNoise serves the hashed, compressed copies.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# The dashboard (/dashboard/) logs users in with its own page.
LOGIN_URL = "ltt_dashboard:login"
LOGIN_REDIRECT_URL = "ltt_dashboard:task_list"

# ---------------------------------------------------------------- API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "long_time_task.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["long_time_task.api.limits.LimitedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "long_time_task.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "django-celery-task-manage API",
    "DESCRIPTION": "Submit long-running tasks, follow their state, list them. Every error is "
    '`{"success": false, "error": "...", "code": "..."}`.',
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",  # served by the app itself: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "long_time_task.api.openapi.add_task_type_params",
        "long_time_task.api.openapi.require_event_stream_accept",
    ],
    "ENUM_NAME_OVERRIDES": {"TaskStateEnum": "long_time_task.models.TaskState"},
}

# The cache holds the throttle counters (submit rate, failed logins): share it between web processes in production.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["DJANGO_CACHE_URL"]}
        if os.environ.get("DJANGO_CACHE_URL")
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# ---------------------------------------------------------------- login throttling (django-axes)
# Failed logins, on the dashboard's login page and the admin's alike, are counted per username and per client
# address in the cache above (DJANGO_CACHE_URL: shared by every web process). When either count reaches
# LOGIN_FAILURE_LIMIT, logins for that username, or from that address, are refused for LOGIN_COOLOFF_SECONDS
# (429 with Retry-After), even with the right password, and before any password is hashed. Staff unlock with
# `manage.py axes_reset_username NAME` or `manage.py axes_reset_ip ADDRESS` (README, "Login throttling").
INSTALLED_APPS = [*INSTALLED_APPS, "axes"]
MIDDLEWARE = [*MIDDLEWARE, "axes.middleware.AxesMiddleware"]  # turns a refused login into the lockout response
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: a locked-out login stops here, before the password is hashed
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # two counters: a username OR an address gets locked
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", 900))
# Attempts during a lockout neither count nor extend it: Retry-After stays true for the locked-out user.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "long_time_task.dashboard.lockout.lockout_response"
AXES_CLIENT_IP_CALLABLE = "long_time_task.dashboard.lockout.client_ip"
AXES_USERNAME_CALLABLE = "long_time_task.dashboard.lockout.username_key"
AXES_ENABLE_ADMIN = False  # its admin pages list database records, which the cache handler does not write
LONG_TIME_TASK_TRUSTED_PROXY_COUNT = env_int("LONG_TIME_TASK_TRUSTED_PROXY_COUNT", 0)
if DEBUG and not os.environ.get("DJANGO_CACHE_URL"):
    # One development server: its local-memory cache is shared by every request. In production (several web
    # processes) axes warns unless DJANGO_CACHE_URL points at a shared cache.
    SILENCED_SYSTEM_CHECKS = ["axes.W001"]

# ---------------------------------------------------------------- long_time_task
LONG_TIME_TASK_FILES_DIR = Path(env_str("LONG_TIME_TASK_FILES_DIR", str(VAR_DIR / "files")))
LONG_TIME_TASK_RESULTS_DIR = Path(env_str("LONG_TIME_TASK_RESULTS_DIR", str(VAR_DIR / "results")))
# API limits.
LONG_TIME_TASK_SUBMIT_RATE = env_str("LONG_TIME_TASK_SUBMIT_RATE", "60/min") or None
LONG_TIME_TASK_MAX_UNFINISHED_PER_USER = env_int("LONG_TIME_TASK_MAX_UNFINISHED_PER_USER", 100) or None
LONG_TIME_TASK_MAX_BODY_BYTES = env_int("LONG_TIME_TASK_MAX_BODY_BYTES", 65_536)
LONG_TIME_TASK_MAX_PARAMS_BYTES = env_int("LONG_TIME_TASK_MAX_PARAMS_BYTES", 16_384)
# Reliability bounds, in seconds (see the README's "Guarantees").
LONG_TIME_TASK_LEASE_SECONDS = float(env_str("LONG_TIME_TASK_LEASE_SECONDS", "30"))
LONG_TIME_TASK_HEARTBEAT_INTERVAL = float(env_str("LONG_TIME_TASK_HEARTBEAT_INTERVAL", "10"))
LONG_TIME_TASK_LEASE_FENCE = env_bool("LONG_TIME_TASK_LEASE_FENCE", True)
LONG_TIME_TASK_REAPER_INTERVAL = float(env_str("LONG_TIME_TASK_REAPER_INTERVAL", "15"))
LONG_TIME_TASK_SWEEP_INTERVAL = float(env_str("LONG_TIME_TASK_SWEEP_INTERVAL", "15"))
LONG_TIME_TASK_REDISPATCH_AFTER = float(env_str("LONG_TIME_TASK_REDISPATCH_AFTER", "120"))
# Operating tasks (see the README's configuration table).
LONG_TIME_TASK_PROGRESS_INTERVAL = float(env_str("LONG_TIME_TASK_PROGRESS_INTERVAL", "1"))
LONG_TIME_TASK_CANCEL_GRACE_SECONDS = float(env_str("LONG_TIME_TASK_CANCEL_GRACE_SECONDS", "30"))
LONG_TIME_TASK_ETA_MAX_SECONDS = float(env_str("LONG_TIME_TASK_ETA_MAX_SECONDS", "300"))
LONG_TIME_TASK_RETENTION_DAYS = float(env_str("LONG_TIME_TASK_RETENTION_DAYS", "0")) or None
LONG_TIME_TASK_PURGE_INTERVAL = float(env_str("LONG_TIME_TASK_PURGE_INTERVAL", "3600"))
# Schedules (docs/schedules.md): how often beat sends the scheduler's tick, and the shortest interval allowed.
LONG_TIME_TASK_SCHEDULER_INTERVAL = float(env_str("LONG_TIME_TASK_SCHEDULER_INTERVAL", "1"))
LONG_TIME_TASK_SCHEDULE_MIN_INTERVAL = env_int("LONG_TIME_TASK_SCHEDULE_MIN_INTERVAL", 60)
# The dashboard's live updates (docs/dashboard.md): how long one event stream lasts before the browser
# reconnects, how often the shared poller reads the watched rows, a switch (off: 503, the pages poll), the
# streams per user and web process, and the streams one WSGI process serves at once (each holds a thread).
LONG_TIME_TASK_EVENTS_STREAM_SECONDS = float(env_str("LONG_TIME_TASK_EVENTS_STREAM_SECONDS", "30"))
LONG_TIME_TASK_EVENTS_POLL_INTERVAL = float(env_str("LONG_TIME_TASK_EVENTS_POLL_INTERVAL", "0.5"))
LONG_TIME_TASK_EVENTS_ENABLED = env_bool("LONG_TIME_TASK_EVENTS_ENABLED", True)
LONG_TIME_TASK_EVENTS_MAX_PER_USER = env_int("LONG_TIME_TASK_EVENTS_MAX_PER_USER", 10)
LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS = env_int("LONG_TIME_TASK_EVENTS_WSGI_MAX_STREAMS", 1)
# Health probes (docs/operations.md): how long /readyz waits for the database and the broker, and the files the
# worker's and beat's liveness probes read (unset: none; give each worker process a file of its own).
LONG_TIME_TASK_READY_TIMEOUT = float(env_str("LONG_TIME_TASK_READY_TIMEOUT", "2"))
LONG_TIME_TASK_WORKER_LIVENESS_FILE = env_str("LONG_TIME_TASK_WORKER_LIVENESS_FILE", "") or None
LONG_TIME_TASK_BEAT_LIVENESS_FILE = env_str("LONG_TIME_TASK_BEAT_LIVENESS_FILE", "") or None
# Prometheus metrics (docs/operations.md, "Metrics"): counted unless off; /metrics answers staff API tokens and
# this scraper token; a worker host without a web process can serve its counters on a port of its own. Counters
# are exact across processes only with PROMETHEUS_MULTIPROC_DIR set in every process's environment.
LONG_TIME_TASK_METRICS = env_bool("LONG_TIME_TASK_METRICS", True)
LONG_TIME_TASK_METRICS_TOKEN = env_str("LONG_TIME_TASK_METRICS_TOKEN", "") or None
LONG_TIME_TASK_WORKER_METRICS_PORT = env_int("LONG_TIME_TASK_WORKER_METRICS_PORT", 0) or None

# ---------------------------------------------------------------- Celery
# redis://[:password@]host:6379/0, rediss://... for TLS, amqp://user:pass@host:5672//, or the default:
# kombu's SQLAlchemy transport on a SQLite file, a broker that needs no server (no priorities, no broadcast).
# Redis behind Sentinel: every Sentinel, `;`-separated, the database in the first one, the master's name apart:
# CELERY_BROKER_URL='sentinel://10.0.0.1:26379/0;sentinel://10.0.0.2:26379/0;sentinel://10.0.0.3:26379/0'
# CELERY_BROKER_SENTINEL_MASTER=mymaster (docs/deployment.md, "Redis Sentinel").
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'broker.sqlite3'}")
_BROKER_SCHEME = CELERY_BROKER_URL.split("://", 1)[0]
_REDIS_BROKER = _BROKER_SCHEME.startswith("redis") or _BROKER_SCHEME == "sentinel"  # Sentinel: Redis, found by asking
# A submit must not hang on a dead broker: give up connecting after this many seconds (the row stays PENDING).
CELERY_BROKER_CONNECTION_TIMEOUT = float(env_str("CELERY_BROKER_CONNECTION_TIMEOUT", "2"))
if _BROKER_SCHEME == "rediss" and "ssl_cert_reqs" not in CELERY_BROKER_URL:
    # TLS to Redis: verify the server's certificate (against CELERY_BROKER_SSL_CA_CERTS, or the system CAs).
    import ssl

    CELERY_BROKER_USE_SSL: dict[str, object] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if os.environ.get("CELERY_BROKER_SSL_CA_CERTS"):
        CELERY_BROKER_USE_SSL["ssl_ca_certs"] = os.environ["CELERY_BROKER_SSL_CA_CERTS"]

# The database is the source of truth: no result backend keeps a second copy of every result.
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True

CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"

CELERY_TIMEZONE = TIME_ZONE
CELERY_ENABLE_UTC = True

CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 4)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 100)
# Keep each worker process's database connection across tasks (Celery closes it around every task
# otherwise); long_time_task closes it only when CONN_MAX_AGE or a failed health check says so.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1_000_000)

# Fallback limits; every task type sets its own from the registry.
CELERY_TASK_SOFT_TIME_LIMIT = 3300
CELERY_TASK_TIME_LIMIT = 3600
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_TASK_DEFAULT_RETRY_DELAY = 60
CELERY_TASK_MAX_RETRIES = 3
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_DEFAULT_PRIORITY = 5
# RabbitMQ only: CELERY_QUEUE_TYPE=classic (the default: priority queues, x-max-priority=10) or quorum (replicated,
# with a poison-message limit of CELERY_QUEUE_DELIVERY_LIMIT redeliveries; no priorities on RabbitMQ 3.x, which
# refuses x-max-priority on them). Quorum queues sit on topic exchanges, so that Celery's native delayed delivery
# carries countdowns and retry delays (on a direct exchange they would hold a worker's prefetch slot). A queue's
# type cannot change in place: docs/deployment.md, "Quorum queues", says how to migrate.
_QUEUE_TYPE = env_str("CELERY_QUEUE_TYPE", "classic").strip().lower() or "classic"
if _QUEUE_TYPE not in {"classic", "quorum"}:
    raise ValueError(f"CELERY_QUEUE_TYPE={_QUEUE_TYPE!r} is not a queue type (use classic or quorum)")
if _QUEUE_TYPE == "quorum" and not _BROKER_SCHEME.startswith("amqp"):
    raise ValueError(f"CELERY_QUEUE_TYPE=quorum needs a RabbitMQ broker (amqp://), not {_BROKER_SCHEME}://")
_DELIVERY_LIMIT = env_int("CELERY_QUEUE_DELIVERY_LIMIT", 5)
if _DELIVERY_LIMIT < 1:
    raise ValueError(f"CELERY_QUEUE_DELIVERY_LIMIT={_DELIVERY_LIMIT} must be at least 1")
_QUEUE_ARGUMENTS: dict[str, object] | None = None
_EXCHANGE_TYPE = "direct"
if _QUEUE_TYPE == "quorum":
    _QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-delivery-limit": _DELIVERY_LIMIT}
    _EXCHANGE_TYPE = "topic"
    # A queue Celery creates on the fly (`celery control add_consumer NEW`) is a quorum queue too.
    CELERY_TASK_CREATE_MISSING_QUEUE_TYPE = "quorum"
    CELERY_TASK_CREATE_MISSING_QUEUE_EXCHANGE_TYPE = "topic"
elif _BROKER_SCHEME.startswith("amqp"):
    _QUEUE_ARGUMENTS = {"x-max-priority": 10}
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name, type=_EXCHANGE_TYPE), routing_key=name, queue_arguments=_QUEUE_ARGUMENTS)
    # "maintenance" carries only the reaper and the sweeper, so long tasks can never starve them.
    for name in ("default", "heavy", "priority", "maintenance")
)

if _REDIS_BROKER:
    # Ten real priority levels (Redis folds them into 4 by default); 0 is the *highest* on Redis, and
    # long_time_task maps the registry's 1..10 (10 highest) onto it.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "priority_steps": list(range(10)),
        "sep": ":",
        "queue_order_strategy": "priority",
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 43200),
        # A broker that vanishes without closing the connection must not hang a publish (or a submit).
        "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
        "socket_timeout": 10,
        "socket_keepalive": True,
    }
    if _BROKER_SCHEME == "sentinel":
        # kombu asks the Sentinels for this master's address before every new connection (so after a failover,
        # reconnecting is all it takes), with the socket_* options above on both kinds of connection.
        CELERY_BROKER_TRANSPORT_OPTIONS["master_name"] = env_str("CELERY_BROKER_SENTINEL_MASTER", "mymaster")
        # A master that stops answering without closing its connections (its host cut off, its process frozen):
        # kombu's check gives up on a worker's BRPOP after about 1 + 2 x this many seconds (its default is 25;
        # measured, a worker consumed again 48 s after such a failover with it, 20 s with 5).
        CELERY_BROKER_TRANSPORT_OPTIONS["health_check_interval"] = env_int("CELERY_BROKER_HEALTH_CHECK_INTERVAL", 5)
        # The Sentinels' own password (one in the URL is the master's), with the socket_* options, which redis-py
        # no longer copies onto the Sentinels' connections once sentinel_kwargs is given.
        if os.environ.get("CELERY_BROKER_SENTINEL_PASSWORD"):
            CELERY_BROKER_TRANSPORT_OPTIONS["sentinel_kwargs"] = {
                **{k: v for k, v in CELERY_BROKER_TRANSPORT_OPTIONS.items() if k.startswith("socket_")},
                "password": os.environ["CELERY_BROKER_SENTINEL_PASSWORD"],
            }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {}

# Celery beat runs long_time_task's reaper (expired leases) and sweeper (unpublished or lost messages).
# Each message expires unrun once it is older than a few minutes, so that a maintenance queue left without a
# consumer holds a bounded backlog. Not sooner: the expiry is an absolute time, set by beat's clock and compared
# with the worker's, so it must outlast any clock skew between their hosts, or a worker whose clock runs ahead
# discards every message (nothing recovered, nothing scheduled; tests/hosts measures it with 30 s).
MAINTENANCE_EXPIRES = 300.0


def maintenance_expires(interval: float) -> float:
    return max(MAINTENANCE_EXPIRES, interval)


_MAINTENANCE = {
    "queue": env_str("LONG_TIME_TASK_MAINTENANCE_QUEUE", "maintenance"),
    "expires": maintenance_expires(max(LONG_TIME_TASK_REAPER_INTERVAL, LONG_TIME_TASK_SWEEP_INTERVAL)),
    "priority": 0 if _REDIS_BROKER else 9,  # the highest
}
CELERY_BEAT_SCHEDULE = {
    "long-time-task-reaper": {
        "task": "long_time_task.reap_expired_leases",
        "schedule": LONG_TIME_TASK_REAPER_INTERVAL,
        "options": _MAINTENANCE,
    },
    "long-time-task-sweeper": {
        "task": "long_time_task.dispatch_due_tasks",
        "schedule": LONG_TIME_TASK_SWEEP_INTERVAL,
        "options": _MAINTENANCE,
    },
    # Creates the runs of the due schedules (a backlog of ticks costs little: the first one does the work).
    "long-time-task-scheduler": {
        "task": "long_time_task.run_schedules",
        "schedule": LONG_TIME_TASK_SCHEDULER_INTERVAL,
        "options": _MAINTENANCE,
    },
    # Deletes finished tasks past their retention (nothing, unless a retention is set).
    "long-time-task-purge": {
        "task": "long_time_task.purge_expired_tasks",
        "schedule": LONG_TIME_TASK_PURGE_INTERVAL,
        "options": {**_MAINTENANCE, "expires": maintenance_expires(LONG_TIME_TASK_PURGE_INTERVAL)},
    },
}

# The worker keeps Django's LOGGING (below) instead of replacing the root logger's handlers with its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Task events for Flower and `celery events`: off unless the worker runs with -E (Flower turns them on itself).
CELERY_WORKER_SEND_TASK_EVENTS = False

# Logs (docs/operations.md, "Logs"): every line with a UTC timestamp and its offset. LONG_TIME_TASK_LOG_FORMAT=json
# turns long_time_task's own lines into JSON objects (with each task's fields), and here the project's other lines too.
LONG_TIME_TASK_LOG_FORMAT = env_str("LONG_TIME_TASK_LOG_FORMAT", "") or None
_LOG_FORMATTER = "JsonFormatter" if LONG_TIME_TASK_LOG_FORMAT == "json" else "PlainFormatter"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"default": {"()": f"long_time_task.observability.logs.{_LOG_FORMATTER}"}},
    # A failed /readyz is logged once per check, with its reason, by long_time_task.observability.health (WARNING);
    # the filter drops Django's ERROR line for each probe's 503.
    "filters": {"probes": {"()": "long_time_task.observability.health.ProbeRequestsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["probes"]}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
}

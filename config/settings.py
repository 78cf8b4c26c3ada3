"""Concord settings: one module, every deployment knob read from the environment."""

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
# Local state (SQLite files, media, collected static) lives under var/, never committed.
(BASE_DIR / "var").mkdir(exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [part.strip() for part in value.split(",") if part.strip()]


DEBUG = env_bool("DEBUG", False)
_DEV_SECRET = "concord-insecure-development-key-change-me"
SECRET_KEY = os.environ.get("SECRET_KEY", _DEV_SECRET if DEBUG else "")
if not SECRET_KEY:
    # A production deployment (DEBUG off) must be given its own secret; a development run
    # (DEBUG=1, which the README's run command sets) gets a fixed, clearly insecure one.
    if "pytest" in sys.modules:
        SECRET_KEY = _DEV_SECRET
    else:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served by the project: /api/docs/ works offline
    "apps.accounts",
    "apps.jobs",
    "apps.workforce",
    "apps.assignments",
    "apps.quality",
    "apps.routing",
    "apps.reports",
    "apps.reviews",
    "apps.webhooks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "apps.common.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.common.middleware.LazyMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.common.security.ContentSecurityPolicyMiddleware",
    "apps.common.faults.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# Database: DATABASE_URL (postgres://... in production and CI); a SQLite file by default.
DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock at BEGIN, so concurrent writers queue up
    # behind each other instead of failing with "database is locked" on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file (not :memory:) so that threads and a Celery worker process can share it; one
    # per test process so that parallel runs never clobber each other.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "var" / f"test-{os.getpid()}.sqlite3")}
# Behind a pooler in transaction mode (PgBouncer `pool_mode = transaction`) a session is
# not the client's own: no server-side cursors, no session-level prepared statements.
DATABASE_POOLER = os.environ.get("DATABASE_POOLER", "")
if DATABASE_POOLER == "transaction":
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
DATABASE_PREPARED_STATEMENTS = env_bool(
    "DATABASE_PREPARED_STATEMENTS", DATABASE_POOLER != "transaction"
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", BASE_DIR / "var" / "media"))
LOGIN_URL = "/login/"

# Uploads of 100,000 items arrive as one body; the parser streams it, so allow it here.
DATA_UPLOAD_MAX_MEMORY_SIZE = int(os.environ.get("DATA_UPLOAD_MAX_MEMORY_SIZE", 512 * 1024 * 1024))
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
# The largest JSON body an API endpoint reads (413 beyond it); item uploads stream instead.
API_MAX_BODY_BYTES = int(os.environ.get("API_MAX_BODY_BYTES", 1024 * 1024))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "apps.common.schema.AutoSchema",
    # JSON through one strict parser (apps.common.jsonlimits): finite numbers, 64-bit
    # integers, no NUL characters, bounded depth and size.
    # The API speaks JSON only (the item upload reads its own formats from the stream).
    "DEFAULT_PARSER_CLASSES": ["apps.common.jsonlimits.StrictJSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "apps.common.pagination.CappedPageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.common.errors.exception_handler",
    # ?format= selects the results file format, not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    # Abuse limits (apps.common.throttling), counted in the shared cache; "" turns one off.
    # submit and list are per token, auth_failure and login per client address.
    "DEFAULT_THROTTLE_CLASSES": ["apps.common.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        # A fast annotator labels about one item a second; 10/s sustained is far beyond any
        # person and what the benches' simulated annotators reach.
        "submit": os.environ.get("THROTTLE_SUBMIT_RATE", "600/min"),
        "list": os.environ.get("THROTTLE_LIST_RATE", "300/min"),
        "auth_failure": os.environ.get("THROTTLE_AUTH_FAILURE_RATE", "30/min"),
        "login": os.environ.get("THROTTLE_LOGIN_RATE", "10/min"),
    },
    # Proxies in front of the web server whose X-Forwarded-For the limits may trust.
    "NUM_PROXIES": int(os.environ["NUM_PROXIES"]) if os.environ.get("NUM_PROXIES") else None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Concord API",
    "DESCRIPTION": "Crowdsourcing job manager with quality control.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.common.schema.add_error_responses",
    ],
    # Several models have a `status`; each choice set gets its own stable name.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "apps.jobs.models.Job.Status",
        "ItemStateEnum": "apps.jobs.models.Item.State",
    },
}

# Celery: Redis is broker and result store when REDIS_URL is set; otherwise tasks run
# eagerly in-process, so the zero-setup default needs no server.
REDIS_URL = os.environ.get("REDIS_URL", "")
# (The in-memory transport names its host: without one kombu logs "No hostname was supplied".)
CELERY_BROKER_URL = REDIS_URL or "memory://localhost/"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
# The test suite runs tasks in-process even with a broker configured; the one test that
# drives a real worker process switches this off for itself.
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL) or (
    "pytest" in sys.modules
)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
# A task whose worker died under it (SIGKILL, the OOM killer) runs again: a pool child's
# death requeues it at once; a whole worker's death leaves it unacknowledged in Redis, and
# another worker takes it once the visibility timeout has passed. Every task is safe to
# run twice; the timeout must exceed the longest task (a big job's aggregation).
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "concord")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The annotator hot path's SQL statements on PostgreSQL (apps.assignments.fastpath). Off,
# PostgreSQL runs the same ORM path as SQLite: for an incident, and so that CI runs both.
CONCORD_FASTPATH = env_bool("CONCORD_FASTPATH", True)
# Invalidations of the per-process caches (apps.common.caches) pushed to every process over
# Redis pub/sub, so that reads skip the per-request version check. Off, every request reads
# the versions from Redis (the fallback the listener uses while Redis is away).
CACHE_INVALIDATION_PUSH = env_bool("CONCORD_CACHE_PUSH", True)
# Whether next and submit say which write path served them (the Concord-Path header). Off by
# default: gold leases take the ORM path, so the header would tell annotators which items
# are gold. For benchmarks and debugging only.
CONCORD_PATH_HEADER = env_bool("CONCORD_PATH_HEADER", False)

# How long a QC reviewer's claim on a review lasts before it returns to the queue.
REVIEW_CLAIM_SECONDS = int(os.environ.get("REVIEW_CLAIM_SECONDS", "600"))

# Client webhooks: attempts per delivery, the exponential backoff between them (base x
# 2^(attempts-1), capped), the answer timeout, how often newly settled items are batched
# into item.finalized, and whether endpoints may sit on loopback or private networks.
WEBHOOK_MAX_ATTEMPTS = int(os.environ.get("WEBHOOK_MAX_ATTEMPTS", "8"))
WEBHOOK_BACKOFF_BASE_SECONDS = float(os.environ.get("WEBHOOK_BACKOFF_BASE_SECONDS", "30"))
WEBHOOK_BACKOFF_MAX_SECONDS = float(os.environ.get("WEBHOOK_BACKOFF_MAX_SECONDS", "21600"))
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "10"))
WEBHOOK_FINALIZED_EVERY_SECONDS = float(os.environ.get("WEBHOOK_FINALIZED_EVERY_SECONDS", "30"))
WEBHOOK_ALLOW_PRIVATE_URLS = env_bool("WEBHOOK_ALLOW_PRIVATE_URLS", DEBUG)

# Cache: in-process by default; CACHE_URL (e.g. redis://127.0.0.1:6379/1), or else REDIS_URL,
# shares it between processes: counters such as the re-aggregation trigger are then exact
# across workers, and an invalidation of a per-process cache (apps.common.caches: a ban, a
# revoked token) reaches every process. Set CACHE_URL= (empty) to keep it in-process.
CACHE_URL = os.environ.get("CACHE_URL", REDIS_URL)
CACHES = {
    "default": (
        {
            # Django's Redis backend, with a redis client per pool built once.
            "BACKEND": "apps.common.redis_cache.RedisCache",
            "LOCATION": CACHE_URL,
            # An unreachable Redis must fail fast (and be bypassed), never hang a request.
            "OPTIONS": {
                "socket_connect_timeout": float(os.environ.get("CACHE_TIMEOUT_SECONDS", "1")),
                "socket_timeout": float(os.environ.get("CACHE_TIMEOUT_SECONDS", "1")),
            },
        }
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}

if not DEBUG:
    SECURE_CONTENT_TYPE_NOSNIFF = True

# HTTPS and browser protections; production (DEBUG off) turns them on, each can be changed.
# Behind a proxy that terminates TLS, set SECURE_PROXY_SSL_HEADER=HTTP_X_FORWARDED_PROTO
# (the proxy must set X-Forwarded-Proto itself) and SECURE_SSL_REDIRECT=1.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load balancers probe health over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
if os.environ.get("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = (os.environ["SECURE_PROXY_SSL_HEADER"], "https")
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    # Asking browsers to preload HSTS is a commitment for the whole domain: the operator's.
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Content-Security-Policy on every response (apps.common.security).
CONTENT_SECURITY_POLICY = env_bool("CONTENT_SECURITY_POLICY", not DEBUG)

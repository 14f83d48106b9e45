"""Settings shared by every environment. Everything that varies is read from the
environment through django-environ, which raises on a malformed value."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
# A local .env is a convenience for development; real deployments set variables.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-change-me-0123456789abcdefghijklmnop")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "unfold",
    "unfold.contrib.filters",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "profiles",
    "quotas",
    "costs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.NulQueryMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.middleware.LazyMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "/admin/"
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
                "quotas.context_processors.unread_alerts",
            ],
        },
    },
]

# The hot paths' hand-written queries (key lookup, pre-flight check, prices) are
# prepared once per connection. Turn off behind a transaction-mode pooler that
# cannot keep prepared statements (PgBouncer before 1.21).
DB_PREPARE_HOT_QUERIES = env.bool("DB_PREPARE_HOT_QUERIES", default=True)


def database(default_url: str | None = None) -> dict[str, object]:
    """The default database from DATABASE_URL, with the project's connection
    policy; every settings module builds its DATABASES with it."""
    db = env.db("DATABASE_URL", default=default_url) if default_url else env.db("DATABASE_URL")
    db["ATOMIC_REQUESTS"] = False
    db["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
    # A pooled connection that died with a database restart is replaced before
    # use, instead of failing the next request of every web process.
    db["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
    options = db.setdefault("OPTIONS", {})
    if db["ENGINE"] == "django.db.backends.postgresql":
        db["ENGINE"] = "config.postgresql"  # the same backend, a health check without SELECT 1
    if db["ENGINE"] == "config.postgresql" and DB_PREPARE_HOT_QUERIES:
        # psycopg prepares nothing while its threshold is None (Django's
        # default); a threshold never reached leaves every other query unprepared.
        options.setdefault("prepare_threshold", 2**31 - 1)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db["CONN_MAX_AGE"] = 0
        options.update(
            {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
            }
        )
    return db


# Embedded default so a fresh machine runs with no server; production and the
# test suite use PostgreSQL through psycopg 3.
DATABASES = {"default": database(f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(VAR_DIR / "static"))
# The embedded defaults keep their files under var/; make sure it exists.
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Request body cap: a batch of 1000 events fits comfortably; a 10 MB body does not.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=4 * 1024 * 1024)

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="spend@localhost")
# Shorter than a delivery's lease (quotas.notify.LEASE), so a stalled SMTP
# server fails the attempt before another worker may take the delivery over.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
# Alert webhooks go to public addresses only: an organization's admin sets the
# address, and the service must not post for them to its own network (loopback,
# private, link-local such as a cloud's metadata service). On for development
# and tests, whose receivers listen on 127.0.0.1.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default=False)

# How long a reservation waits for a budget row lock before the limiter is
# declared unavailable (then the organization's fail_mode answers).
QUOTA_LOCK_TIMEOUT_MS = env.int("QUOTA_LOCK_TIMEOUT_MS", default=2000)
# Ended reservations (settled, released, expired) are deleted after this many days.
RESERVATION_RETENTION_DAYS = env.int("RESERVATION_RETENTION_DAYS", default=7)

# Per API key; a key's own rate_limit_per_minute overrides it; 0 = unlimited.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=60_000)
# Shared by all web processes in production (Redis), so rate limits hold across them.
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "profiles.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["profiles.api.parsers.DecimalJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "profiles.api.negotiation.ContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "profiles.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["profiles.api.throttling.ApiKeyRateThrottle"],
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
    # The contract's export takes ?format=csv|json itself; DRF must not read it.
    "URL_FORMAT_OVERRIDE": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Spend control plane API",
    "DESCRIPTION": "Prices AI API calls, keeps the ledger, enforces budgets before money is spent.",
    "VERSION": "1.0.0",
    # 3.1: JSON Schema proper, which the pydantic request bodies are written in
    # (an optional field is anyOf [..., {"type": "null"}], invalid in 3.0).
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKey": {"type": "http", "scheme": "bearer", "bearerFormat": "sk_<prefix>_<secret>"}
        }
    },
    "SECURITY": [{"ApiKey": []}],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.schema.add_error_responses",
    ],
}

# Celery. The embedded default is kombu's filesystem transport: no server needed.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "out"),
        "data_folder_out": str(_queue_dir / "out"),
        "processed_folder": str(_queue_dir / "processed"),
        "store_processed": False,
        "control_folder": str(_queue_dir / "control"),
    }
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

UNFOLD = {
    "SITE_TITLE": "Spend control plane",
    "SITE_HEADER": "Spend control plane",
    "SHOW_HISTORY": True,
    "DASHBOARD_CALLBACK": "costs.admin_dashboard.dashboard_context",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

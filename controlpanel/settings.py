"""Settings for the storage control panel.

Every value comes from an environment variable with a local default, so `make run`
works on a fresh clone and production sets only what differs. Read settings here and
nowhere else: other modules use `django.conf.settings`.
"""

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


def envsecret(name: str, default: str = "") -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/K8s secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


VAR_DIR = Path(envstr("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DEBUG", True)


def _local_secret_key() -> str:
    # Generated once per checkout so sessions survive restarts without a committed secret.
    path = VAR_DIR / "secret-key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG=0")
    SECRET_KEY = _local_secret_key()

ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_q",
    "axes",
    "apps.audit",
    "apps.pods",
    "apps.separations",
    "apps.mixjobs",
    "apps.volumes",
    "apps.dashboard",
    "apps.api",
    # Only for its templates and static files: the browsable API page is served from here, no CDN.
    "ninja",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "controlpanel.middleware.NulBytesMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "controlpanel.middleware.StaffRequiredMiddleware",
    "controlpanel.middleware.NotFoundPageMiddleware",
    "controlpanel.middleware.ContentSecurityPolicyMiddleware",
    "controlpanel.middleware.AdminActionIdsMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the page that says when to retry.
    "apps.dashboard.ratelimit.login_limit_middleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlpanel.urls"
WSGI_APPLICATION = "controlpanel.wsgi.application"
ASGI_APPLICATION = "controlpanel.asgi.application"

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
            "builtins": ["apps.dashboard.templatetags.panel"],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'controlpanel.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web server and worker share the file: wait for the other's write lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # Tests use a file too: SQLite in memory with a shared cache locks whole tables and fails at
    # once ("table is locked") where a file waits, and browser tests read while a worker writes.
    # On tmpfs where there is one; a name per test run, removed when the run ends.
    _test_dir = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    DATABASES["default"]["TEST"] = {
        "NAME": envstr("TEST_DATABASE_FILE", str(_test_dir / f"controlpanel-test-{os.getpid()}.sqlite3"))
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"
# Failed logins allowed per username and per client address within the window.
LOGIN_RATE_LIMIT = envint("LOGIN_RATE_LIMIT", 5)
LOGIN_RATE_WINDOW_SECONDS = envint("LOGIN_RATE_WINDOW_SECONDS", 300)
# django-axes counts the failures in the database (a row per username, address and browser,
# incremented under a row lock, so concurrent failures are never lost) and lists them in the admin.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = LOGIN_RATE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=LOGIN_RATE_WINDOW_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_USERNAME_CALLABLE = "apps.dashboard.ratelimit.login_username"
AXES_LOCKOUT_CALLABLE = "apps.dashboard.ratelimit.login_locked_out"
# Attempts while locked out are refused without counting, so "try again in N minutes" stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A success clears that username's failures only (the view does it), never the address's.
AXES_RESET_ON_SUCCESS = False
# No start-up banner on every manage.py command; failures are still logged as warnings.
AXES_VERBOSE = False

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# DEBUG=0 names every static file by its hashed name from the manifest that `collectstatic`
# writes into STATIC_ROOT, and whitenoise serves what was collected there (cached for good);
# controlpanel/wsgi.py refuses to start without it rather than answer each page with a 500.
# Under DEBUG=1 whitenoise reads the source folders on each request, by their plain names.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Security headers; HTTPS-only ones switch on with SECURE_SSL (behind TLS in production).
SECURE_SSL = envbool("SECURE_SSL", not DEBUG)
SECURE_SSL_REDIRECT = SECURE_SSL and envbool("SECURE_SSL_REDIRECT", True)
# A health probe asks the web server directly over plain HTTP: a redirect would read as healthy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("TRUST_X_FORWARDED_PROTO", False) else None
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000) if SECURE_SSL else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_SSL
SECURE_HSTS_PRELOAD = SECURE_SSL
SESSION_COOKIE_SECURE = SECURE_SSL
CSRF_COOKIE_SECURE = SECURE_SSL
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'"
)

# Task queue: django-q2 on the ORM broker, or Redis when REDIS_URL is set.
REDIS_URL = envstr("REDIS_URL")
Q_CLUSTER = {
    "name": envstr("Q_CLUSTER_NAME", "controlpanel"),
    "workers": envint("Q_WORKERS", 2),
    # A task may run this long; retry must be longer or a slow task is handed out twice.
    "timeout": envint("Q_TIMEOUT", 1800),
    "retry": envint("Q_RETRY", 2100),
    "max_attempts": envint("Q_MAX_ATTEMPTS", 1),
    "save_limit": 250,
    "catch_up": False,
    "sync": envbool("Q_SYNC", False),
    "label": "Django Q2",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Pods on Docker.
DOCKER_HOST = envstr("DOCKER_HOST", "unix:///var/run/docker.sock")
DOCKER_TIMEOUT_SECONDS = envint("DOCKER_TIMEOUT_SECONDS", 60)
POD_IMAGE = envstr("POD_IMAGE", "pinacle-base:latest")
POD_ORPHAN_GRACE_MINUTES = envint("POD_ORPHAN_GRACE_MINUTES", 60)
# Seconds the size schedule may walk volumes on each host per run (hosts run at once).
POD_SIZE_BUDGET_SECONDS = envint("POD_SIZE_BUDGET_SECONDS", 20)
SNAPSHOT_RETENTION = envint("SNAPSHOT_RETENTION", 3)
# Retention by policy: the latest KEEP_LAST complete snapshots of each pod, plus the newest of
# each UTC day for the last KEEP_DAILY days and of each ISO week for the last KEEP_WEEKLY weeks
# (0: off). A pod's latest complete snapshot and held ones are never purged.
SNAPSHOT_KEEP_LAST = envint("SNAPSHOT_KEEP_LAST", 0)  # 0: SNAPSHOT_RETENTION
SNAPSHOT_KEEP_DAILY = envint("SNAPSHOT_KEEP_DAILY", 0)
SNAPSHOT_KEEP_WEEKLY = envint("SNAPSHOT_KEEP_WEEKLY", 0)
# Bytes the daily verification re-reads from the store per run (oldest-verified first).
VERIFY_BYTES_PER_RUN = envint("VERIFY_BYTES_PER_RUN", 10 * 1024**3)
# Restore drills on a schedule: each pod with a complete snapshot is drilled about every
# POD_DRILL_EVERY_DAYS days, one pod a turn, the one whose last drill is oldest (0 = off).
POD_DRILL_EVERY_DAYS = envfloat("POD_DRILL_EVERY_DAYS", 7)
# Idle pods: a running pod whose container used less than POD_IDLE_CPU_SECONDS of CPU over the
# last POD_IDLE_STOP_HOURS is stopped with a snapshot (0 = off; reconcile samples CPU only then).
POD_IDLE_STOP_HOURS = envfloat("POD_IDLE_STOP_HOURS", 0)
POD_IDLE_CPU_SECONDS = envfloat("POD_IDLE_CPU_SECONDS", 60.0)
# Dormant pods: stopped and not started for POD_DORMANT_DAYS (0 = off); deprovisioned (snapshots
# kept) POD_DORMANT_DEPROVISION_DAYS after that (0 = never), a day after a warning at the earliest.
POD_DORMANT_DAYS = envfloat("POD_DORMANT_DAYS", 0)
POD_DORMANT_DEPROVISION_DAYS = envfloat("POD_DORMANT_DEPROVISION_DAYS", 0)
# Backups of running pods: every POD_BACKUP_EVERY_HOURS (0 = off; a pod may say otherwise), at
# most POD_BACKUP_CONCURRENCY at once per Docker host (any entry point); POD_BACKUP_PAUSE pauses the container
# while its volumes stream (consistent, the pod frozen meanwhile) instead of crash-consistent.
POD_BACKUP_EVERY_HOURS = envfloat("POD_BACKUP_EVERY_HOURS", 24)
POD_BACKUP_CONCURRENCY = envint("POD_BACKUP_CONCURRENCY", 1)
POD_BACKUP_PAUSE = envbool("POD_BACKUP_PAUSE", False)
SNAPSHOT_STORE_URL = envstr("SNAPSHOT_STORE_URL", f"file://{VAR_DIR / 'snapshots'}")
# The repository key of a dedup+… store: a file, never the database (lose it, lose the snapshots).
SNAPSHOT_KEY_FILE = envstr("SNAPSHOT_KEY_FILE")
# A second key of the repository whose password is derived from SNAPSHOT_KEY_FILE's, opened by
# each restic in a millisecond instead of half a second (apps/pods/stores/restic_working.py).
SNAPSHOT_WORKING_KEY = envbool("SNAPSHOT_WORKING_KEY", True)
# How a dedup store copies a pod: `stream` (each volume's tar through the Docker API into
# restic) or `beside` (restic in a helper container next to the volumes, folders with a parent).
SNAPSHOT_ENGINE = envstr("SNAPSHOT_ENGINE", "beside")
if SNAPSHOT_ENGINE not in {"stream", "beside"}:
    raise ImproperlyConfigured(f"SNAPSHOT_ENGINE must be stream or beside, not {SNAPSHOT_ENGINE!r}")
# How long a dedup store command waits while another restic holds the repository (a prune).
SNAPSHOT_LOCK_WAIT_SECONDS = envint("SNAPSHOT_LOCK_WAIT_SECONDS", 300)
AWS_ENDPOINT_URL = envstr("AWS_ENDPOINT_URL")
AWS_REGION = envstr("AWS_REGION", envstr("AWS_DEFAULT_REGION", "us-east-1"))
# A store that does not answer within these is unreachable; botocore retries a request
# (connection errors, 5xx, throttling) until S3_MAX_ATTEMPTS attempts in all.
S3_CONNECT_TIMEOUT_SECONDS = envfloat("S3_CONNECT_TIMEOUT_SECONDS", 5.0)
S3_READ_TIMEOUT_SECONDS = envfloat("S3_READ_TIMEOUT_SECONDS", 120.0)
S3_MAX_ATTEMPTS = envint("S3_MAX_ATTEMPTS", 3)

# Mix jobs written by the mixing service.
MIX_MEDIA_DIR = Path(envstr("MIX_MEDIA_DIR", str(VAR_DIR / "mix" / "media")))
MIX_OUTPUTS_DIR = Path(envstr("MIX_OUTPUTS_DIR", str(VAR_DIR / "mix" / "outputs")))
JOB_TTL_HOURS = envint("JOB_TTL_HOURS", 48)
FAILED_JOB_TTL_HOURS = envint("FAILED_JOB_TTL_HOURS", 24)
STALLED_JOB_HOURS = envint("STALLED_JOB_HOURS", 6)

# Separation sessions on a volume.
SESSIONS_VOLUME_URL = envstr("SESSIONS_VOLUME_URL", f"local://{VAR_DIR / 'volumes' / 'music-split-jobs-data'}")
SESSIONS_VOLUME_MAX_BYTES = envint("SESSIONS_VOLUME_MAX_BYTES", 3 * 1000**3)
SESSIONS_API_TOKEN = envsecret("SESSIONS_API_TOKEN")
SESSIONS_POLICY_DOWNLOAD_LIMIT = envint("SESSIONS_POLICY_DOWNLOAD_LIMIT", 20)
SESSIONS_POLICY_DOWNLOAD_AGE_MINUTES = envint("SESSIONS_POLICY_DOWNLOAD_AGE_MINUTES", 60)
SESSIONS_POLICY_EXIT_LIMIT = envint("SESSIONS_POLICY_EXIT_LIMIT", 100)
SESSIONS_POLICY_EXIT_AGE_MINUTES = envint("SESSIONS_POLICY_EXIT_AGE_MINUTES", 120)

# Modal (the SDK itself reads MODAL_TOKEN_ID, MODAL_TOKEN_SECRET and MODAL_SERVER_URL).
MODAL_ENVIRONMENT = envstr("MODAL_ENVIRONMENT")

# Cost estimates, US$ per GB-month.
PRICE_MODAL_VOLUME_GB_MONTH = envfloat("PRICE_MODAL_VOLUME_GB_MONTH", 0.15)
PRICE_S3_GB_MONTH = envfloat("PRICE_S3_GB_MONTH", 0.023)
PRICE_LOCAL_GB_MONTH = envfloat("PRICE_LOCAL_GB_MONTH", 0.0)

# Notifications through Apprise (https://github.com/caronc/apprise/wiki): comma-separated
# URLs, or NOTIFY_URLS_FILE naming a file that holds them (they often carry tokens). Off when empty.
NOTIFY_URLS = [url.strip() for url in envsecret("NOTIFY_URLS").replace("\n", ",").split(",") if url.strip()]
NOTIFY_REPEAT_MINUTES = envint("NOTIFY_REPEAT_MINUTES", 60)
NOTIFY_LEAK_BYTES = envint("NOTIFY_LEAK_BYTES", 1024**3)
NOTIFY_TIMEOUT_SECONDS = envint("NOTIFY_TIMEOUT_SECONDS", 10)

# /healthz answers within this many seconds whatever hangs; a worker must have reported lately.
HEALTH_TIMEOUT_SECONDS = envfloat("HEALTH_TIMEOUT_SECONDS", 4.0)
HEALTH_WORKER_SECONDS = envint("HEALTH_WORKER_SECONDS", 120)
# /metrics (Prometheus text format) is on when METRICS_TOKEN is set; scrapers send it as Bearer.
METRICS_TOKEN = envsecret("METRICS_TOKEN")

# Operations: how often progress is written while bytes move.
OPERATION_PROGRESS_INTERVAL_SECONDS = envfloat("OPERATION_PROGRESS_INTERVAL_SECONDS", 1.0)

# LOG_FORMAT=json: one JSON object a line (with the operation's id and kind inside operations).
LOG_FORMAT = envstr("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"operation": {"()": "controlpanel.logs.OperationFilter"}},
    "formatters": {
        "plain": {
            "()": "controlpanel.logs.PlainFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        },
        "json": {"()": "controlpanel.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["operation"]},
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    # Apprise logs the URLs it sends to at debug level, and URLs can hold tokens.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "apprise": {"level": "WARNING"}},
}

# Cache: shared by web and workers (short-lived page data).
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# The overview's added-up figures live in the cache until a change drops them, at most this long.
OVERVIEW_CACHE_SECONDS = envint("OVERVIEW_CACHE_SECONDS", 30)

# Pods: seconds a pod's container gets to exit on stop before it is killed (added by pods).
POD_STOP_TIMEOUT_SECONDS = envint("POD_STOP_TIMEOUT_SECONDS", 10)
# Pods: command for a pod's container when its image has none (empty = the image's own).
POD_COMMAND = envstr("POD_COMMAND", "")

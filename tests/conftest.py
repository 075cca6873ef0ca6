import os
import uuid

import pytest

from tests import parts
from tests.browser import artifacts, browser, logged_in_page, page  # noqa: F401
from tests.fakes.modal_fixtures import _modal_servicer, modal_server  # noqa: F401
from tests.faults import bad_input, fault_point, harm  # noqa: F401

# Credentials for the local S3 and Modal servers only; never real ones.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(autouse=True)
def panel_paths(settings, tmp_path, monkeypatch):
    """Every test gets its own storage roots, so nothing lands in var/ or leaks between tests."""
    settings.VAR_DIR = tmp_path / "var"
    settings.VAR_DIR.mkdir()
    # A working key's password is kept in memory's folder (/dev/shm): a test's own, gone with it.
    monkeypatch.setattr("apps.pods.stores.restic_working.KEPT_IN", tmp_path)
    # Whether a copy runs restic must not hang on how long ago a test wrote its files: marks
    # count only where a test asks for them (tests/pods/test_volume_marks.py).
    monkeypatch.setattr("apps.pods.services.volume_marks.QUIET_SECONDS", 1e9)
    settings.SNAPSHOT_STORE_URL = f"file://{tmp_path / 'snapshots'}"
    settings.MIX_MEDIA_DIR = tmp_path / "mix" / "media"
    settings.MIX_OUTPUTS_DIR = tmp_path / "mix" / "outputs"
    settings.SESSIONS_VOLUME_URL = f"local://{tmp_path / 'volumes' / 'music-split-jobs-data'}"
    settings.OPERATION_PROGRESS_INTERVAL_SECONDS = 0
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    return tmp_path


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """The file cache is `var/cache` of the checkout, fixed when settings load, so every process
    testing there shared it: xdist workers' `cache.clear()` wiped each other's entries, and one
    read another's overview figures (same key: the same ids in each worker's database). One
    folder per test process."""
    from django.conf import settings
    from django.test.utils import override_settings

    caches = {name: dict(config) for name, config in settings.CACHES.items()}
    for config in caches.values():
        if config["BACKEND"].endswith("FileBasedCache"):
            config["LOCATION"] = str(tmp_path_factory.mktemp("cache"))
    with override_settings(CACHES=caches):
        yield


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashes():
    """Passwords hashed in microseconds in the test process (tests/fast_hasher.py)."""
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["tests.fast_hasher.FastPBKDF2PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def receiver(settings):
    """A real HTTP receiver on 127.0.0.1 that notifications go to (Apprise `json://`)."""
    from tests.fakes.http_receiver import Receiver

    server = Receiver()
    settings.NOTIFY_URLS = [server.apprise_url()]
    settings.NOTIFY_TIMEOUT_SECONDS = 5
    yield server
    server.close()


@pytest.fixture
def q_sync(monkeypatch):
    """Run enqueued django-q2 tasks inline (after commit) instead of waiting for a worker."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_superuser(username="root", password="pw-root-123!")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def viewer_user(django_user_model, db):
    from django.contrib.auth.models import Group

    from apps.audit.roles import VIEWER_GROUP, roles_sync

    roles_sync()
    user = django_user_model.objects.create_user(username="viewer", password="pw-viewer-123!", is_staff=True)
    user.groups.add(Group.objects.get(name=VIEWER_GROUP))
    return user


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


@pytest.fixture(scope="session")
def docker_client():
    return parts.docker_client()


@pytest.fixture(scope="session")
def pod_image(docker_client):
    return parts.ensure_base_image(docker_client)


S3_SERVERS = {"moto": parts.S3Server, "seaweedfs": parts.SeaweedFSServer}
# Which S3 servers the S3 tests run on, e.g. `TEST_S3_SERVERS=seaweedfs` to try one alone.
S3_SERVERS_USED = os.environ.get("TEST_S3_SERVERS", "moto,seaweedfs").split(",")
# Tests of what S3 itself decides (snapshots, retention, fault proxy, cross-check) run on every
# server; the rest (pages, CLI, bad input that only need *an* S3) on SeaweedFS alone, the
# real server, to keep the suite's time.
EVERY_S3_SERVER = {
    "tests/pods/test_faults.py",
    "tests/pods/test_lifecycle.py",
    "tests/pods/test_snapshot_parts.py",
    "tests/pods/test_housekeeping.py",
    "tests/pods/test_verify.py",
    "tests/reliability/test_s3_faults.py",
    "tests/volumes/test_crosscheck.py",
    "tests/test_parts.py",
}


# Under pytest-xdist each test file goes whole to one worker, in collection order, as workers
# come free: a slow file dealt last keeps one worker busy while the others sit idle. These
# (the slowest files of a full run, slowest first, by the sum of their tests' durations;
# docs/development.md) are dealt first.
SLOW_FILES_FIRST = [
    "tests/reliability/test_s3_faults.py",
    "tests/reliability/test_killed_workers.py",
    "tests/pods/test_snapshot_readback.py",
    "tests/e2e/test_layout.py",
    "tests/reliability/test_bad_input.py",
    "tests/pods/test_snapshot_dedup.py",
    "tests/e2e/test_details_walk.py",
    "tests/pods/test_snapshot_files.py",
    "tests/pods/test_backup.py",
    "tests/pods/test_snapshot_beside.py",
    "tests/pods/test_faults.py",
    "tests/reliability/test_heartbeat.py",
    "tests/e2e/test_snapshot_files.py",
    "tests/e2e/test_roles.py",
    "tests/pods/test_restore_replace.py",
    "tests/reliability/test_docker_hosts.py",
    "tests/e2e/test_any_hour_any_file.py",
    "tests/e2e/test_journey.py",
    "tests/dashboard/test_production.py",
    "tests/pods/test_restore_path.py",
    "tests/scaleout/test_health_and_metrics.py",
    "tests/pods/test_lifecycle.py",
    "tests/scaleout/test_two_workers.py",
    "tests/reliability/test_killed_restic.py",
    "tests/pods/test_idle_dormancy.py",
    "tests/pods/test_snapshot_compare.py",
    "tests/volumes/test_crosscheck.py",
    "tests/pods/test_drill.py",
    "tests/pods/test_reconcile_sizes.py",
    "tests/pods/test_cli.py",
]


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):
        return  # one process: the usual order
    rank = {path: n for n, path in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_generate_tests(metafunc):
    if "s3_server" not in metafunc.fixturenames:
        return
    path = metafunc.definition.path.relative_to(metafunc.config.rootpath).as_posix()
    servers = S3_SERVERS_USED if path in EVERY_S3_SERVER else S3_SERVERS_USED[-1:]
    metafunc.parametrize("s3_server", servers, indirect=True, scope="session")


@pytest.fixture(scope="session")
def s3_server(request):
    """An S3 server over real HTTP on 127.0.0.1: moto's, or SeaweedFS (whose multipart ETags,
    errors and timing are a real server's, not an emulator's); see EVERY_S3_SERVER."""
    server = S3_SERVERS[request.param]()
    server.start()
    yield server
    server.stop()
    if hasattr(server, "close"):
        server.close()


@pytest.fixture
def s3_bucket(s3_server, settings):
    """A fresh bucket on the local S3 server, with AWS_ENDPOINT_URL pointing at it."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    settings.AWS_ENDPOINT_URL = s3_server.endpoint_url
    return name


@pytest.fixture(scope="session")
def postgres_url():
    return parts.postgres_url()


@pytest.fixture(scope="session")
def redis_url():
    return parts.redis_url()


def pytest_sessionfinish(session):
    """The run's safety net: a test that failed before its teardown (or whose teardown failed)
    leaves pod containers and volumes; those named with this run's tag go now. Under xdist only
    the controller sweeps, after every worker is done; another run's objects are never touched."""
    if hasattr(session.config, "workerinput") or str(os.getpid()) != parts.RUN_OWNER:
        return
    client = parts.docker_client_or_none()
    if client is None:
        return
    removed = parts.docker_leftovers_remove(client)
    if removed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = f"removed {len(removed)} Docker objects tests left behind: {', '.join(removed[:10])}"
        if reporter is not None:
            reporter.write_line(message, yellow=True)

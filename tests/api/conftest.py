import pytest

from apps.api.services import apitoken_create
from apps.pods.models import DockerHost, Pod

# The real-pod fixtures (uuid pod ids removed afterwards, the shared test image).
from tests.pods.conftest import new_pod_id, pods_settings  # noqa: F401


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def operator_token(db) -> str:
    return apitoken_create(name="ci-deploy", group="operator", actor="test")[1]


@pytest.fixture
def viewer_token(db) -> str:
    return apitoken_create(name="dash-reader", group="viewer", actor="test")[1]


def pod_row(pod_id: str, status: str = Pod.Status.RUNNING) -> Pod:
    """A pod known only to the database: enough for refusals, which never reach Docker."""
    host = DockerHost.objects.get_or_create(name="local", defaults={"base_url": "unix:///var/run/docker.sock"})[0]
    return Pod.objects.create(pod_id=pod_id, host=host, image="img", status=status)

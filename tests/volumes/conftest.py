import pytest

from tests.volumes.helpers import LocalWorld, ModalWorld


@pytest.fixture
def local_world(tmp_path):
    return LocalWorld(tmp_path / "volumes" / "brain-go-brr-results")


@pytest.fixture(params=["local", "modal"])
def world(request, tmp_path):
    """The same tree on a local folder and on a Modal Volume served by the local servicer."""
    if request.param == "local":
        return LocalWorld(tmp_path / "volumes" / "brain-go-brr-results")
    return ModalWorld(request.getfixturevalue("modal_server"))


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks):
    """Queued tasks run when the view's transaction commits (with q_sync: inline)."""
    return django_capture_on_commit_callbacks

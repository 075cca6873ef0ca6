"""pytest fixtures for the local Modal servicer.

`modal_server` gives each test an empty servicer with the SDK pointed at it:
MODAL_SERVER_URL, MODAL_TOKEN_ID and MODAL_TOKEN_SECRET are set (fake values) and the
SDK's cached client is dropped before and after, so no test reuses another's
connection. Use `modal_server.put_file(...)`, `.commits(...)`, `.removals(...)`,
`.stop()`/`.start()` for outages and `.fail_next(method)` for one injected error.
"""

import pytest

from tests.fakes.modal_servicer import FakeModalServer


def modal_client_reset() -> None:
    """Forget the SDK's process-wide client, so the next call reads the env again."""
    from modal.client import _Client

    _Client._client_from_env = None


@pytest.fixture(scope="session")
def _modal_servicer():
    server = FakeModalServer().start()
    yield server
    server.close()


@pytest.fixture
def modal_server(_modal_servicer, monkeypatch):
    server = _modal_servicer
    if server._grpc is None:  # a previous test left it stopped
        server.start()
    server.reset()
    monkeypatch.setenv("MODAL_SERVER_URL", server.url)
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-fake-test")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-fake-test")
    monkeypatch.delenv("MODAL_IS_REMOTE", raising=False)
    monkeypatch.delenv("MODAL_PROFILE", raising=False)
    # A real ~/.modal.toml must never be read by the tests.
    monkeypatch.setenv("MODAL_CONFIG_PATH", "/nonexistent/modal.toml")
    modal_client_reset()
    yield server
    modal_client_reset()
    if server._grpc is None:
        server.start()

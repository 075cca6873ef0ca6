"""The OpenAPI document is generated from the code and valid; its page needs no CDN and no
inline script; only token requests skip CSRF."""

import re

import pytest
from openapi_spec_validator import validate

from apps.audit.models import Operation
from apps.pods.actions import PAGE_ACTIONS
from tests.api.conftest import bearer, pod_row

pytestmark = pytest.mark.django_db


def test_the_openapi_document_validates_and_lists_every_action(client, viewer_token):
    response = client.get("/api/openapi.json", **bearer(viewer_token))
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path in ("/api/pods", "/api/pods/{pod_id}", "/api/operations/{operation_id}", "/api/holds"):
        assert "get" in paths[path]
    for path in ("/api/pods/{pod_id}/{action}", "/api/mixjobs/cleanup", "/api/volumes/{name}/inspect"):
        assert "202" in paths[path]["post"]["responses"]
    action = next(p for p in paths["/api/pods/{pod_id}/{action}"]["post"]["parameters"] if p["name"] == "action")
    assert set(action["schema"]["enum"]) == {action.name for action in PAGE_ACTIONS}
    assert document["components"]["securitySchemes"]["TokenAuth"] == {"type": "http", "scheme": "bearer"}
    assert paths["/api/pods"]["get"]["security"] == [{"TokenAuth": []}, {"StaffSession": []}]


def test_the_document_needs_a_token_or_a_staff_session(client, staff_client):
    staff_client.logout()
    assert client.get("/api/openapi.json").status_code == 401
    assert client.get("/api/openapi.json").json() == {"error": "missing, wrong or revoked API token"}


def test_the_browsable_page_renders_from_local_files_without_inline_script(client, staff_client):
    response = staff_client.get("/api/docs")
    assert response.status_code == 200
    page = response.content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts
    for attributes, body in scripts:
        # A script either loads from this panel or is data (JSON) the page's own script reads.
        assert 'src="/static/' in attributes or 'type="application/json"' in attributes, attributes
        if "src=" in attributes:
            assert not body.strip()
    assert "/api/openapi.json" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "nothing may load from another site"
    for asset in re.findall(r"(?:src|href)=\"(/static/[^\"]+)\"", page):
        assert staff_client.get(asset).status_code == 200, asset
    assert "script-src 'self'" in response["Content-Security-Policy"]

    staff_client.logout()
    assert client.get("/api/docs").status_code == 302  # a page: to the login


def test_a_session_post_without_csrf_token_is_refused(client, staff_user):
    pod_row("csrfpod")
    client.force_login(staff_user)
    client.handler.enforce_csrf_checks = True
    response = client.post("/api/pods/csrfpod/stop")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    assert not Operation.objects.exists()
    # Reads need no CSRF token: the browsable page's GETs work with the session alone.
    assert client.get("/api/pods/csrfpod").json()["pod_id"] == "csrfpod"
    # The page sends the token it was given, as every form of the panel does: then it works.
    client.get("/api/docs")
    sent = client.post("/api/pods/csrfpod/stop", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)
    assert sent.status_code == 202
    assert Operation.objects.get().actor_name == "root"


def test_a_token_post_needs_no_csrf_token(client, operator_token, django_capture_on_commit_callbacks):
    pod_row("tokenpod")
    client.handler.enforce_csrf_checks = True
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/api/pods/tokenpod/deprovision", **bearer(operator_token))
    assert response.status_code == 202
    assert Operation.objects.get(pk=response.json()["operation"]).actor_name == "api:ci-deploy"

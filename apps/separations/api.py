"""The separation service's three cleanups, answered as JSON. `apps/api` serves them (and
describes them in the OpenAPI document) at the paths they always had:

    POST /api/sessions/cleanup-on-download
    POST /api/sessions/cleanup-on-exit
    POST /api/sessions/<session_id>/cleanup
    → {"deleted": [...], "bytes_reclaimed": N, "commits": N}
      (+ "skipped": ["<id>: <reason>", ...] when a session could not be read or removed)

The service authenticates with SESSIONS_API_TOKEN (bearer, constant-time comparison); an
API token with the cleanup permission works too. 401 wrong or missing token (also when no
token is configured: the API is off); refusals follow `controlpanel.errors.http_status`: 400
bad id, 404 unknown session, 409 another batch holds the volume (or any other refusal), 503
the volume is unreachable. Each call runs one `sessions.cleanup` operation inline
(`run_now`). The token is never logged or echoed.
"""

import hmac

from django.conf import settings
from django.http import JsonResponse

from apps.audit.names import Kind
from apps.audit.operations import run_now
from apps.audit.services import Actor
from controlpanel.errors import PanelError, http_status
from controlpanel.paths import validate_id

API_ACTOR = "api:separation-service"


def service_authorized(request) -> bool:
    """Whether the request carries the separation service's own token."""
    expected = settings.SESSIONS_API_TOKEN or ""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def unauthorized() -> JsonResponse:
    response = _error("missing or wrong bearer token", 401)
    response["WWW-Authenticate"] = 'Bearer realm="sessions"'
    return response


def cleanup_answer(*, policy: str, session_ids: list[str] = (), actor: Actor = API_ACTOR) -> JsonResponse:
    """Run one cleanup batch for an authenticated caller and answer what it did."""
    try:
        # The id is checked first, whatever else is wrong: `..` (even sent as %2E%2E) is a
        # bad request, never looked up as a session.
        for session_id in session_ids:
            validate_id(session_id, kind="session id")
        result = run_now(Kind.SESSIONS_CLEANUP, actor=actor, policy=policy, session_ids=list(session_ids)).result
    except PanelError as exc:
        return _error(str(exc), http_status(exc))
    answer = {"deleted": result["deleted"], "bytes_reclaimed": result["bytes_reclaimed"], "commits": result["commits"]}
    if result.get("skipped"):
        # Sessions that could not be read or removed, each with its reason; the rest went on.
        answer["skipped"] = result["skipped"]
    if result.get("on_hold"):
        answer["on_hold"] = result["on_hold"]  # due, but a person put them on hold
    return JsonResponse(answer)

"""JSON API for the separation service: bearer token, constant-time comparison.

    POST /api/sessions/cleanup-on-download
    POST /api/sessions/cleanup-on-exit
    POST /api/sessions/<session_id>/cleanup
    → {"deleted": [...], "bytes_reclaimed": N, "commits": N}
      (+ "skipped": ["<id>: <reason>", ...] when a session could not be read or removed)

401 wrong or missing token (also when no token is configured: the API is off); refusals
follow `controlpanel.errors.http_status`: 400 bad id, 404 unknown session, 409 another batch
holds the volume (or any other refusal), 503 the volume is unreachable. Each call runs one
`sessions.cleanup` operation inline (`run_now`). The token is never logged or echoed.
"""

import hmac
import logging

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.audit.names import Kind
from apps.audit.operations import run_now
from controlpanel.errors import PanelError, http_status
from controlpanel.paths import validate_id

logger = logging.getLogger(__name__)

API_ACTOR = "api:separation-service"


def _authorized(request) -> bool:
    expected = settings.SESSIONS_API_TOKEN or ""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not expected or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())


def _error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _run(request, *, policy: str, session_ids: list[str] = ()) -> JsonResponse:
    if not _authorized(request):
        response = _error("missing or wrong bearer token", 401)
        response["WWW-Authenticate"] = 'Bearer realm="sessions"'
        return response
    try:
        # The id is checked first, whatever else is wrong: `..` (even sent as %2E%2E) is a
        # bad request, never looked up as a session.
        for session_id in session_ids:
            validate_id(session_id, kind="session id")
        result = run_now(Kind.SESSIONS_CLEANUP, actor=API_ACTOR, policy=policy, session_ids=list(session_ids)).result
    except PanelError as exc:
        return _error(str(exc), http_status(exc))
    answer = {"deleted": result["deleted"], "bytes_reclaimed": result["bytes_reclaimed"], "commits": result["commits"]}
    if result.get("skipped"):
        # Sessions that could not be read or removed, each with its reason; the rest went on.
        answer["skipped"] = result["skipped"]
    if result.get("on_hold"):
        answer["on_hold"] = result["on_hold"]  # due, but a person put them on hold
    return JsonResponse(answer)


# The separation service is not a browser session: it authenticates with its token, so
# the login redirect and CSRF (cookie-based) do not apply to these three views.
@login_not_required
@csrf_exempt
@require_POST
def cleanup_on_download(request):
    return _run(request, policy="download")


@login_not_required
@csrf_exempt
@require_POST
def cleanup_on_exit(request):
    return _run(request, policy="exit")


@login_not_required
@csrf_exempt
@require_POST
def cleanup_session(request, session_id: str):
    return _run(request, policy="manual", session_ids=[session_id])

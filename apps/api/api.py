"""The panel's API for scripts and pipelines (django-ninja; `/api/openapi.json`, `/api/docs`).

Every action is the declared kind it names, asked for with `operations.request` as the page
does: the answer is 202 `{"operation": id}`, then `GET /api/operations/{id}` until it ends.
A refusal is the panel's own sentence, `{"error": "..."}`, with the status every page uses
(`controlpanel.errors.http_status`). The separation service's three cleanups keep their
paths and answers (`apps/separations/api.py` makes them).
"""

from django.core.paginator import Paginator
from ninja import NinjaAPI, Query, Schema, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError

from apps.api import schemas
from apps.api.auth import AUTH, SESSIONS_AUTH, SessionsServiceRefused, token_or_staff, unauthorized
from apps.audit import operations
from apps.audit.holds import hold_release, hold_set, holds_active
from apps.audit.models import Operation
from apps.audit.names import Kind
from apps.pods.actions import PAGE_ACTIONS, POD_ACTIONS
from apps.pods.selectors import pod_as_dict, pods_with_totals
from apps.pods.services import pod_get
from apps.separations import api as separations_api
from controlpanel.errors import Forbidden, NotFound, PanelError, http_status

api = NinjaAPI(
    title="Storage control panel",
    version="1",
    description=(
        "Send `Authorization: Bearer <token>` (`manage.py apitoken create NAME --group operator|viewer`). "
        "Actions answer 202 with an operation id; follow it at `/api/operations/{id}`. "
        'Refusals answer `{"error": "<one sentence>"}`.'
    ),
    auth=AUTH,
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
    docs_decorator=token_or_staff,
)

ERRORS = {400: schemas.Error, 401: schemas.Error, 403: schemas.Error, 404: schemas.Error, 409: schemas.Error}


def _error(request, message: str, status: int):
    return api.create_response(request, {"error": message}, status=status)


@api.exception_handler(PanelError)
def _refused(request, exc: PanelError):
    return _error(request, str(exc), http_status(exc))


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return unauthorized()


@api.exception_handler(SessionsServiceRefused)
def _sessions_unauthorized(request, exc):
    return separations_api.unauthorized()


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    message = str(exc)
    if exc.status_code == 403 and "CSRF" in message:
        message = "CSRF token missing or wrong: a browser session must send it (a script sends a bearer token)"
    return _error(request, message, exc.status_code)


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    # A bad id or body is a 400 with one sentence, as everywhere in the panel (not ninja's 422).
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "payload"))
    return _error(request, f"{where or 'request'}: {first.get('msg', 'invalid')}", 400)


def _require(request, permission: str, what: str) -> None:
    """Reads need the role's view permission; actions are checked by their kind."""
    if not request.auth.has_perm(permission):
        raise Forbidden(f"{request.auth.get_username()} may not {what} (needs {permission})")


def _queued(operation: Operation):
    return Status(202, {"operation": operation.pk})


# --- operations --------------------------------------------------------------------------


def operation_out(operation: Operation) -> dict:
    try:
        label = operations.kind_get(operation.kind).label
    except PanelError:
        label = operation.kind
    return {
        "id": operation.pk,
        "kind": operation.kind,
        "label": label,
        "target_type": operation.target_type,
        "target_id": operation.target_id,
        "actor": operation.actor_name,
        "status": operation.status,
        "progress": {
            "done": operation.progress_done,
            "total": operation.progress_total,
            "unit": operation.progress_unit,
            "percent": operation.percent,
        },
        "sentence": operations.sentence(operation),
        "created_at": operation.created_at,
        "started_at": operation.started_at,
        "finished_at": operation.finished_at,
        "result": operation.result or {},
    }


@api.get("/operations/{operation_id}", response={200: schemas.OperationOut, **ERRORS}, tags=["operations"])
def operation_show(request, operation_id: int):
    """Where an operation is: status, progress and the sentence it ends with."""
    _require(request, "audit.view_operation", "read operations")
    operation = Operation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise NotFound(f"operation #{operation_id} does not exist")
    return operation_out(operation)


# --- pods --------------------------------------------------------------------------------


class Page(Schema):
    page: int = 1


@api.get("/pods", response={200: list[schemas.PodSummary], **ERRORS}, tags=["pods"])
def pods_list(request, paging: Query[Page]):
    """Pods by id, 100 a page (`?page=2`), with the bytes their volumes hold and their latest snapshot."""
    _require(request, "pods.view_pod", "read pods")
    page = Paginator(pods_with_totals(), 100).get_page(paging.page)
    return [
        {
            "pod_id": pod.pod_id,
            "status": pod.status,
            "host": pod.host.name,
            "volume_bytes": pod.volume_bytes,
            "last_snapshot_id": pod.last_snapshot_id,
            "last_snapshot_status": pod.last_snapshot_status,
            "last_snapshot_bytes": pod.last_snapshot_bytes,
            "last_snapshot_at": pod.last_snapshot_at,
        }
        for pod in page
    ]


@api.get("/pods/{pod_id}", response={200: dict, **ERRORS}, tags=["pods"])
def pod_show(request, pod_id: str):
    """One pod as `manage.py pods show --json` prints it, plus the actions this token may take now."""
    _require(request, "pods.view_pod", "read pods")
    pod = pod_get(pod_id=pod_id)
    shown = pod_as_dict(pod)
    shown["actions"] = [
        action.name for action in PAGE_ACTIONS if action.allowed(pod) and operations.user_may(request.auth, action.kind)
    ]
    return shown


@api.post("/pods/{pod_id}/backup", response={202: schemas.Queued, **ERRORS}, tags=["pods"])
def pod_backup(request, pod_id: str):
    """Back up a running pod now, without stopping it (removes nothing); refused unless it is running and idle."""
    return _queued(operations.request(Kind.POD_BACKUP, pod_id, actor=request.auth))


@api.post("/pods/{pod_id}/{action}", response={202: schemas.Queued, **ERRORS}, tags=["pods"])
def pod_act(request, pod_id: str, action: schemas.PodActionName):
    """Queue one of a pod's actions, exactly as its page's button does (same checks, same refusals)."""
    return _queued(operations.request(POD_ACTIONS[action.value].kind, pod_id, actor=request.auth))


# --- mix jobs, volumes -------------------------------------------------------------------


@api.post("/mixjobs/cleanup", response={202: schemas.Queued, **ERRORS}, tags=["mix jobs"])
def mixjobs_cleanup(request):
    """Delete every expired mix job (complete 48 h, failed 24 h), as the hourly schedule does."""
    return _queued(operations.request(Kind.MIXJOBS_CLEANUP, actor=request.auth))


@api.post("/mixjobs/sessions/{session_id}/cleanup", response={202: schemas.Queued, **ERRORS}, tags=["mix jobs"])
def mixjobs_cleanup_session(request, session_id: str):
    """Delete one session's expired mix jobs (refused while the session is on hold)."""
    return _queued(operations.request(Kind.MIXJOBS_CLEANUP_SESSION, session_id, actor=request.auth))


@api.post("/volumes/{name}/inspect", response={202: schemas.Queued, **ERRORS}, tags=["volumes"])
def volume_inspect(request, name: str):
    """Inspect a registered volume; the operation's `result` holds sizes, counts and rule findings."""
    return _queued(operations.request(Kind.VOLUME_INSPECT, name, actor=request.auth))


# --- the separation service's cleanups: paths and answers as they always were ------------

SESSIONS_ANSWERS = {200: dict, **ERRORS, 503: schemas.Error}
SESSIONS_URL_NAMES = {"sessions-cleanup-on-download", "sessions-cleanup-on-exit", "sessions-cleanup-session"}


@api.post(
    "/sessions/cleanup-on-download",
    auth=SESSIONS_AUTH,
    response=SESSIONS_ANSWERS,
    tags=["sessions"],
    url_name="sessions-cleanup-on-download",
)
def sessions_cleanup_on_download(request):
    """The download policy's batch (by default up to 20 oldest sessions older than 1 h), run
    before answering `{"deleted": [...], "bytes_reclaimed": N, "commits": N}`."""
    return separations_api.cleanup_answer(policy="download", actor=request.auth)


@api.post(
    "/sessions/cleanup-on-exit",
    auth=SESSIONS_AUTH,
    response=SESSIONS_ANSWERS,
    tags=["sessions"],
    url_name="sessions-cleanup-on-exit",
)
def sessions_cleanup_on_exit(request):
    """The window-close policy's batch (by default up to 100 oldest sessions older than 2 h)."""
    return separations_api.cleanup_answer(policy="exit", actor=request.auth)


@api.post(
    "/sessions/{session_id}/cleanup",
    auth=SESSIONS_AUTH,
    response=SESSIONS_ANSWERS,
    tags=["sessions"],
    url_name="sessions-cleanup-session",
)
def sessions_cleanup_session(request, session_id: str):
    """One session now, whatever its age (refused while it is on hold)."""
    return separations_api.cleanup_answer(policy="manual", session_ids=[session_id], actor=request.auth)


# --- holds -------------------------------------------------------------------------------


def hold_out(hold) -> dict:
    fields = ("target_type", "target_id", "reason", "held_by", "created_at", "until", "released_at", "released_by")
    return {name: getattr(hold, name) for name in fields}


@api.get("/holds", response={200: list[schemas.HoldOut], **ERRORS}, tags=["holds"])
def holds_list(request):
    """What is on hold now."""
    _require(request, "audit.view_hold", "read holds")
    return [hold_out(hold) for hold in holds_active().order_by("target_type", "target_id")]


@api.post("/holds", response={201: schemas.HoldOut, **ERRORS}, tags=["holds"])
def hold_create(request, body: schemas.HoldIn):
    """Put something on hold: no deletion touches it until the hold is released or ends."""
    _require(request, "audit.hold_storage", "set holds")
    hold = hold_set(
        target_type=body.target_type.value,
        target_id=body.target_id,
        reason=body.reason,
        until=body.until,
        actor=request.auth,
    )
    return Status(201, hold_out(hold))


@api.post("/holds/release", response={200: schemas.HoldOut, **ERRORS}, tags=["holds"])
def hold_remove(request, body: schemas.HoldRef):
    """Release a hold; it stays in the history."""
    _require(request, "audit.hold_storage", "release holds")
    return hold_out(hold_release(target_type=body.target_type.value, target_id=body.target_id, actor=request.auth))

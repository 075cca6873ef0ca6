"""Who a request to the API is: a token's service user (no CSRF: a script sends no cookie a
forger could ride on) or a staff member's browser session (CSRF checked, as on every page)."""

from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.http import require_safe
from ninja.security import APIKeyCookie, HttpBearer

from apps.api.services import apitoken_authenticate
from apps.separations import api as separations_api

UNAUTHORIZED = "missing, wrong or revoked API token"


class _Bearer(HttpBearer):
    """`Authorization: Bearer <token>`, read without ever logging the header (ninja's own
    reader logs a header of another scheme, a token sent as `Basic` included, under DEBUG)."""

    def __call__(self, request):
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        return self.authenticate(request, given.strip())


class TokenAuth(_Bearer):
    def authenticate(self, request, token: str):
        api_token = apitoken_authenticate(secret=token.strip())
        if api_token is None:
            return None
        request.api_token = api_token
        return api_token.user


def _staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class StaffSession(APIKeyCookie):
    """A staff member's session (the browsable page's requests). Without one, nothing is
    checked here, so a request with no token at all is a 401, not a CSRF 403."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request):
        if not _staff(getattr(request, "user", None)):
            return None
        return super()._get_key(request)  # refuses (403) a POST without the CSRF token

    def authenticate(self, request, key):
        return request.user if key and _staff(request.user) else None


class SessionsServiceRefused(Exception):
    """The separation service's endpoints answer a refused token as they always have."""


class SessionsServiceToken(_Bearer):
    """SESSIONS_API_TOKEN, the separation service's own token; it acts as `api:separation-service`."""

    def __call__(self, request):
        if separations_api.service_authorized(request):
            return separations_api.API_ACTOR
        # Last of its list: nothing else may still accept the request.
        raise SessionsServiceRefused

    def authenticate(self, request, token: str):  # pragma: no cover - __call__ decides
        return None


AUTH = [TokenAuth(), StaffSession()]
# The separation service's token, or an API token whose role may clean up sessions.
SESSIONS_AUTH = [TokenAuth(), SessionsServiceToken()]


def unauthorized() -> JsonResponse:
    response = JsonResponse({"error": UNAUTHORIZED}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def token_or_staff(view):
    """The OpenAPI document and its page: read-only, for a token or a staff session, like the API."""

    @require_safe
    @wraps(view)
    def checked(request, *args, **kwargs):
        if _staff(getattr(request, "user", None)):
            return view(request, *args, **kwargs)
        if TokenAuth()(request) is None:
            return unauthorized()
        return view(request, *args, **kwargs)

    return checked

import logging

from django.conf import settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseBadRequest
from django.urls import Resolver404, get_resolver, resolve

logger = logging.getLogger("controlpanel.not_found")


class StaffRequiredMiddleware:
    """Every page is for staff; LoginRequiredMiddleware has already sent anonymous users to log in.

    Views marked `login_not_required` (login page, token-authenticated API) are left alone.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        if not getattr(view_func, "login_required", True):
            return
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not user.is_staff:
            raise PermissionDenied("This control panel is for staff accounts only.")
        return


class ContentSecurityPolicyMiddleware:
    """Pages carry no inline script or style, so a strict policy costs nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class AdminActionIdsMiddleware:
    """An admin action names its rows by primary key in the POST. Django's admin filters on
    them as sent and fails with a 500 on one that cannot be a key (`../etc`, NUL, too big), or
    reads a look-alike (`１`) as another row's key; such a request is refused here with a 400."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        model_admin = getattr(view_func, "model_admin", None)
        if model_admin is None or request.method != "POST" or "action" not in request.POST:
            return None
        pk = model_admin.model._meta.pk
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                # Converts and checks the range the database can hold, as a form field would;
                # a key written another way (`１` for 1, ` 1`, `01`) stands for no row.
                if "\x00" in value or str(pk.clean(value, None)) != value:
                    raise ValidationError("not a key")
            except ValidationError:
                return HttpResponseBadRequest("The action names rows that cannot exist; nothing was done.")
        return None


class NulBytesMiddleware:
    """A NUL byte is never part of an id or a filter, and PostgreSQL refuses it in any text it
    is sent (a 500 from every list filter, admin search or id in a path that passes it on);
    a URL that carries one is refused here with a 400, on every page and database alike."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        in_query = any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists())
        if "\x00" in request.path_info or in_query:
            return HttpResponseBadRequest("A NUL byte is not accepted in a URL.")
        return self.get_response(request)


class NotFoundPageMiddleware:
    """With DEBUG on, an unknown URL still gets the panel's own 404 page (the one production
    shows), not Django's URL list: the detail a developer wants goes to the log instead."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.DEBUG and not self._resolves(request.path_info, request):
            return self._not_found(request, f"no URL pattern matches {request.path_info!r}")
        return self.get_response(request)

    def process_exception(self, request, exception):
        if settings.DEBUG and isinstance(exception, Http404):
            return self._not_found(request, str(exception) or "not found")
        return None

    @staticmethod
    def _resolves(path: str, request) -> bool:
        urlconf = getattr(request, "urlconf", None)
        candidates = [path]
        # CommonMiddleware answers `/pods` with a redirect to `/pods/`; leave that to it.
        if settings.APPEND_SLASH and not path.endswith("/"):
            candidates.append(f"{path}/")
        for candidate in candidates:
            try:
                resolve(candidate, urlconf)
            except Resolver404:
                continue
            return True
        return False

    @staticmethod
    def _not_found(request, detail: str):
        logger.info("404 %s %s: %s", request.method, request.path, detail)
        handler = get_resolver(getattr(request, "urlconf", None)).resolve_error_handler(404)
        return handler(request, Http404(detail))

from django.conf import settings
from django.http import HttpResponseForbidden


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
            return None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not user.is_staff:
            return HttpResponseForbidden("This control panel is for staff accounts only.")
        return None


class ContentSecurityPolicyMiddleware:
    """Pages carry no inline script or style, so a strict policy costs nothing."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response

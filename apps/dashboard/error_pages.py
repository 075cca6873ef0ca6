"""The panel's own 403, 404 and 500 pages, with its navigation (controlpanel/urls.py names
them as Django's handlers).

A refusal is an expected answer, not a fault: it is logged as one line saying who was
refused what, never with a traceback. With DEBUG on, Django still shows its own debug page
for a 500 (the traceback is what a developer needs there); a 403 and a 404 are the panel's
pages in both modes (controlpanel.middleware.NotFoundPageMiddleware logs the 404's detail).
"""

import logging

from django.http import HttpResponseServerError
from django.shortcuts import render
from django.template import loader
from django.views.decorators.csrf import requires_csrf_token

logger = logging.getLogger("controlpanel.refused")


@requires_csrf_token
def permission_denied(request, exception=None):
    reason = str(exception or "")
    user = getattr(request, "user", None)
    who = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    logger.warning("refused %s %s for %s%s", request.method, request.path, who, f": {reason}" if reason else "")
    response = render(request, "403.html", {"reason": reason}, status=403)
    # Django logs a refused request again, with the PermissionDenied traceback, unless the
    # response says it has been logged already: the line above is the one line.
    response._has_been_logged = True
    return response


@requires_csrf_token
def page_not_found(request, exception=None):
    return render(request, "404.html", {"request_path": request.path}, status=404)


def server_error(request):
    # Rendered without the request's context: the fault may be the database that the user,
    # session and message lookups would read.
    return HttpResponseServerError(loader.render_to_string("500.html"))

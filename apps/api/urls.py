from django.contrib.auth.decorators import login_not_required
from django.views.decorators.http import require_POST

from apps.api.api import SESSIONS_URL_NAMES, api

urlpatterns = api.urls[0]
# ninja reverses its own views (the document's URL, the page's) under its namespace.
app_name = api.urls_namespace

for pattern in urlpatterns:
    if pattern.name in SESSIONS_URL_NAMES:
        # The separation service's endpoints answered a GET with Django's bare 405 before
        # they moved here; they still do (ninja's says "Method not allowed").
        pattern.callback = require_POST(pattern.callback)
    # A script has no session to log in with: every route answers 401 JSON itself
    # (`apps/api/auth.py`) instead of the login redirect. The browsable page stays a staff
    # page, and so does ninja's root (a 404 naming the page) for anyone not signed in.
    if pattern.name not in {"openapi-view", "api-root"}:
        login_not_required(pattern.callback)

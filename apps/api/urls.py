from django.contrib.auth.decorators import login_not_required

from apps.api.api import api

urlpatterns = api.urls[0]
# ninja reverses its own views (the document's URL, the page's) under its namespace.
app_name = api.urls_namespace

# A script has no session to log in with: every route answers 401 JSON itself
# (`apps/api/auth.py`) instead of the login redirect. The browsable page stays a staff page,
# and so does ninja's root (a 404 naming the page) for anyone not signed in.
for pattern in urlpatterns:
    if pattern.name not in {"openapi-view", "api-root"}:
        login_not_required(pattern.callback)

"""Walk the whole URL conf so a new URL cannot slip through without login, permission and CSRF.

For every URL of the panel (the Django admin has its own tests upstream):
- anonymous visitors are sent to log in (token APIs answer 401 instead);
- a read-only viewer's POST is refused (403, 404 or 405) and changes nothing;
- a staff POST without a CSRF token is refused;
- GET never changes state, also with hostile ids (`..`, NUL, very long, look-alikes).
"""

from urllib.parse import quote

import pytest
from django.apps import apps
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver, reverse

pytestmark = pytest.mark.django_db

HOSTILE_IDS = ["..", "%2e%2e", "a%00b", "x" * 600, "\u0430dmin", "..%2f..%2fetc", "-", "%20"]


def panel_urls():
    """(name, path-with-sample-args, the view, the str/slug arg names) for every non-admin URL."""
    found = []

    def walk(patterns, prefix="", namespace=""):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.app_name == "admin":
                    continue
                ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry.url_patterns, prefix + str(entry.pattern), ns)
            elif isinstance(entry, URLPattern):
                converters = getattr(entry.pattern, "converters", {})
                kwargs, text_args = {}, []
                for arg, converter in converters.items():
                    if type(converter).__name__ == "IntConverter":
                        kwargs[arg] = 987654
                    else:
                        kwargs[arg] = "no-such-object"
                        text_args.append(arg)
                name = f"{namespace}{entry.name}" if entry.name else None
                if name is None:
                    continue
                found.append((name, reverse(name, kwargs=kwargs), entry.callback, kwargs, text_args))

    walk(get_resolver().url_patterns)
    return found


def is_public(view) -> bool:
    return getattr(view, "login_required", True) is False


def row_counts() -> dict[str, int]:
    """Rows of every panel table, in one query (the sweeps ask before and after each request)."""
    models = [
        model
        for model in apps.get_models()
        if model._meta.app_label in {"audit", "pods", "separations", "mixjobs", "volumes", "dashboard", "django_q"}
    ]
    quote_name = connection.ops.quote_name
    # Table names come from the models, quoted: nothing outside the code reaches this SQL.
    counts = ", ".join(f"(SELECT COUNT(*) FROM {quote_name(model._meta.db_table)})" for model in models)  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + counts)
        row = cursor.fetchone()
    return {model._meta.label: count for model, count in zip(models, row, strict=True)}


URLS = panel_urls()
IDS = [name for name, *_ in URLS]
PARAMS = ("name", "path", "view", "kwargs", "text_args")


def urls_where(keep) -> dict:
    """The parametrize arguments for the URLs a test applies to: a case that cannot apply
    is left out instead of passing without asserting anything."""
    chosen = [url for url in URLS if keep(url[0], url[2])]
    return {"argnames": PARAMS, "argvalues": chosen, "ids": [url[0] for url in chosen]}


# The login page is for anonymous visitors.
NOT_LOGIN = urls_where(lambda name, view: name != "login")
# Pages behind a login; token APIs and the login page have their own tests, and logging out
# is allowed to anyone signed in.
STAFF_PAGES = urls_where(lambda name, view: not is_public(view) and name not in {"login", "logout"})
# A POST needs a CSRF token everywhere a session can be used (logout included).
SESSION_PAGES = urls_where(lambda name, view: not is_public(view) and name != "login")
# GET must never change state; GET on logout is refused by Django's LogoutView anyway.
READABLE_PAGES = urls_where(lambda name, view: not is_public(view) and name != "logout")


def test_the_walk_finds_the_panel_pages():
    names = set(IDS)
    assert {"dashboard:overview", "dashboard:audit", "pods:list", "mixjobs:list", "separations:list"} <= names
    for chosen in [NOT_LOGIN, STAFF_PAGES, SESSION_PAGES, READABLE_PAGES]:
        assert "dashboard:overview" in chosen["ids"]
        assert "login" not in chosen["ids"]


# Machine endpoints open by design, with what an anonymous GET may get: the health report a
# load balancer reads (ok or not), and the metrics, which answer a Bearer token only (404
# while METRICS_TOKEN is unset). A POST is refused like everywhere else.
OPEN_BY_DESIGN = {"healthz": {200, 503}, "metrics": {401, 404}}


@pytest.mark.parametrize(**NOT_LOGIN)
def test_anonymous_visitors_are_refused(client, name, path, view, kwargs, text_args):
    before = row_counts()
    for method in (client.get, client.post):
        response = method(path)
        if is_public(view):
            # Token-authenticated API or a machine endpoint: never a page of data without a token.
            allowed = OPEN_BY_DESIGN.get(name, set()) if method == client.get else set()
            assert response.status_code in {401, 405} | allowed, f"{method.__name__.upper()} {path}"
        else:
            assert response.status_code == 302, f"{method.__name__.upper()} {path}"
            assert response["Location"].startswith(reverse("login"))
    assert row_counts() == before


@pytest.mark.parametrize(**STAFF_PAGES)
def test_viewers_cannot_change_anything(viewer_client, name, path, view, kwargs, text_args):
    before = row_counts()
    response = viewer_client.post(path, {"confirm": "yes"})
    assert response.status_code in {403, 404, 405}, f"POST {path} answered {response.status_code}"
    assert row_counts() == before


@pytest.mark.parametrize(**SESSION_PAGES)
def test_post_without_csrf_token_is_refused(client, staff_user, name, path, view, kwargs, text_args):
    client.force_login(staff_user)
    client.handler.enforce_csrf_checks = True
    before = row_counts()
    response = client.post(path, {"confirm": "yes"})
    assert response.status_code in {403, 405}, f"POST {path} answered {response.status_code}"
    assert row_counts() == before


@pytest.mark.parametrize(**READABLE_PAGES)
def test_get_never_changes_state_even_with_hostile_ids(staff_client, name, path, view, kwargs, text_args):
    before = row_counts()
    response = staff_client.get(path)
    assert response.status_code < 500
    # A POST-only action answers GET with 405 whatever the id (400 when the path holds a NUL,
    # refused before any view; 404 when the id leaves the URL pattern); a page refuses a bad id.
    allowed = {400, 404, 405} if response.status_code == 405 else {200, 302, 400, 404}
    for arg in text_args:
        for hostile in HOSTILE_IDS:
            hostile_path = path.replace(quote(str(kwargs[arg])), hostile, 1)
            response = staff_client.get(hostile_path)
            assert response.status_code in allowed, f"GET {hostile_path} answered {response.status_code}"
    assert row_counts() == before

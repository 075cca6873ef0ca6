"""With DEBUG=0 a page names each static file by the hashed name `collectstatic` recorded in
its manifest; a file missing there makes every page that links it (login, 404, 500) fail.
The web server checks at start, so a deploy that skipped or ran an old `collectstatic` stops
with one sentence in its log instead of answering 500 to everyone."""

from django.conf import settings
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core.exceptions import ImproperlyConfigured

# collectstatic's own default ignore patterns: what it would never copy is never missing.
IGNORED = ["CVS", ".*", "*~"]
COLLECT = "python manage.py collectstatic --noinput"


def static_manifest_check() -> None:
    if not isinstance(staticfiles_storage, ManifestFilesMixin):
        return  # DEBUG=1: plain names, read from the source folders
    collected = staticfiles_storage.hashed_files
    if not collected:
        raise ImproperlyConfigured(
            f"static files are not collected in {settings.STATIC_ROOT} (DEBUG=0 serves them from there "
            f"by hashed names): run `{COLLECT}` on each deploy"
        )
    missing = sorted(
        {path for finder in finders.get_finders() for path, _storage in finder.list(IGNORED) if path not in collected}
    )
    if missing:
        raise ImproperlyConfigured(
            f"{len(missing)} static file(s) are missing from {settings.STATIC_ROOT}, e.g. {missing[0]} "
            f"(collected before this version): run `{COLLECT}` on each deploy"
        )

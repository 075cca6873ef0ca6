import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlpanel.settings")
application = get_wsgi_application()

from controlpanel.static_manifest import static_manifest_check  # noqa: E402 - needs the settings loaded

static_manifest_check()

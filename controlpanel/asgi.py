import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlpanel.settings")
application = get_asgi_application()

from controlpanel.static_manifest import static_manifest_check  # noqa: E402 - needs the settings loaded

static_manifest_check()

"""What `/healthz` asks of Modal: each `modal://` volume the panel watches (the inspected
volumes and the sessions volume) answers. No check at all when no modal:// URL is configured."""

from django.conf import settings

from apps.audit.health import HealthCheck
from apps.volumes.backends import backend_for_url
from apps.volumes.models import Volume


def _volume_check(name: str, url: str) -> HealthCheck:
    def run() -> str:
        backend_for_url(url).check()
        return "reachable"

    return HealthCheck(f"modal volume {name}", run)


def modal_volumes() -> list[HealthCheck]:
    urls = dict(Volume.objects.filter(url__startswith="modal://").values_list("name", "url"))
    if settings.SESSIONS_VOLUME_URL.startswith("modal://"):
        urls.setdefault("sessions", settings.SESSIONS_VOLUME_URL)
    return [_volume_check(name, url) for name, url in sorted(urls.items())]


CHECKS = [HealthCheck("modal", expand=modal_volumes)]

"""The two machine endpoints: `/healthz` (for load balancers and monitors, no login) and
`/metrics` (Prometheus, on only when METRICS_TOKEN is set, Bearer token)."""

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from apps.audit.health import health_report
from apps.audit.metrics import metrics_text


@login_not_required
@never_cache
@require_safe
def healthz(request):
    report = health_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)


@login_not_required
@never_cache
@require_safe
def metrics(request):
    if not settings.METRICS_TOKEN:
        return HttpResponse(
            "Metrics are off: set METRICS_TOKEN to turn them on.\n", status=404, content_type="text/plain"
        )
    sent = request.headers.get("Authorization", "")
    expected = f"Bearer {settings.METRICS_TOKEN}"
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        response = HttpResponse("A Bearer token is needed.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_text(), content_type="text/plain; version=0.0.4; charset=utf-8")

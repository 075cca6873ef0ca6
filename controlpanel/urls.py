from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from apps.audit import views as audit_views
from apps.dashboard.views import RateLimitedLoginView

admin.site.site_header = "Storage control panel"
admin.site.site_title = "Storage control panel"
# The admin uses our login page, so the rate limit covers both.
admin.site.login = RateLimitedLoginView.as_view()

urlpatterns = [
    path("login/", RateLimitedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", audit_views.healthz, name="healthz"),
    path("metrics", audit_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("pods/", include("apps.pods.urls")),
    path("sessions/", include("apps.separations.urls")),
    # The API for automation, the separation service's cleanups included (apps/api/api.py).
    path("api/", include("apps.api.urls")),
    path("mixjobs/", include("apps.mixjobs.urls")),
    path("volumes/", include("apps.volumes.urls")),
    path("", include("apps.dashboard.urls")),
]

# The panel's own error pages, with its navigation (apps/dashboard/error_pages.py).
handler403 = "apps.dashboard.error_pages.permission_denied"
handler404 = "apps.dashboard.error_pages.page_not_found"
handler500 = "apps.dashboard.error_pages.server_error"

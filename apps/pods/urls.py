from django.urls import path

from apps.pods import views, views_backup, views_files, views_verify
from apps.pods.actions import PAGE_ACTIONS

app_name = "pods"
urlpatterns = [
    path("", views.list_view, name="list"),
    path("provision/", views.provision_view, name="provision"),
    path("reconcile/", views.reconcile_view, name="reconcile"),
    # pods:sweep, pods:sweep-run, pods:retention, pods:retention-run
    *[path(f"{page}/", views.housekeeping_confirm_view, {"page": page}, name=page) for page in views.HOUSEKEEPING],
    *[
        path(f"{page}/run/", views.housekeeping_run_view, {"page": page}, name=f"{page}-run")
        for page in views.HOUSEKEEPING
    ],
    path("<str:pod_id>/", views.detail_view, name="detail"),
    *views_verify.URLS,  # pods:verify, pods:drill
    *views_files.URLS,  # pods:snapshot-files, -download, -restore, -restore-run
    *views_backup.URLS,  # pods:backup, pods:backup-interval
    path("<str:pod_id>/confirm/<str:action>/", views.confirm_view, name="confirm"),
    # pods:stop, pods:start, pods:deprovision, pods:delete
    *[
        path(f"<str:pod_id>/{action.name}/", views.action_view, {"action": action.name}, name=action.name)
        for action in PAGE_ACTIONS
    ],
]

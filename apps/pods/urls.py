from django.urls import path

from apps.pods import views

app_name = "pods"
urlpatterns = [
    path("", views.list_view, name="list"),
    path("provision/", views.provision_view, name="provision"),
    path("reconcile/", views.reconcile_view, name="reconcile"),
    path("sweep/", views.sweep_confirm_view, name="sweep"),
    path("sweep/run/", views.sweep_run_view, name="sweep-run"),
    path("retention/", views.retention_confirm_view, name="retention"),
    path("retention/run/", views.retention_run_view, name="retention-run"),
    path("<str:pod_id>/", views.detail_view, name="detail"),
    path("<str:pod_id>/confirm/<str:action>/", views.confirm_view, name="confirm"),
    path("<str:pod_id>/stop/", views.stop_view, name="stop"),
    path("<str:pod_id>/start/", views.start_view, name="start"),
    path("<str:pod_id>/deprovision/", views.deprovision_view, name="deprovision"),
    path("<str:pod_id>/delete/", views.delete_view, name="delete"),
]

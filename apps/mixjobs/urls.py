from django.urls import path

from apps.mixjobs import views

app_name = "mixjobs"
urlpatterns = [
    path("", views.list_view, name="list"),
    path("cleanup/", views.cleanup_confirm, name="cleanup"),
    path("cleanup/run/", views.cleanup_run, name="cleanup-run"),
    path("sync/", views.sync_run, name="sync"),
]

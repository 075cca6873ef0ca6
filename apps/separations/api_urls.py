from django.urls import path

from apps.separations import api

app_name = "separations-api"
urlpatterns = [
    path("cleanup-on-download", api.cleanup_on_download, name="cleanup-on-download"),
    path("cleanup-on-exit", api.cleanup_on_exit, name="cleanup-on-exit"),
    path("<str:session_id>/cleanup", api.cleanup_session, name="cleanup-session"),
]

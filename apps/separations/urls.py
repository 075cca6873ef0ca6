from django.urls import path

from apps.separations import views

app_name = "separations"
urlpatterns = [
    path("", views.list_view, name="list"),
    path("sync/", views.sync_run, name="sync"),
    path("cleanup/<str:policy>/", views.cleanup_confirm, name="cleanup"),
    path("cleanup/<str:policy>/run/", views.cleanup_run, name="cleanup-run"),
    path("<str:session_id>/", views.detail_view, name="detail"),
]

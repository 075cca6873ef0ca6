from django.urls import path

from apps.volumes import views

app_name = "volumes"
urlpatterns = [
    path("", views.list_view, name="list"),
    path("<str:name>/", views.detail_view, name="detail"),
    path("<str:name>/inspect/", views.inspect_run, name="inspect"),
    path("<str:name>/crosscheck/", views.crosscheck_run, name="crosscheck"),
    path("<str:name>/remove-folder/", views.remove_folder_confirm, name="remove-folder"),
    path("<str:name>/remove-folder/run/", views.remove_folder_run, name="remove-folder-run"),
]

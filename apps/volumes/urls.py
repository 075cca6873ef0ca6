from django.urls import path

from apps.volumes import views

app_name = "volumes"
urlpatterns = [
    path("", views.list_view, name="list"),
]

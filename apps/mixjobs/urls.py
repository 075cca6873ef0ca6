from django.urls import path

from apps.mixjobs import views

app_name = "mixjobs"
urlpatterns = [
    path("", views.list_view, name="list"),
]

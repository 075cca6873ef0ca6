from django.urls import path

from apps.pods import views

app_name = "pods"
urlpatterns = [
    path("", views.list_view, name="list"),
]

from django.urls import path

from apps.separations import views

app_name = "separations"
urlpatterns = [
    path("", views.list_view, name="list"),
]

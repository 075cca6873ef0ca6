from django.urls import path

from apps.dashboard import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("leaks/", views.leaks, name="leaks"),
    path("in-flight/", views.in_flight, name="in-flight"),
    path("operations/", views.operations, name="operations"),
    path("operations/<int:operation_id>/", views.operation_detail, name="operation"),
    path("operations/<int:operation_id>/progress/", views.operation_progress, name="operation-progress"),
    path("operations/<int:operation_id>/retry/", views.operation_retry_view, name="operation-retry"),
    path("audit/", views.audit_list, name="audit"),
]

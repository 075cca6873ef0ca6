from django.urls import path

from apps.dashboard import holds, views

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
    # The one hold control's two forms, for anything a hold can keep (apps/dashboard/holds.py).
    path("holds/set/", holds.hold_set_view, name="hold-set"),
    path("holds/release/", holds.hold_release_view, name="hold-release"),
]

"""The two roles: viewers see everything and change nothing; operators may act."""

from django.contrib.auth.models import Group, Permission

VIEWER_GROUP = "viewer"
OPERATOR_GROUP = "operator"
OUR_APPS = ["audit", "pods", "separations", "mixjobs", "volumes", "dashboard", "django_q", "axes"]


def roles_sync() -> None:
    ours = Permission.objects.filter(content_type__app_label__in=OUR_APPS)
    viewer, _ = Group.objects.get_or_create(name=VIEWER_GROUP)
    viewer.permissions.set(ours.filter(codename__startswith="view_"))
    operator, _ = Group.objects.get_or_create(name=OPERATOR_GROUP)
    operator.permissions.set(ours)

import stat

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django_q.models import Schedule

from apps.audit.schedules import collect_schedules

pytestmark = pytest.mark.django_db


def test_bootstrap_creates_admin_with_a_private_generated_password(settings, capsys, monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    call_command("bootstrap")
    password_file = settings.VAR_DIR / "admin-password"
    password = password_file.read_text().strip()
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password in capsys.readouterr().out  # printed once for the person running `make run`
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(password)

    call_command("bootstrap")  # idempotent: no second account, password unchanged
    assert get_user_model().objects.filter(username="admin").count() == 1
    assert password_file.read_text().strip() == password


def test_bootstrap_takes_the_password_from_the_environment(settings, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "from-env-Password-1")
    call_command("bootstrap")
    assert get_user_model().objects.get(username="admin").check_password("from-env-Password-1")
    assert not (settings.VAR_DIR / "admin-password").exists()


def test_schedules_are_created_once_and_visible_in_django_q():
    call_command("setup_schedules")
    call_command("setup_schedules")
    names = [name for name, *_ in collect_schedules()]
    assert names and sorted(Schedule.objects.values_list("name", flat=True)) == sorted(names)


def test_viewer_group_only_views_and_operator_group_acts():
    call_command("bootstrap")
    viewer = Group.objects.get(name="viewer")
    operator = Group.objects.get(name="operator")
    viewer_codenames = set(viewer.permissions.values_list("codename", flat=True))
    assert viewer_codenames and all(code.startswith("view_") for code in viewer_codenames)
    assert "retry_operation" in set(operator.permissions.values_list("codename", flat=True))
    # Backing up a running pod is the operators' (and superusers'), never a viewer's.
    assert "backup_pod" in set(operator.permissions.values_list("codename", flat=True))
    assert "backup_pod" not in viewer_codenames

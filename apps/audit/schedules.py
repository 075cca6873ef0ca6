"""Create every app's django-q2 schedules idempotently (run by `make run` and on deploy)."""

import importlib

from django.apps import apps
from django_q.models import Schedule


def collect_schedules() -> list[tuple[str, str, str, int]]:
    found = []
    for config in apps.get_app_configs():
        if not config.name.startswith("apps."):
            continue
        try:
            module = importlib.import_module(f"{config.name}.tasks")
        except ModuleNotFoundError as exc:
            if exc.name != f"{config.name}.tasks":
                raise
            continue
        found.extend(getattr(module, "SCHEDULES", []))
    return found


def schedules_sync() -> list[str]:
    """Create or update each declared schedule by name; leave admin-made ones alone."""
    changed = []
    for name, func, schedule_type, minutes in collect_schedules():
        schedule, created = Schedule.objects.get_or_create(
            name=name, defaults={"func": func, "schedule_type": schedule_type, "minutes": minutes, "repeats": -1}
        )
        if created:
            changed.append(f"created {name}")
        elif (schedule.func, schedule.schedule_type, schedule.minutes) != (func, schedule_type, minutes):
            schedule.func, schedule.schedule_type, schedule.minutes = func, schedule_type, minutes
            schedule.save(update_fields=["func", "schedule_type", "minutes"])
            changed.append(f"updated {name}")
    return changed

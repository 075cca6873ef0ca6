"""Create every declared schedule in django-q2, idempotently (run by `make run` and on deploy).

A kind with a `schedule` runs through `apps.audit.operations.run_scheduled`; the panel's own
housekeeping (reaping stale operations) is the one schedule that is not a kind of work.
"""

from django_q.models import Schedule

from apps.audit.operations import SCHEDULE_TASK, kinds

# (name, dotted function, args, minutes between runs)
HOUSEKEEPING = [
    ("reap stale operations", "apps.audit.tasks.reap_stale_operations_task", "", 5),
]


def collect_schedules() -> list[tuple[str, str, str, int]]:
    found = list(HOUSEKEEPING)
    for kind in kinds():
        if kind.schedule is not None:
            found.append((kind.schedule.name, SCHEDULE_TASK, repr(str(kind.name)), kind.schedule.minutes))
    return found


def schedules_sync() -> list[str]:
    """Create or update each declared schedule by name; leave admin-made ones alone."""
    changed = []
    for name, func, args, minutes in collect_schedules():
        wanted = {"func": func, "args": args or None, "schedule_type": Schedule.MINUTES, "minutes": minutes}
        schedule, created = Schedule.objects.get_or_create(name=name, defaults={**wanted, "repeats": -1})
        if created:
            changed.append(f"created {name}")
        elif any(getattr(schedule, key) != value for key, value in wanted.items()):
            for key, value in wanted.items():
                setattr(schedule, key, value)
            schedule.save(update_fields=list(wanted))
            changed.append(f"updated {name}")
    return changed

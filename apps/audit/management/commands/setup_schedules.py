from django.core.management.base import BaseCommand

from apps.audit.schedules import schedules_sync


class Command(BaseCommand):
    help = "Create or update the panel's django-q2 schedules (idempotent)."

    def handle(self, *args, **options):
        changed = schedules_sync()
        self.stdout.write("\n".join(changed) if changed else "schedules up to date")

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "apps.audit"
    label = "audit"
    verbose_name = "Audit and operations"

    def ready(self) -> None:
        from apps.audit.operations import register
        from apps.audit.watch import KINDS

        register(*KINDS)

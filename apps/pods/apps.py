from django.apps import AppConfig


class PodsConfig(AppConfig):
    name = "apps.pods"
    label = "pods"
    verbose_name = "Pods"

    def ready(self):
        from apps.audit.health import register_health
        from apps.audit.operations import register
        from apps.audit.overview import OverviewProvider, register_overview
        from apps.pods.health import CHECKS
        from apps.pods.operations import KINDS
        from apps.pods.selectors import overview_section

        register(*KINDS)
        register_health(*CHECKS)
        register_overview(
            OverviewProvider(app_label=self.label, title=self.verbose_name, section=overview_section, order=10)
        )

from django.apps import AppConfig


class VolumesConfig(AppConfig):
    name = "apps.volumes"
    label = "volumes"
    verbose_name = "Volumes"

    def ready(self):
        from apps.audit.health import register_health
        from apps.audit.holds import hold_places_register
        from apps.audit.names import TargetType
        from apps.audit.operations import register
        from apps.audit.overview import OverviewProvider, register_overview
        from apps.volumes import health, operations, selectors
        from apps.volumes.services.removal import folder_hold_places

        register(*operations.KINDS)
        hold_places_register(TargetType.VOLUME_FOLDER, folder_hold_places)
        register_health(*health.CHECKS)
        register_overview(
            OverviewProvider(
                app_label=self.label, title=selectors.OVERVIEW_TITLE, section=selectors.overview_section, order=40
            )
        )

from django.apps import AppConfig


class SeparationsConfig(AppConfig):
    name = "apps.separations"
    label = "separations"
    verbose_name = "Separation sessions"

    def ready(self) -> None:
        from apps.audit.holds import hold_places_register
        from apps.audit.names import TargetType
        from apps.audit.operations import register
        from apps.audit.overview import OverviewProvider, register_overview
        from apps.separations import selectors
        from apps.separations.operations import KINDS
        from apps.separations.services.scan import session_hold_places

        register(*KINDS)
        hold_places_register(TargetType.SEPARATION_SESSION, session_hold_places)
        register_overview(
            OverviewProvider(app_label=self.label, title=selectors.TITLE, section=selectors.overview_section, order=20)
        )

from django.apps import AppConfig


class MixjobsConfig(AppConfig):
    name = "apps.mixjobs"
    label = "mixjobs"
    verbose_name = "Mix jobs"

    def ready(self):
        from apps.audit.holds import hold_places_register
        from apps.audit.names import TargetType
        from apps.audit.operations import register
        from apps.audit.overview import OverviewProvider, register_overview
        from apps.mixjobs.files import session_hold_places
        from apps.mixjobs.operations import KINDS
        from apps.mixjobs.selectors import OVERVIEW_TITLE, overview_section

        register(*KINDS)
        hold_places_register(TargetType.MIXJOB_SESSION, session_hold_places)
        register_overview(
            OverviewProvider(app_label=self.label, title=OVERVIEW_TITLE, section=overview_section, order=30)
        )

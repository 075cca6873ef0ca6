from django.apps import AppConfig


class SeparationsConfig(AppConfig):
    name = "apps.separations"
    label = "separations"
    verbose_name = "Separation sessions"

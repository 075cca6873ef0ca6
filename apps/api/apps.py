from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The API for automation: on top, like the dashboard; it calls the declared kinds and
    the services, and nothing below imports it."""

    name = "apps.api"
    label = "api"
    verbose_name = "API"

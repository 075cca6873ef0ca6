from django.apps import AppConfig


class MixjobsConfig(AppConfig):
    name = "apps.mixjobs"
    label = "mixjobs"
    verbose_name = "Mix jobs"

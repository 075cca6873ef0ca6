from django.apps import AppConfig


class PodsConfig(AppConfig):
    name = "apps.pods"
    label = "pods"
    verbose_name = "Pods"

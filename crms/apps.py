from django.apps import AppConfig


class CrmsConfig(AppConfig):
    name = "crms"
    verbose_name = "Connections"

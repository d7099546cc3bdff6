from django.apps import AppConfig


class CrmsConfig(AppConfig):
    name = "crms"
    verbose_name = "Connections"

    def ready(self) -> None:
        from crms import checks  # noqa: F401 - registers the deploy check of secrets at rest

from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Sync pipeline"

    def ready(self) -> None:
        from recordsync import openapi  # noqa: F401 - registers the token scheme with drf-spectacular

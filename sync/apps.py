from django.apps import AppConfig


class SyncConfig(AppConfig):
    name = "sync"
    verbose_name = "Sync pipeline"

    def ready(self) -> None:
        from django_q.signals import post_spawn, pre_execute

        from recordsync import openapi  # noqa: F401 - registers the token scheme with drf-spectacular
        from sync.tasks import batch_taken, worker_stop_handler_install

        post_spawn.connect(worker_stop_handler_install, dispatch_uid="recordsync-worker-sigterm")
        pre_execute.connect(batch_taken, dispatch_uid="recordsync-batch-taken")

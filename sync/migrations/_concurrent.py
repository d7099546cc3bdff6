"""Index operations that do not block writes on PostgreSQL (the loader skips modules named with _)."""

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations


class _ConcurrentOnPostgreSQL:
    """The concurrent operation on PostgreSQL; elsewhere its plain twin (`plain`), which other databases
    run inside the migration's transaction. Both write the same state, so a migration reads the same
    on either."""

    plain: Any  # migrations.AddIndex or migrations.RemoveIndex

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        else:
            self.plain.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)  # type: ignore[misc]
        else:
            self.plain.database_backwards(self, app_label, schema_editor, from_state, to_state)


class AddIndexWithoutLock(_ConcurrentOnPostgreSQL, AddIndexConcurrently):
    """AddIndexConcurrently on PostgreSQL, AddIndex anywhere else."""

    plain = migrations.AddIndex


class RemoveIndexWithoutLock(_ConcurrentOnPostgreSQL, RemoveIndexConcurrently):
    """RemoveIndexConcurrently on PostgreSQL, RemoveIndex anywhere else."""

    plain = migrations.RemoveIndex

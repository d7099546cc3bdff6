"""Records into and out of flat files: one CSV or JSON Lines file per object, in one folder.

Each object's file has a `key` column holding System A's record id (it is also our external
id), the configured `columns`, and `_updated_at` (ISO-8601 UTC), set when the row changes.
Columns found in a file that the config does not name are kept as they are. A file that does
not exist yet is an empty table. CSV holds every value as text (see formats.py).

push() takes the file's lock, reads the whole file, upserts by key (created, updated, or
unchanged when every value is already there), deletes by key, and replaces the file
atomically. Each file is written on its own: a call that fails part-way may already have
written the files of earlier objects; retrying it is safe, those records come back unchanged.

Record error codes: UNKNOWN_OBJECT, MISSING_KEY, INVALID_FIELD, INVALID_VALUE, invalid_config,
invalid_file (all permanent). Call error codes: lock_timeout, io_error (retryable),
permission_denied, invalid_cursor (permanent).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings

from crms import cursors
from crms.base import (
    Capabilities,
    Change,
    ChangePage,
    CheckResult,
    Connector,
    ConnectorError,
    OutboundRecord,
    PushResult,
    RecordRejected,
)
from crms.flatfile.formats import FORMATS, Format, InvalidFile
from crms.flatfile.storage import io_error, locked, write_atomically

PAGE_SIZE = 500
UPDATED_AT = "_updated_at"
FILE_NAME = r"^(?!.*\.(lock|tmp)$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}$"  # no path, not our sidecars
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class ObjectFile:
    object_type: str
    path: Path
    key: str
    columns: tuple[str, ...]
    format: Format


@dataclass
class Contents:
    header: list[str]
    rows: dict[str, dict[str, Any]]  # by key, in file order


class FlatFileConnector(Connector):
    kind = "flatfile"
    label = "Flat files (CSV, JSON Lines)"
    # The objects are whatever `objects` names, per connection; there is no fixed list to offer.
    capabilities = Capabilities(batch_size=PAGE_SIZE, directions=("outbound", "inbound"), objects={})
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["folder", "format", "objects"],
        "properties": {
            "folder": {"type": "string", "pattern": "^/", "description": "An absolute path we may write in."},
            "format": {"enum": ["csv", "jsonl"], "description": "csv (every value is text) or jsonl (JSON types)."},
            "objects": {
                "type": "object",
                "minProperties": 1,
                "description": 'Object name -> its file, e.g. {"Contact": {"file": "contacts.csv", ...}}.',
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["file", "key", "columns"],
                    "properties": {
                        "file": {"type": "string", "pattern": FILE_NAME, "description": "A file name in the folder."},
                        "key": {
                            "type": "string",
                            "minLength": 1,
                            "not": {"const": UPDATED_AT},
                            "description": "The column holding System A's record id.",
                        },
                        "columns": {
                            "type": "array",
                            "uniqueItems": True,
                            "items": {"type": "string", "minLength": 1, "not": {"const": UPDATED_AT}},
                            "description": "The columns records may write.",
                        },
                    },
                },
            },
        },
    }

    clock: Callable[[], datetime] = partial(datetime.now, UTC)
    page_size = PAGE_SIZE  # rows a changes() page holds; the cursor is right at any size
    lock_timeout = 30.0  # seconds a push waits for another process's lock before failing as retryable

    # --- the interface ---------------------------------------------------------------------

    def push(self, batch: Sequence[OutboundRecord]) -> list[PushResult]:
        groups: dict[str, list[tuple[int, OutboundRecord]]] = {}
        for index, record in enumerate(batch):
            groups.setdefault(record.object_type, []).append((index, record))
        results: dict[int, PushResult] = {}
        for object_type, group in groups.items():
            results.update(self._push_file(object_type, group))
        return [results[index] for index in range(len(batch))]

    def read(self, object_type: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        spec = self._file(object_type)
        rows = self._load(spec).rows
        return {key: _visible(rows[key]) for key in ids if key in rows}

    @classmethod
    def objects_named(cls, config: Mapping[str, Any]) -> list[str]:
        return [*super().objects_named(config), *(str(name) for name in config.get("objects") or [])]  # its files

    def changes(self, object_type: str, cursor: str | None) -> ChangePage:
        """Rows whose `_updated_at` is after the cursor, oldest first, `page_size` a page.

        Keyset paging: rows are listed in (_updated_at, key) order, times compared as instants
        (any offset, with or without a fraction; one without a zone is UTC) and keys as text
        ("10" before "9", in a JSON Lines file too); the cursor is that pair of the last row handed
        out and the next page starts strictly after it, so any number of rows sharing a timestamp,
        across any page boundary, are neither skipped nor repeated. Each push stamps its rows later
        than any row already in the file, so nothing lands behind a reader's cursor. Deletions
        are not visible: a deleted row is simply gone from the file, so reconcile finds them
        later by reading the ids it knows. Rows without `_updated_at` (added by hand) count as
        written at the epoch.
        """
        spec = self._file(object_type)
        after = _load_cursor(cursor)
        rows = self._load(spec).rows
        ordered = sorted((_stamp(spec, key, row), key) for key, row in rows.items())
        newer = [entry for entry in ordered if after is None or entry > after]
        page = newer[: self.page_size]
        changes = [Change(object_type, key, _visible(rows[key]), stamp) for stamp, key in page]
        if page:
            cursor = cursors.pair_dump(page[-1][0].isoformat(), page[-1][1])
        return ChangePage(changes, cursor, has_more=len(newer) > self.page_size)

    def check(self) -> CheckResult:
        folder = Path(str(self.config.get("folder", "")))
        if not folder.is_dir():
            return CheckResult(False, f"folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            return CheckResult(False, f"folder {folder} is not writable by this process")
        found: list[str] = []
        problems = _shared_files(self.config.get("objects", {}))
        for object_type in self.config.get("objects", {}):
            try:
                found.append(self._describe(self._file(object_type)))
            except ConnectorError as exc:
                problems.append(exc.message)
        if problems:
            return CheckResult(False, "; ".join(problems))
        return CheckResult(True, f"folder {folder} is writable; {'; '.join(found)}")

    # --- writes ----------------------------------------------------------------------------

    @classmethod
    def config_refusals(cls, config: dict[str, Any]) -> dict[str, str]:
        outside = outside_roots(str(config.get("folder", "")))
        return {"config.folder": outside} if outside else {}

    def _push_file(self, object_type: str, group: list[tuple[int, OutboundRecord]]) -> dict[int, PushResult]:
        try:
            spec = self._file(object_type)
            with _os_errors(spec.path), locked(spec.path, timeout=self.lock_timeout):
                contents = self._load(spec)
                now = max(self.clock(), _newest(spec, contents) + TICK)
                results = {index: _apply(spec, contents, record, now) for index, record in group}
                if any(result.outcome in ("created", "updated", "deleted") for result in results.values()):
                    _save(spec, contents)
        except RecordRejected as exc:
            return {index: _refused(record, exc) for index, record in group}
        return results

    # --- config and files ------------------------------------------------------------------

    def _file(self, object_type: str) -> ObjectFile:
        objects: dict[str, dict[str, Any]] = self.config.get("objects", {})
        if object_type not in objects:
            known = ", ".join(sorted(objects)) or "none"
            raise RecordRejected(
                f"no file is configured for {object_type!r} (configured: {known})",
                code="UNKNOWN_OBJECT",
                permanent=True,
            )
        raw = objects[object_type]
        file, key, columns = str(raw.get("file", "")), str(raw.get("key", "")), [str(c) for c in raw.get("columns", [])]
        folder, fmt = str(self.config.get("folder", "")), FORMATS.get(str(self.config.get("format")))
        # Config reaches us validated by the schema; these are the checks a path must never skip.
        if not re.fullmatch(FILE_NAME, file) or not folder.startswith("/") or fmt is None:
            raise RecordRejected(
                f"{object_type}: needs an absolute folder, a format (csv, jsonl) and a plain file name, not {file!r}",
                code="invalid_config",
                permanent=True,
            )
        outside = outside_roots(folder)
        if outside:
            raise RecordRejected(f"{object_type}: {outside}", code="invalid_config", permanent=True)
        if UPDATED_AT in (key, *columns) or not key:
            raise RecordRejected(
                f"{object_type}: {UPDATED_AT} is ours and the key must be named", code="invalid_config", permanent=True
            )
        return ObjectFile(object_type, Path(folder) / file, key, tuple(columns), fmt)

    def _load(self, spec: ObjectFile) -> Contents:
        try:
            with open(spec.path, encoding=spec.format.encoding, newline="") as stream:
                header, rows = spec.format.load(stream, spec.path.name)
        except FileNotFoundError as exc:
            if not spec.path.parent.is_dir():
                raise io_error(exc, spec.path.parent) from exc
            return Contents([], {})
        except OSError as exc:
            raise io_error(exc, spec.path) from exc
        except (InvalidFile, UnicodeDecodeError) as exc:
            raise RecordRejected(
                f"{spec.path.name} does not parse: {exc}", code="invalid_file", permanent=True
            ) from exc
        by_key: dict[str, dict[str, Any]] = {}
        for number, row in enumerate(rows, start=1):
            if row.get(spec.key) in (None, ""):
                raise RecordRejected(
                    f"{spec.path.name} row {number} has no {spec.key}", code="invalid_file", permanent=True
                )
            by_key[str(row[spec.key])] = row
        return Contents(header, by_key)

    def _describe(self, spec: ObjectFile) -> str:
        if not spec.path.exists():
            return f"{spec.path.name}: not created yet"
        contents = self._load(spec)
        _newest(spec, contents)  # every _updated_at must parse too
        return f"{spec.path.name}: {len(contents.rows)} rows"


def _apply(spec: ObjectFile, contents: Contents, record: OutboundRecord, now: datetime) -> PushResult:
    try:
        if record.operation == "delete":
            return _delete(contents, record, _key(spec, record, record.external_id or record.record_id))
        key, fields = _key(spec, record, record.record_id), _fields(spec, record)
    except RecordRejected as exc:
        return _refused(record, exc)
    existing = contents.rows.get(key)
    row = {spec.key: key, **(existing or {}), **fields}
    row[spec.key] = key
    row.pop(UPDATED_AT, None)
    if existing is not None and row == _visible(existing):
        return PushResult(record.record_id, "unchanged", external_id=key)
    contents.rows[key] = {**row, UPDATED_AT: now.astimezone(UTC).isoformat(timespec="microseconds")}
    return PushResult(record.record_id, "updated" if existing is not None else "created", external_id=key)


def _delete(contents: Contents, record: OutboundRecord, key: str) -> PushResult:
    if contents.rows.pop(key, None) is None:
        return PushResult(record.record_id, "unchanged", external_id=record.external_id)
    return PushResult(record.record_id, "deleted", external_id=key)


def _key(spec: ObjectFile, record: OutboundRecord, value: str) -> str:
    if not value.strip():
        raise RecordRejected(
            f"{record.object_type} record has no key: record_id is empty, and every row of "
            f"{spec.path.name} needs one in {spec.key}",
            code="MISSING_KEY",
            permanent=True,
            fields=[spec.key],
        )
    return value


def outside_roots(folder: str) -> str:
    """Why `folder` may not be used (it is not under one of FLATFILE_ROOTS), or "". Resolved first: no `..` or
    symlink leads out."""
    roots = [Path(root).resolve() for root in settings.FLATFILE_ROOTS]
    where = Path(folder).resolve()
    if any(where == root or root in where.parents for root in roots):
        return ""
    return f"folder {folder} is not under FLATFILE_ROOTS ({', '.join(map(str, roots)) or 'none'})"


def _fields(spec: ObjectFile, record: OutboundRecord) -> dict[str, Any]:
    unknown = sorted(set(record.fields) - set(spec.columns))
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise RecordRejected(
            f"{'field' if len(unknown) == 1 else 'fields'} {listed} not among the columns "
            f"configured for {record.object_type} ({', '.join(spec.columns)})",
            code="INVALID_FIELD",
            permanent=True,
            fields=unknown,
        )
    values = {}
    for name, value in record.fields.items():
        try:
            values[name] = spec.format.value(value)
        except (TypeError, ValueError) as exc:
            raise RecordRejected(f"{name}: {exc}", code="INVALID_VALUE", permanent=True, fields=[name]) from exc
    return values


def _save(spec: ObjectFile, contents: Contents) -> None:
    header = list(dict.fromkeys([*contents.header, spec.key, *spec.columns, UPDATED_AT]))
    write_atomically(
        spec.path, partial(spec.format.dump, header, contents.rows.values()), encoding=spec.format.encoding
    )


def _refused(record: OutboundRecord, error: ConnectorError) -> PushResult:
    return PushResult(record.record_id, "error", external_id=record.external_id, error=error)


@contextmanager
def _os_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise io_error(exc, path) from exc


# --- reading ---------------------------------------------------------------------------------


def _visible(row: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name != UPDATED_AT}


def _newest(spec: ObjectFile, contents: Contents) -> datetime:
    return max((_stamp(spec, key, row) for key, row in contents.rows.items()), default=EPOCH)


def _stamp(spec: ObjectFile, key: str, row: dict[str, Any]) -> datetime:
    raw = row.get(UPDATED_AT)
    if raw in (None, ""):
        return EPOCH
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError:
        raise RecordRejected(
            f"{spec.path.name}: row {key} has {UPDATED_AT} {raw!r}, which is not an ISO-8601 time",
            code="invalid_file",
            permanent=True,
        ) from None
    return cursors.as_utc(moment)


def _load_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    saved = cursors.pair_load(cursor)
    if saved is None:
        return None
    try:
        return cursors.as_utc(datetime.fromisoformat(saved[0])), str(saved[1])
    except (ValueError, TypeError) as exc:
        raise ConnectorError(
            f"not a cursor from this connector: {cursor!r}", code="invalid_cursor", permanent=True
        ) from exc


def _shared_files(objects: dict[str, dict[str, Any]]) -> list[str]:
    counts = Counter(str(raw.get("file")) for raw in objects.values())
    return [f"{file} is configured for more than one object" for file, count in counts.items() if count > 1]

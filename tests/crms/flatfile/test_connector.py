"""The flat-file connector on real files in a temp folder, CSV and JSON Lines alike."""

from __future__ import annotations

import csv
import fcntl
import json
import multiprocessing
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from crms.base import ConnectorError, OutboundRecord, PushResult
from crms.flatfile.connector import FlatFileConnector
from crms.http import HttpClient
from crms.models import Connection
from crms.state import DatabaseStateStore

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
STAMP0 = "2026-11-02T10:00:00.000000+00:00"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["csv", "jsonl"])
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "exports"
    path.mkdir()
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_connector(folder: Path, fmt: str, **config: Any) -> FlatFileConnector:
    connection, _ = Connection.objects.get_or_create(name="exports", kind="flatfile")
    objects = {
        "Contact": {"file": f"contacts.{fmt}", "key": "record_id", "columns": ["email", "first_name", "age"]},
        "Metric": {"file": f"metrics.{fmt}", "key": "id", "columns": ["metric"]},
    }
    return FlatFileConnector(
        config={"folder": str(folder), "format": fmt, "objects": objects} | config,
        secrets={},
        http=HttpClient(connection_name="exports"),
        store=DatabaseStateStore(connection),
    )


@pytest.fixture
def connector(folder: Path, fmt: str, clock: Clock) -> FlatFileConnector:
    connector = make_connector(folder, fmt)
    connector.clock = clock
    return connector


@pytest.fixture
def contacts_file(folder: Path, fmt: str) -> Path:
    return folder / f"contacts.{fmt}"


def upsert(record_id: str, object_type: str = "Contact", **fields: Any) -> OutboundRecord:
    return OutboundRecord(record_id, object_type, "upsert", fields)


def delete(record_id: str, external_id: str | None = None) -> OutboundRecord:
    return OutboundRecord(record_id, "Contact", "delete", external_id=external_id)


def outcomes(results: list[Any]) -> list[tuple[str, str | None]]:
    return [(r.outcome, r.external_id) for r in results]


def error_of(result: PushResult) -> ConnectorError:
    assert result.error is not None, result
    return result.error


def rows_in(path: Path) -> list[dict[str, Any]]:
    """The file as any other program would read it."""
    if path.suffix == ".csv":
        with path.open(newline="") as stream:
            return list(csv.DictReader(stream))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def singer_records(name: str, object_type: str = "Metric") -> list[OutboundRecord]:
    """RECORD messages of a meltano conformance stream: the key property is the record id."""
    messages = [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]
    key = next(m for m in messages if m["type"] == "SCHEMA")["key_properties"][0]
    records = [m["record"] for m in messages if m["type"] == "RECORD"]
    return [upsert(str(r.get(key, "")), object_type, **{k: v for k, v in r.items() if k != key}) for r in records]


# --- push -----------------------------------------------------------------------------------------


def test_a_csv_file_holds_a_header_then_one_line_per_record(folder, clock):
    connector = make_connector(folder, "csv")
    connector.clock = clock

    results = connector.push([upsert("c-1", email="ada@example.com", first_name="Ada")])

    assert outcomes(results) == [("created", "c-1")]
    assert (folder / "contacts.csv").read_bytes().decode() == (
        f"record_id,email,first_name,age,_updated_at\nc-1,ada@example.com,Ada,,{STAMP0}\n"
    ).replace("\n", "\r\n")  # the csv module's default, as spreadsheets write it


def test_a_json_lines_file_holds_one_object_per_line(folder, clock):
    connector = make_connector(folder, "jsonl")
    connector.clock = clock

    connector.push([upsert("c-1", email="ada@example.com", age=36), upsert("c-2", first_name="Grace")])

    assert (folder / "contacts.jsonl").read_text() == (
        f'{{"record_id": "c-1", "email": "ada@example.com", "age": 36, "_updated_at": "{STAMP0}"}}\n'
        f'{{"record_id": "c-2", "first_name": "Grace", "_updated_at": "{STAMP0}"}}\n'
    )


def test_a_known_key_updates_its_row_keeps_other_columns_and_moves_updated_at(connector, contacts_file, clock):
    connector.push([upsert("c-1", email="ada@example.com", first_name="Ada"), upsert("c-2", email="g@example.com")])
    clock.advance(60)

    results = connector.push([upsert("c-1", email="ada@lovelace.org")])

    assert outcomes(results) == [("updated", "c-1")]
    rows = rows_in(contacts_file)
    assert [(r["record_id"], r["email"], r.get("first_name")) for r in rows] == [
        ("c-1", "ada@lovelace.org", "Ada"),
        ("c-2", "g@example.com", rows[1].get("first_name")),
    ]
    assert [r["_updated_at"] for r in rows] == ["2026-11-02T10:01:00.000000+00:00", STAMP0]


def test_the_same_values_again_are_unchanged_and_the_file_is_not_rewritten(connector, contacts_file, clock):
    connector.push([upsert("c-1", email="ada@example.com", age=36, first_name=None)])
    before = (contacts_file.stat().st_ino, contacts_file.read_bytes())
    clock.advance(60)

    results = connector.push([upsert("c-1", email="ada@example.com", age=36), upsert("c-1")])

    assert outcomes(results) == [("unchanged", "c-1"), ("unchanged", "c-1")]
    assert (contacts_file.stat().st_ino, contacts_file.read_bytes()) == before


def test_duplicate_keys_in_one_batch_end_with_the_last_value(connector, folder, fmt):
    results = connector.push(singer_records("duplicate_records.singer"))

    assert outcomes(results) == [
        ("created", "1"),
        ("created", "2"),
        ("updated", "1"),
        ("updated", "2"),
        ("updated", "1"),
    ]
    metric = (lambda v: str(v)) if fmt == "csv" else (lambda v: v)
    assert connector.read("Metric", ["1", "2"]) == {
        "1": {"id": "1", "metric": metric(100)},
        "2": {"id": "2", "metric": metric(20)},
    }
    assert len(rows_in(folder / f"metrics.{fmt}")) == 2


def test_a_record_without_a_key_is_refused_with_a_clear_permanent_error(connector, folder, fmt):
    (refused,) = singer_records("record_missing_key_property.singer")

    results = connector.push([refused, upsert("7", "Metric", metric=7)])

    assert [r.outcome for r in results] == ["error", "created"]
    error = results[0].error
    assert (error.code, error.permanent, error.fields) == ("MISSING_KEY", True, ("id",))
    assert error.message == (
        f"Metric record has no key: record_id is empty, and every row of metrics.{fmt} needs one in id"
    )
    assert [r["id"] for r in rows_in(folder / f"metrics.{fmt}")] == ["7"]


def test_a_field_outside_the_columns_is_refused_and_the_rest_are_written(connector, contacts_file):
    results = connector.push(
        [
            upsert("c-1", email="ada@example.com"),
            upsert("c-2", email="grace@example.com", nickname="Amazing Grace", rank="RADM"),
        ]
    )

    assert [r.outcome for r in results] == ["created", "error"]
    error = results[1].error
    assert (error.code, error.permanent, error.fields) == ("INVALID_FIELD", True, ("nickname", "rank"))
    assert error.message == (
        "fields 'nickname', 'rank' not among the columns configured for Contact (email, first_name, age)"
    )
    assert [r["record_id"] for r in rows_in(contacts_file)] == ["c-1"]


def test_a_value_the_format_cannot_hold_is_refused(connector):
    (result,) = connector.push([upsert("c-1", email=datetime(2026, 1, 1))])

    assert (result.error.code, result.error.permanent, result.error.fields) == ("INVALID_VALUE", True, ("email",))


def test_a_record_for_an_object_without_a_file_is_refused(connector):
    (result,) = connector.push([upsert("l-1", "Lead", email="x@example.com")])

    assert result.error.code == "UNKNOWN_OBJECT"
    assert result.error.message == "no file is configured for 'Lead' (configured: Contact, Metric)"


def test_csv_keeps_every_value_as_text(folder, clock):
    connector = make_connector(folder, "csv")

    connector.push([upsert("c-1", email=None, first_name="Ada", age=36)])

    assert connector.read("Contact", ["c-1"]) == {
        "c-1": {"record_id": "c-1", "email": "", "first_name": "Ada", "age": "36"}
    }
    assert outcomes(connector.push([upsert("c-1", age="36", email="")])) == [("unchanged", "c-1")]


def test_json_lines_keep_json_types(folder):
    connector = make_connector(folder, "jsonl")

    connector.push([upsert("c-1", email=None, age=36, first_name={"given": "Ada", "alias": ["A.A.L."]})])

    assert connector.read("Contact", ["c-1"]) == {
        "c-1": {"record_id": "c-1", "email": None, "age": 36, "first_name": {"given": "Ada", "alias": ["A.A.L."]}}
    }


def test_a_delete_removes_the_row_by_key_or_external_id(connector, contacts_file):
    connector.push([upsert("c-1", email="a@example.com"), upsert("c-2"), upsert("c-3")])

    results = connector.push([delete("c-1"), delete("renamed", external_id="c-3"), delete("c-9")])

    assert outcomes(results) == [("deleted", "c-1"), ("deleted", "c-3"), ("unchanged", None)]
    assert [r["record_id"] for r in rows_in(contacts_file)] == ["c-2"]


def test_columns_the_config_does_not_name_are_kept(connector, contacts_file, fmt):
    if fmt == "csv":
        contacts_file.write_text("record_id,email,owner\nc-1,ada@example.com,sales\n")
    else:
        contacts_file.write_text('{"record_id": "c-1", "email": "ada@example.com", "owner": "sales"}\n')

    connector.push([upsert("c-1", email="ada@lovelace.org"), upsert("c-2", email="grace@example.com")])

    rows = rows_in(contacts_file)
    assert [(r["record_id"], r["email"], r.get("owner")) for r in rows] == [
        ("c-1", "ada@lovelace.org", "sales"),
        ("c-2", "grace@example.com", "" if fmt == "csv" else None),
    ]


def test_the_file_keeps_its_permissions_when_replaced(connector, contacts_file):
    connector.push([upsert("c-1")])
    contacts_file.chmod(0o640)

    connector.push([upsert("c-2")])

    assert contacts_file.stat().st_mode & 0o777 == 0o640


# --- atomic writes and the lock -------------------------------------------------------------------


def test_a_write_that_fails_leaves_the_original_file_whole_and_no_temp_file(connector, contacts_file, monkeypatch):
    connector.push([upsert("c-1", email="ada@example.com")])
    original = contacts_file.read_bytes()

    def refuse(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ConnectorError) as raised:
        connector.push([upsert("c-2", email="grace@example.com"), upsert("c-1", email="changed@example.com")])

    assert (raised.value.code, raised.value.permanent) == ("io_error", False)
    assert "No space left on device" in raised.value.message
    assert contacts_file.read_bytes() == original
    assert sorted(p.name for p in contacts_file.parent.iterdir()) == [contacts_file.name, f"{contacts_file.name}.lock"]


def _push_many(connector: FlatFileConnector, prefix: str, start: Any) -> None:
    start.wait()
    for number in range(50):
        connector.push([upsert(f"{prefix}-{number}", email=f"{prefix}{number}@example.com")])


def test_concurrent_pushes_from_two_processes_lose_nothing(connector, contacts_file):
    context = multiprocessing.get_context("fork")  # the children reuse this connector as it is
    start = context.Barrier(2)
    workers = [context.Process(target=_push_many, args=(connector, prefix, start)) for prefix in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert [worker.exitcode for worker in workers] == [0, 0]
    keys = [r["record_id"] for r in rows_in(contacts_file)]
    assert sorted(keys) == sorted(f"{p}-{n}" for p in ("a", "b") for n in range(50))


def test_a_push_waits_for_the_lock_then_gives_up_as_retryable(connector, contacts_file):
    connector.push([upsert("c-1")])
    original = contacts_file.read_bytes()
    connector.lock_timeout = 0.1

    with open(f"{contacts_file}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConnectorError) as raised:
            connector.push([upsert("c-2")])

    assert (raised.value.code, raised.value.permanent) == ("lock_timeout", False)
    assert contacts_file.read_bytes() == original
    assert outcomes(connector.push([upsert("c-2")])) == [("created", "c-2")]  # released: the next push goes


# --- read and changes -----------------------------------------------------------------------------


def test_a_file_that_does_not_exist_yet_is_an_empty_table(connector, contacts_file):
    assert connector.read("Contact", ["c-1"]) == {}
    page = connector.changes("Contact", None)
    assert (page.changes, page.cursor, page.has_more) == ([], None, False)
    assert not contacts_file.exists()


def test_read_returns_the_rows_found_without_updated_at(connector):
    connector.push([upsert("c-1", email="ada@example.com"), upsert("c-2", email="grace@example.com")])

    found = connector.read("Contact", ["c-2", "c-404"])

    assert list(found) == ["c-2"]
    assert found["c-2"]["email"] == "grace@example.com"
    assert "_updated_at" not in found["c-2"]


def test_changes_are_listed_oldest_first_and_resume_after_the_cursor(connector, clock):
    connector.push([upsert("c-1", email="ada@example.com")])
    first = connector.changes("Contact", None)
    clock.advance(1)
    connector.push([upsert("c-2", email="grace@example.com")])
    clock.advance(1)
    connector.push([upsert("c-1", email="ada@lovelace.org")])

    later = connector.changes("Contact", first.cursor)

    assert [(c.external_id, c.fields["email"], c.modified_at) for c in first.changes] == [
        ("c-1", "ada@example.com", T0)
    ]
    assert [(c.external_id, c.fields["email"], c.modified_at) for c in later.changes] == [
        ("c-2", "grace@example.com", T0 + timedelta(seconds=1)),
        ("c-1", "ada@lovelace.org", T0 + timedelta(seconds=2)),
    ]
    assert not later.has_more and not any(c.deleted for c in later.changes)


def test_rows_sharing_a_timestamp_across_a_page_boundary_are_neither_skipped_nor_repeated(connector):
    connector.push([upsert(f"c-{i:03}", age=i) for i in range(600)])  # one push: one timestamp

    first = connector.changes("Contact", None)
    second = connector.changes("Contact", first.cursor)
    third = connector.changes("Contact", second.cursor)

    assert (len(first.changes), first.has_more) == (500, True)
    assert (len(second.changes), second.has_more) == (100, False)
    assert sorted(c.external_id for c in first.changes + second.changes) == [f"c-{i:03}" for i in range(600)]
    assert {c.modified_at for c in first.changes + second.changes} == {T0}
    assert (third.changes, third.cursor, third.has_more) == ([], second.cursor, False)


def test_a_write_after_the_clock_went_back_still_lands_after_the_cursor(connector, clock):
    connector.push([upsert("c-5", email="e@example.com")])
    cursor = connector.changes("Contact", None).cursor
    clock.advance(-3600)

    connector.push([upsert("c-1", email="a@example.com")])

    (change,) = connector.changes("Contact", cursor).changes
    assert (change.external_id, change.modified_at) == ("c-1", T0 + timedelta(microseconds=1))


def test_rows_added_by_hand_without_updated_at_are_listed_first(connector, contacts_file, fmt):
    if fmt == "csv":
        contacts_file.write_text("record_id,email\nhand-made,x@example.com\n")
    else:
        contacts_file.write_text('{"record_id": "hand-made", "email": "x@example.com"}\n\n')
    connector.push([upsert("c-1", email="ada@example.com")])

    changes = connector.changes("Contact", None).changes

    assert [(c.external_id, c.modified_at) for c in changes] == [
        ("hand-made", datetime(1970, 1, 1, tzinfo=UTC)),
        ("c-1", T0),
    ]


def test_a_cursor_that_is_not_ours_is_a_permanent_error(connector):
    with pytest.raises(ConnectorError) as raised:
        connector.changes("Contact", "yesterday")

    assert (raised.value.code, raised.value.permanent) == ("invalid_cursor", True)


# --- files that do not parse ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "problem"),
    [
        (
            "csv",
            "record_id,email\nc-1,a@example.com,extra\n",
            "contacts.csv does not parse: contacts.csv line 2 has more values than the header has columns",
        ),
        ("csv", "email\na@example.com\n", "contacts.csv row 1 has no record_id"),
        (
            "jsonl",
            '{"record_id": "c-1"}\n{"record_id": \n',
            "contacts.jsonl does not parse: contacts.jsonl line 2 column 15 is not JSON: Expecting value",
        ),
        ("jsonl", '["c-1"]\n', "contacts.jsonl does not parse: contacts.jsonl line 1 is not a JSON object"),
        (
            "jsonl",
            '{"record_id": "c-1", "_updated_at": "last week"}\n',
            "contacts.jsonl: row c-1 has _updated_at 'last week', which is not an ISO-8601 time",
        ),
    ],
)
def test_a_file_that_does_not_parse_is_refused_and_left_alone(folder, clock, fmt, text, problem):
    connector = make_connector(folder, fmt)
    (folder / f"contacts.{fmt}").write_text(text)

    (result,) = connector.push([upsert("c-2", email="grace@example.com")])

    error = error_of(result)
    assert (error.code, error.permanent, error.message) == ("invalid_file", True, problem)
    assert (folder / f"contacts.{fmt}").read_text() == text
    assert connector.check().message == problem


# --- check ----------------------------------------------------------------------------------------


def test_check_passes_on_a_writable_folder_and_says_what_it_found(connector, fmt):
    connector.push([upsert("c-1"), upsert("c-2")])

    result = connector.check()

    assert result.ok
    assert result.message == (
        f"folder {connector.config['folder']} is writable; contacts.{fmt}: 2 rows; metrics.{fmt}: not created yet"
    )


def test_check_names_a_missing_folder(folder, fmt):
    result = make_connector(folder / "gone", fmt).check()

    assert (result.ok, result.message) == (False, f"folder {folder / 'gone'} does not exist")


def test_a_push_to_a_missing_folder_is_a_retryable_io_error(folder, fmt):
    with pytest.raises(ConnectorError) as raised:
        make_connector(folder / "gone", fmt).push([upsert("c-1")])

    assert (raised.value.code, raised.value.permanent) == ("io_error", False)


def test_check_names_a_folder_it_cannot_write(folder, fmt, monkeypatch):
    # chmod cannot show it when the tests run as root, who may write anywhere: ask access() for a "no".
    monkeypatch.setattr(os, "access", lambda path, mode: False)

    result = make_connector(folder, fmt).check()

    assert (result.ok, result.message) == (False, f"folder {folder} is not writable by this process")


def test_check_refuses_two_objects_sharing_a_file(folder, fmt):
    objects = {name: {"file": "all.csv", "key": "id", "columns": []} for name in ("Contact", "Lead")}

    result = make_connector(folder, fmt, objects=objects).check()

    assert (result.ok, result.message) == (False, "all.csv is configured for more than one object")


# --- config ---------------------------------------------------------------------------------------


def test_the_config_schema_is_a_json_schema_that_accepts_a_documented_config():
    Draft202012Validator.check_schema(FlatFileConnector.config_schema)
    config = {
        "folder": "/srv/exports",
        "format": "csv",
        "objects": {"Contact": {"file": "contacts.csv", "key": "record_id", "columns": ["email"]}},
    }

    assert list(Draft202012Validator(FlatFileConnector.config_schema).iter_errors(config)) == []


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"folder": "exports"}, ["folder"]),
        ({"format": "xlsx"}, ["format"]),
        (
            {"objects": {"Contact": {"file": "../etc/passwd", "key": "id", "columns": []}}},
            ["objects", "Contact", "file"],
        ),
        (
            {"objects": {"Contact": {"file": "contacts.csv.lock", "key": "id", "columns": []}}},
            ["objects", "Contact", "file"],
        ),
        (
            {"objects": {"Contact": {"file": "c.csv", "key": "id", "columns": ["_updated_at"]}}},
            ["objects", "Contact", "columns", 0],
        ),
    ],
)
def test_the_config_schema_refuses_relative_folders_paths_and_our_own_column(change, path):
    config = {"folder": "/srv/exports", "format": "csv", "objects": {}} | change

    errors = list(Draft202012Validator(FlatFileConnector.config_schema).iter_errors(config))

    assert path in [list(e.absolute_path) for e in errors]


def test_a_file_name_with_a_path_never_reaches_the_file_system(folder, fmt):
    objects = {"Contact": {"file": "../outside.csv", "key": "record_id", "columns": []}}

    (result,) = make_connector(folder, fmt, objects=objects).push([upsert("c-1")])

    assert (error_of(result).code, error_of(result).permanent) == ("invalid_config", True)
    assert not (folder.parent / "outside.csv").exists()


# --- issue 15: what a file may hold, and where --------------------------------------------------------


def test_a_value_too_long_to_read_back_is_refused_and_the_object_keeps_working(connector, contacts_file, fmt):
    """One 200 KB value used to be written, then every later push, read and poll of the object failed."""
    results = connector.push([upsert("c-1", email="x" * 200_000), upsert("c-2", email="ada@example.com")])

    error = error_of(results[0])
    assert (error.code, error.fields) == ("INVALID_VALUE", ("email",))
    assert "a file value may hold at most 100000" in error.message
    assert outcomes(results[1:]) == [("created", "c-2")]
    assert connector.read("Contact", ["c-2"])["c-2"]["email"] == "ada@example.com"  # still readable
    assert outcomes(connector.push([upsert("c-3", email="b@example.com")])) == [("created", "c-3")]


@pytest.mark.parametrize("value", ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "'=quoted", "'", "'a"])
def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_read_back_exactly(folder, clock, value):
    connector = make_connector(folder, "csv")
    connector.clock = clock

    connector.push([upsert("c-1", email=value)])

    cell = rows_in(folder / "contacts.csv")[0]["email"]
    assert not cell.startswith(("=", "+", "-", "@", "\t"))  # what a spreadsheet sees
    assert connector.read("Contact", ["c-1"])["c-1"]["email"] == value  # what we read back


def test_a_folder_outside_the_allowed_roots_is_refused(folder, fmt, settings):
    settings.FLATFILE_ROOTS = [str(folder / "elsewhere")]
    connector = make_connector(folder, fmt)

    error = error_of(connector.push([upsert("c-1", email="a@example.com")])[0])

    assert error.code == "invalid_config" and "is not under FLATFILE_ROOTS" in error.message
    assert not (folder / f"contacts.{fmt}").exists()


@pytest.mark.django_db
def test_saving_a_connection_outside_the_roots_names_the_folder(settings, tmp_path):
    from rest_framework.exceptions import ValidationError

    from crms.services import connection_save

    settings.FLATFILE_ROOTS = [str(tmp_path / "files")]
    objects = {"Contact": {"file": "contacts.csv", "key": "record_id", "columns": ["email"]}}
    config = {"folder": str(tmp_path / "files" / ".." / ".." / "etc"), "format": "csv", "objects": objects}

    with pytest.raises(ValidationError) as refused:
        connection_save(name="files", kind="flatfile", config=config)

    assert "is not under FLATFILE_ROOTS" in str(refused.value.detail["config.folder"])  # type: ignore[call-overload]

"""Reading and writing the two file formats. A file is a header (CSV's column order) and rows.

CSV keeps every value as text: None is written as an empty cell, a string as itself, and any
other value as its JSON text (true, 36, 1.5, {"a": 1}); reads give those strings back.
JSON Lines keeps JSON types: one object per line, blank lines ignored.

Both write only what they can read back (issue 15: one 200 KB value broke a CSV object for good, past the
csv module's 128 KiB field limit): a value longer than FLATFILE_MAX_VALUE_CHARS (100,000) once written out is
refused. CSV cells that a spreadsheet would run as a formula (starting with = + - @, a tab or a carriage
return) are written with a leading apostrophe, as OWASP advises, and read back without it.
"""

from __future__ import annotations

import csv
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, TextIO

from django.conf import settings


class InvalidFile(ValueError):
    """The file does not parse; the message names the line."""


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _neutralised(cell: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe (so does one that already starts
    with an apostrophe before such a character, so that reading back is exact)."""
    if cell.startswith(FORMULA_START) or (cell.startswith("'") and cell[1:].startswith((*FORMULA_START, "'"))):
        return "'" + cell
    return cell


def _restored(cell: str) -> str:
    if cell.startswith("'") and cell[1:].startswith((*FORMULA_START, "'")):
        return cell[1:]
    return cell


def _fits(text: str) -> None:
    limit: int = settings.FLATFILE_MAX_VALUE_CHARS
    if len(text) > limit:
        raise ValueError(f"is {len(text)} characters written out; a file value may hold at most {limit}")


class Format(ABC):
    suffix: str
    encoding = "utf-8"

    @abstractmethod
    def load(self, stream: TextIO, name: str) -> tuple[list[str], list[dict[str, Any]]]:
        """(header, rows) of the file; raises InvalidFile."""

    @abstractmethod
    def dump(self, header: list[str], rows: Iterable[dict[str, Any]], stream: TextIO) -> None: ...

    @abstractmethod
    def value(self, value: Any) -> Any:
        """The value as the file will give it back; raises TypeError or ValueError if it cannot hold it."""


class CsvFormat(Format):
    suffix = "csv"
    encoding = "utf-8-sig"  # reads the BOM spreadsheet programs put first; writes none

    def load(self, stream: TextIO, name: str) -> tuple[list[str], list[dict[str, Any]]]:
        reader = csv.DictReader(stream, restval="")
        rows = []
        try:
            for row in reader:
                if None in row:
                    raise InvalidFile(f"{name} line {reader.line_num} has more values than the header has columns")
                rows.append({column: _restored(cell) for column, cell in row.items()})
        except csv.Error as exc:
            raise InvalidFile(f"{name} line {reader.line_num}: {exc}") from exc
        return list(reader.fieldnames or []), rows

    def dump(self, header: list[str], rows: Iterable[dict[str, Any]], stream: TextIO) -> None:
        writer = csv.DictWriter(stream, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows({column: _neutralised(str(cell)) for column, cell in row.items()} for row in rows)

    def value(self, value: Any) -> Any:
        if value is None:
            return ""
        text = value if isinstance(value, str) else json.dumps(value, allow_nan=False, ensure_ascii=False)
        _fits(_neutralised(text))
        return text


class JsonLinesFormat(Format):
    suffix = "jsonl"

    def load(self, stream: TextIO, name: str) -> tuple[list[str], list[dict[str, Any]]]:
        rows = []
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise InvalidFile(f"{name} line {number} column {exc.colno} is not JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise InvalidFile(f"{name} line {number} is not a JSON object")
            rows.append(row)
        return list(dict.fromkeys(name for row in rows for name in row)), rows

    def dump(self, header: list[str], rows: Iterable[dict[str, Any]], stream: TextIO) -> None:
        for row in rows:
            stream.write(json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n")

    def value(self, value: Any) -> Any:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        _fits(text)
        return json.loads(text)


FORMATS: dict[str, Format] = {"csv": CsvFormat(), "jsonl": JsonLinesFormat()}

"""Reading and writing the two file formats. A file is a header (CSV's column order) and rows.

CSV keeps every value as text: None is written as an empty cell, a string as itself, and any
other value as its JSON text (true, 36, 1.5, {"a": 1}); reads give those strings back.
JSON Lines keeps JSON types: one object per line, blank lines ignored.
"""

from __future__ import annotations

import csv
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, TextIO


class InvalidFile(ValueError):
    """The file does not parse; the message names the line."""


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
                rows.append(dict(row))
        except csv.Error as exc:
            raise InvalidFile(f"{name} line {reader.line_num}: {exc}") from exc
        return list(reader.fieldnames or []), rows

    def dump(self, header: list[str], rows: Iterable[dict[str, Any]], stream: TextIO) -> None:
        writer = csv.DictWriter(stream, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)

    def value(self, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        return json.dumps(value, allow_nan=False, ensure_ascii=False)


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
        return json.loads(json.dumps(value, allow_nan=False))


FORMATS: dict[str, Format] = {"csv": CsvFormat(), "jsonl": JsonLinesFormat()}

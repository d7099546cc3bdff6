"""SOQL for the mock org: a small parser and evaluator for the forms the connector and common clients send.

    SELECT field[, field…] | COUNT() FROM object
      [WHERE condition] [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST][, …]] [LIMIT n] [OFFSET n]

A condition is comparisons (=, !=, <>, <, <=, >, >=, LIKE, IN (…), NOT IN (…)) joined by AND / OR / NOT with
parentheses; values are quoted strings, numbers, datetimes (2024-01-31T12:00:00Z), dates, TRUE, FALSE and
NULL. Keywords, object and field names are case-insensitive; an unknown field is refused with INVALID_FIELD
naming it and an unknown object with INVALID_TYPE, as a real org does; anything else the mock does not
understand is MALFORMED_QUERY. Relationship paths (Account.Name), aggregates other than COUNT(), GROUP BY,
date literals (LAST_N_DAYS:n) and sub-queries are not supported: the mock says so instead of guessing.

Written by hand because no maintained Python SOQL parser exists on PyPI; the grammar above is small.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from crms.salesforce.mock_schema import NUMBER_TYPES, Field, SObject, normal_id, sobject

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})|(?P<num>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|<>|=|<|>)|(?P<punct>[(),])"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_KEYWORDS = frozenset(
    {
        "SELECT",
        "FROM",
        "WHERE",
        "ORDER",
        "BY",
        "LIMIT",
        "OFFSET",
        "AND",
        "OR",
        "NOT",
        "IN",
        "LIKE",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "NULL",
        "TRUE",
        "FALSE",
        "COUNT",
        "GROUP",
    }
)
MAX_OFFSET = 2000
# The literal token each field type takes in a condition ("str": a quoted string).
_LITERAL = {"datetime": "dt", "date": "date", "boolean": "kw", **dict.fromkeys(NUMBER_TYPES, "num")}


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Token:
    kind: str  # str, dt, date, num, op, punct, word, end
    text: str


@dataclass(frozen=True)
class Query:
    object: SObject
    fields: list[str]  # canonical names; empty for COUNT()
    count: bool
    where: Callable[[dict[str, Any]], bool] | None
    order: list[tuple[str, bool, bool]]  # (field, descending, nulls_last)
    limit: int | None
    offset: int


def parse(text: str) -> Query:
    return _Parser(_tokens(text)).query()


def run(query: Query, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the query selects, in its order, after OFFSET and LIMIT."""
    found = [row for row in rows if query.where is None or query.where(row)]
    for name, descending, nulls_last in reversed(query.order or [("Id", False, False)]):
        kind = _field(query.object, name)
        present = sorted(
            (r for r in found if r.get(name) is not None), key=lambda r: _typed(kind, r[name]), reverse=descending
        )
        empty = [r for r in found if r.get(name) is None]
        found = present + empty if nulls_last else empty + present
    found = found[query.offset :]
    return found[: query.limit] if query.limit is not None else found


def _tokens(text: str) -> list[Token]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{text[position : position + 20].strip()}'")
        kind = match.lastgroup or "end"
        word = match.group(kind)
        tokens.append(Token("kw" if kind == "word" and word.upper() in _KEYWORDS else kind, word))
        position = match.end()
    return [*tokens, Token("end", "")]


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens, self.at = tokens, 0
        self.object: SObject | None = None

    def query(self) -> Query:
        self._keyword("SELECT")
        count, names = self._select_list()
        self._keyword("FROM")
        object_name = self._take("word").text
        found = sobject(object_name)
        if found is None:
            raise SoqlError(
                "INVALID_TYPE",
                f"sObject type '{object_name}' is not supported. If you are attempting to "
                "use a custom object, be sure to append the '__c' after the entity name.",
            )
        self.object = found
        fields = [self._name(n) for n in names]
        where = self._condition() if self._accept_keyword("WHERE") else None
        order: list[tuple[str, bool, bool]] = []
        if self._accept_keyword("GROUP"):
            raise SoqlError("MALFORMED_QUERY", "the mock org does not support GROUP BY")
        if self._accept_keyword("ORDER"):
            self._keyword("BY")
            order.append(self._order_item())
            while self._accept("punct", ","):
                order.append(self._order_item())
        limit = self._number() if self._accept_keyword("LIMIT") else None
        offset = self._number() if self._accept_keyword("OFFSET") else 0
        if offset > MAX_OFFSET:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        if self._peek().kind != "end":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{self._peek().text}'")
        return Query(found, fields, count, where, order, limit, offset)

    def _select_list(self) -> tuple[bool, list[str]]:
        if self._peek().kind == "kw" and self._peek().text.upper() == "COUNT":
            self.at += 1
            self._take("punct", "(")
            self._take("punct", ")")
            return True, []
        names = [self._take("word").text]
        while self._accept("punct", ","):
            names.append(self._take("word").text)
        return False, names

    def _order_item(self) -> tuple[str, bool, bool]:
        name = self._name(self._take("word").text)
        descending = self._accept_keyword("DESC")
        if not descending:
            self._accept_keyword("ASC")
        nulls_last = descending  # Salesforce: NULLS FIRST ascending, NULLS LAST descending
        if self._accept_keyword("NULLS"):
            nulls_last = self._accept_keyword("LAST")
            if not nulls_last:
                self._keyword("FIRST")
        return name, descending, nulls_last

    # --- conditions ---------------------------------------------------------------------------

    def _condition(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._conjunction()]
        while self._accept_keyword("OR"):
            parts.append(self._conjunction())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def _conjunction(self) -> Callable[[dict[str, Any]], bool]:
        parts = [self._negation()]
        while self._accept_keyword("AND"):
            parts.append(self._negation())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def _negation(self) -> Callable[[dict[str, Any]], bool]:
        if self._accept_keyword("NOT"):
            inner = self._negation()
            return lambda row: not inner(row)
        if self._accept("punct", "("):
            inner = self._condition()
            self._take("punct", ")")
            return inner
        return self._comparison()

    def _comparison(self) -> Callable[[dict[str, Any]], bool]:
        name = self._name(self._take("word").text)
        field = _field(self._object(), name)
        negated = self._accept_keyword("NOT")
        if self._accept_keyword("IN"):
            values = self._value_list(field)
            return lambda row: (_typed(field, row.get(name)) in values) != negated
        if negated:
            raise SoqlError("MALFORMED_QUERY", "NOT must be followed by IN here")
        if self._accept_keyword("LIKE"):
            pattern = self._value(field)
            if not isinstance(pattern, str):
                raise SoqlError("MALFORMED_QUERY", f"LIKE needs a quoted string for {name}")
            regex = _like(pattern)
            return lambda row: isinstance(row.get(name), str) and regex.fullmatch(row[name]) is not None
        op = self._take("op").text
        value = self._value(field)
        return _compare(field, name, op, value)

    def _value_list(self, field: Field) -> list[Any]:
        self._take("punct", "(")
        values = [self._value(field)]
        while self._accept("punct", ","):
            values.append(self._value(field))
        self._take("punct", ")")
        return values

    def _value(self, field: Field) -> Any:
        token = self._peek()
        self.at += 1
        if token.kind == "kw" and token.text.upper() in ("NULL", "TRUE", "FALSE"):
            return {"NULL": None, "TRUE": True, "FALSE": False}[token.text.upper()]
        wanted = _LITERAL.get(field.type, "str")
        if token.kind == wanted:
            return _typed(field, _unquote(token.text) if wanted == "str" else token.text)
        described = {"dt": "dateTime", "date": "date", "num": "number", "kw": "boolean"}.get(wanted, "string")
        quoted = " and should not be enclosed in quotes" if token.kind == "str" else ""
        raise SoqlError(
            "INVALID_FIELD", f"value of filter criterion for field '{field.name}' must be of type {described}{quoted}"
        )

    # --- tokens -------------------------------------------------------------------------------

    def _object(self) -> SObject:
        assert self.object is not None  # noqa: S101 - set before any field is read
        return self.object

    def _name(self, text: str) -> str:
        if "." in text:
            raise SoqlError("MALFORMED_QUERY", f"the mock org does not support relationship paths: {text}")
        field = self._object().field(text)
        if field is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"No such column '{text}' on entity '{self._object().name}'. If you "
                "are attempting to use a custom field, be sure to append the '__c' after the custom "
                "field name. Please reference your WSDL or the describe call for the appropriate "
                "names.",
            )
        return field.name

    def _number(self) -> int:
        return int(self._take("num").text)

    def _peek(self) -> Token:
        return self.tokens[self.at]

    def _take(self, kind: str, text: str | None = None) -> Token:
        token = self._peek()
        if token.kind != kind or (text is not None and token.text != text):
            shown = token.text or "end of query"
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{shown}'")
        self.at += 1
        return token

    def _accept(self, kind: str, text: str) -> bool:
        if self._peek().kind == kind and self._peek().text == text:
            self.at += 1
            return True
        return False

    def _accept_keyword(self, word: str) -> bool:
        token = self._peek()
        if token.kind == "kw" and token.text.upper() == word:
            self.at += 1
            return True
        return False

    def _keyword(self, word: str) -> None:
        if not self._accept_keyword(word):
            raise SoqlError("MALFORMED_QUERY", f"expecting '{word}', found '{self._peek().text or 'end of query'}'")


def _field(obj: SObject, name: str) -> Field:
    found = obj.field(name)
    assert found is not None  # noqa: S101 - names are checked when parsed
    return found


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _typed(field: Field, raw: Any) -> Any:
    """A stored or literal value in the type its field compares by."""
    if raw is None or isinstance(raw, bool):
        return raw
    if field.type in ("id", "reference"):
        return normal_id(str(raw)) or raw  # a 15-character id equals its 18-character form
    if field.type == "datetime":
        text = str(raw).replace("Z", "+00:00").replace("+0000", "+00:00")
        return datetime.fromisoformat(text)
    if field.type == "date":
        return date.fromisoformat(str(raw)[:10])
    if field.type in NUMBER_TYPES:
        return float(raw)
    return raw


def _compare(field: Field, name: str, op: str, value: Any) -> Callable[[dict[str, Any]], bool]:
    checks: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<>": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    check = checks[op]
    if value is None and op not in ("=", "!=", "<>"):
        raise SoqlError("MALFORMED_QUERY", f"null can only be compared with = or != ({name})")

    def matches(row: dict[str, Any]) -> bool:
        mine = _typed(field, row.get(name))
        if mine is None or value is None:
            return check(mine, value) if op in ("=", "!=", "<>") else False
        if field.type not in NUMBER_TYPES | {"datetime", "date"} and isinstance(mine, str):
            return check(mine.lower(), str(value).lower()) if op in ("=", "!=", "<>") else check(mine, value)
        return check(mine, value)

    return matches


def _like(pattern: str) -> re.Pattern[str]:
    """LIKE: % any run, _ one character, case-insensitive."""
    escaped = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(escaped, re.IGNORECASE | re.DOTALL)

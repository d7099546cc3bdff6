"""The rule language: rule-engine expressions, evaluated against the event and nothing else.

Why rule-engine (docs/rules.md): a small, well-kept Python library with its own grammar; it
never calls eval, resolves names only through our resolver (dictionary keys of the event, never
Python attributes), and knows types, so an unknown symbol is refused when the rule is saved.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import rule_engine
from rule_engine import DataType, builtins

from rules.bounds import bounded_range, use_re2

MAX_EXPRESSION_LENGTH = 1000

# What an expression can see: the event, nothing else.
EVENT_SYMBOLS: dict[str, Any] = {
    "operation": DataType.STRING,
    "source": DataType.STRING,
    "object_type": DataType.STRING,
    "record_id": DataType.STRING,
    "data": DataType.UNDEFINED,  # the record's fields: data.email, data.address.city (see Fields)
    "changed": DataType.ARRAY(DataType.STRING),
    "occurred_at": DataType.DATETIME,
}


class Fields:
    """The record's fields as `data.name`, a missing one being null.

    rule-engine deprecates dot access on plain mappings (and a missing key there is an error), so
    `data` is this small wrapper, which only our resolver looks into.
    """

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values


# Names an evaluation looked up that the record does not have: a mapped field that comes out null
# only because its source field is absent is left out, so a partial update never blanks a field
# in the target. A field the record holds as null is still sent as null (that clears it).
_absent: ContextVar[set[str] | None] = ContextVar("absent", default=None)


def _resolve(thing: Any, name: str) -> Any:
    if isinstance(thing, Fields):
        if name not in thing.values:
            absent = _absent.get()
            if absent is not None:
                absent.add(name)
        value = thing.values.get(name)
        return Fields(value) if isinstance(value, dict) else value
    return rule_engine.resolve_item(thing, name)


def plain(value: Any) -> Any:
    """Unwrap Fields anywhere in an expression's result."""
    if isinstance(value, Fields):
        return {k: plain(v) for k, v in value.values.items()}
    return value


def _join(separator: str, items: Iterable[Any]) -> str:
    return separator.join("" if item is None else str(item) for item in items)


def _format_date(moment: dt.datetime | str, fmt: str) -> str:
    value = moment if isinstance(moment, dt.datetime) else dt.datetime.fromisoformat(str(moment).replace("Z", "+00:00"))
    return value.strftime(fmt)


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None and v != ""), None)


# Functions staff may call as $name(...), on top of rule-engine's own ($split, $map, $filter, …).
FUNCTIONS: dict[str, Any] = {
    "trim": lambda s: None if s is None else str(s).strip(),
    "fields": plain,  # $fields(data): all the record's fields as an object
    "lower": lambda s: None if s is None else str(s).lower(),
    "upper": lambda s: None if s is None else str(s).upper(),
    "join": _join,
    "format_date": _format_date,
    "coalesce": _coalesce,
    "str": lambda v: None if v is None else str(v),
    "range": bounded_range,  # rule-engine's own makes any number of items
}
use_re2()  # `=~` on RE2: linear time whatever the pattern (rules/bounds.py)


class _EventContext(rule_engine.Context):  # type: ignore[misc]  # rule-engine ships no types
    """`data.email` on Fields resolves straight away. rule-engine's own attribute lookup would first
    fail with an exception and fall back to the resolver: ~7 µs and a garbage cycle per field read
    (docs/BENCHMARKS.md, "Rules: evaluation cost")."""

    def resolve_attribute(self, thing: Any, object_: Any, name: str) -> Any:
        if isinstance(object_, Fields):
            return _resolve(object_, name)
        return super().resolve_attribute(thing, object_, name)


def _context(*, typed: bool) -> rule_engine.Context:
    context = _EventContext(
        resolver=_resolve,  # names are keys of the event and its fields, never Python attributes
        type_resolver=rule_engine.type_resolver_from_dict(EVENT_SYMBOLS) if typed else None,
        default_value=None,
        default_timezone=dt.UTC,
        mapping_attribute_lookup=False,
    )
    context.builtins = builtins.Builtins.from_defaults(FUNCTIONS, timezone=dt.UTC)
    return context


# Typed for checking what staff write; untyped (missing keys are null) for evaluating events.
_CHECKING = _context(typed=True)
_RUNNING = _context(typed=False)


@dataclass(frozen=True)
class ExpressionError(Exception):
    message: str

    def __str__(self) -> str:
        return self.message


def compile_expression(text: str) -> rule_engine.Rule:
    """Check `text` against the event's symbols, then compile it for running. Raises ExpressionError."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"is {len(text)} characters; the limit is {MAX_EXPRESSION_LENGTH}")
    try:
        rule_engine.Rule(text, context=_CHECKING)
        return rule_engine.Rule(text, context=_RUNNING)
    except rule_engine.errors.RuleSyntaxError as exc:
        raise ExpressionError(_syntax_message(text, exc)) from None
    except rule_engine.errors.SymbolResolutionError as exc:
        hint = f" (did you mean {exc.suggestion!r}?)" if exc.suggestion else ""
        known = ", ".join(EVENT_SYMBOLS)
        raise ExpressionError(f"unknown name {exc.symbol_name!r}{hint}; an expression sees {known}") from None
    except rule_engine.errors.EngineError as exc:
        raise ExpressionError(f"{type(exc).__name__}: {exc.message}") from None


def _syntax_message(text: str, exc: Any) -> str:
    token = getattr(exc, "token", None)
    position = getattr(token, "lexpos", None)
    if position is None:
        return f"syntax error at the end of {text!r}: it stops before it is complete"
    return f"syntax error at position {position + 1}: {text[position : position + 20]!r}"


def evaluate(expression: rule_engine.Rule, event: dict[str, Any]) -> Any:
    try:
        return expression.evaluate(event)
    except rule_engine.errors.EngineError as exc:
        cause = getattr(exc, "error", None)  # a function's own error, e.g. $range's bound
        detail = (
            f" (${exc.function_name}: {cause})"
            if isinstance(exc, rule_engine.errors.FunctionCallError) and cause
            else ""
        )
        raise ExpressionError(f"{type(exc).__name__}: {exc.message}{detail}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:  # e.g. `"vip" in data.tags` with no tags
        raise ExpressionError(f"{type(exc).__name__}: {exc}") from None


def evaluate_field(expression: rule_engine.Rule, event: dict[str, Any]) -> tuple[Any, bool]:
    """A mapped field's value, and whether it is null only because the record lacks its source."""
    token = _absent.set(set())
    try:
        value = evaluate(expression, event)
        return value, value is None and bool(_absent.get())
    finally:
        _absent.reset(token)

"""The routing decision: what the rules (or the default routing) decided for one event, stored with it.

It is JSON in `SyncEvent.routing`, read back by the engine (what to send each target), conflict
detection, reads and the API's "why did this go there?". These types are the one description of its
keys; they live here, below `sync`, because the rules produce it and `rules` never imports `sync`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

Mode = Literal["rules", "default", "explicit", "read", "conflict", "skipped"]


class TargetPayload(TypedDict):
    """What one target is to receive: the object in that system's names and the mapped fields (upserts),
    or how to delete it (deletes). `rule`: the rule that chose it, None under default routing."""

    object: str
    rule: str | None
    fields: NotRequired[dict[str, Any]]
    conflict: NotRequired[str]  # the rule's conflict policy for this target
    merge_fallback: NotRequired[str]
    on_delete: NotRequired[str]
    delete: NotRequired[str]  # on a delete: "delete" or "soft_delete" (set soft_delete_field)
    soft_delete_field: NotRequired[str]


class Skip(TypedDict):
    target: str
    reason: str
    rule: NotRequired[str]


class RuleError(TypedDict):
    rule: str
    message: str


class Routing(TypedDict):
    mode: Mode
    targets: list[str]  # the connections the event was sent to, by name
    payloads: NotRequired[dict[str, TargetPayload]]  # by target name; absent: send the event's data as posted
    reason: NotRequired[str]  # why it went nowhere
    version: NotRequired[int]  # the rule set that decided
    matched: NotRequired[list[str]]  # the rules that matched, in order
    skipped: NotRequired[list[Skip]]
    errors: NotRequired[list[RuleError]]
    read_from: NotRequired[list[str]]  # a read: the linked systems to read the record from
    conflict: NotRequired[int]  # a conflict's resolution: the conflict's id
    deleted_by: NotRequired[str]  # a change refused because the record was deleted: the delete's event


def target_payload(routing: Mapping[str, Any], target: str) -> TargetPayload | None:
    """The payload decided for `target`, or None when the decision holds none (send the data as posted)."""
    payload: TargetPayload | None = (routing.get("payloads") or {}).get(target)
    return payload

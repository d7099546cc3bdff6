"""The Outreach resources we sync, how each is matched, and the JSON:API shapes they travel in.

Attribute names are Outreach's own (outreach.oas.json, components.schemas.prospect / account):
the writable ones, without the numbered custom fields custom1..custom150 that both resources have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crms.base import OutboundRecord

CUSTOM_FIELD = r"custom([1-9]|[1-9][0-9]|1[0-4][0-9]|150)"
ACCOUNT_MATCH_KEY = rf"^(domain|customId|{CUSTOM_FIELD})$"
PROSPECT_FIELDS = (
    "addedAt", "addressCity", "addressCountry", "addressState", "addressStreet", "addressStreet2", "addressZip",
    "angelListUrl", "availableAt", "callOptedOut", "callsOptStatus", "campaignName", "company", "dateOfBirth",
    "degree", "emailOptedOut", "emails", "emailsOptStatus", "eventName", "externalId", "externalOwner",
    "externalSource", "facebookUrl", "firstName", "gender", "githubUrl", "githubUsername", "googlePlusUrl",
    "graduationDate", "homePhones", "jobStartDate", "lastName", "linkedInConnections", "linkedInId", "linkedInUrl",
    "middleName", "mobilePhones", "nickname", "occupation", "optedOut", "otherPhones", "personalNote1",
    "personalNote2", "preferredContact", "quoraUrl", "region", "school", "score", "sharingTeamId", "source",
    "specialties", "stackOverflowId", "stackOverflowUrl", "tags", "timeZone", "title", "trashedAt", "twitterUrl",
    "twitterUsername", "voipPhones", "websiteUrl1", "websiteUrl2", "websiteUrl3", "workPhones",
)  # fmt: skip
ACCOUNT_FIELDS = (
    "buyerIntentScore", "companyType", "customId", "description", "domain", "externalSource", "followers",
    "foundedAt", "industry", "linkedInEmployees", "linkedInUrl", "locality", "name", "named", "naturalName",
    "numberOfEmployees", "sharingTeamId", "tags", "websiteUrl",
)  # fmt: skip
DEFAULT_OBJECTS: dict[str, dict[str, str]] = {
    "prospect": {"resource": "prospect", "match_key": "emails"},
    "account": {"resource": "account", "match_key": "domain"},
}


@dataclass(frozen=True)
class ObjectMap:
    """One of our object names bound to an Outreach resource type and the attribute it is matched on."""

    resource: str  # "prospect" or "account"
    match_key: str  # "emails"; "domain", "customId" or "customN"

    @property
    def path(self) -> str:
        return f"/{self.resource}s"

    @property
    def numbered_custom(self) -> bool:
        """custom1..custom150: the reference does not mark them filterable (customId, domain and emails it does)."""
        return re.fullmatch(CUSTOM_FIELD, self.match_key) is not None

    @property
    def holds_source_id(self) -> bool:
        """customId / customN are written with System A's id and matched on it; domain and emails come from fields."""
        return self.match_key == "customId" or self.numbered_custom

    def match_value(self, record: OutboundRecord) -> str | None:
        if self.holds_source_id:
            return record.record_id
        value = record.fields.get(self.match_key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None:
            return None
        return str(value).strip() or None

    def attributes(self, record: OutboundRecord) -> dict[str, Any]:
        attributes = dict(record.fields)
        if isinstance(attributes.get("emails"), str):  # one address given as a string: Outreach wants a list
            attributes["emails"] = [attributes["emails"]]
        if self.holds_source_id:
            attributes[self.match_key] = record.record_id
        return attributes


def mappings(config: dict[str, Any]) -> dict[str, ObjectMap]:
    objects: dict[str, dict[str, str]] = config.get("objects") or DEFAULT_OBJECTS
    return {
        name: ObjectMap(spec["resource"], spec.get("match_key") or DEFAULT_OBJECTS[spec["resource"]]["match_key"])
        for name, spec in objects.items()
    }


def document(resource: str, attributes: dict[str, Any], resource_id: int | None = None) -> dict[str, Any]:
    """A JSON:API request body: {"data": {"type", "id"?, "attributes"}} (the reference types `id` as integer)."""
    data: dict[str, Any] = {"type": resource}
    if resource_id is not None:
        data["id"] = resource_id
    data["attributes"] = attributes
    return {"data": data}


def parse_time(value: str) -> datetime:
    """Outreach writes `2021-11-10T14:17:38.000Z`."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))

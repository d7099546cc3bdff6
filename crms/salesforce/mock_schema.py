"""The mock org's schema: its objects and fields with the attributes a real describe carries,
Salesforce's 15- and 18-character ids, and how a written value is checked against a field's type.

The field lists are a subset of the standard objects' fields (the ones the connector and common
clients touch) plus the custom fields this org has: `RecordSync_Id__c` (External ID, Unique) and
`Deleted__c` (a checkbox for soft deletes). Anything else is refused as a real org refuses it.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

EXTERNAL_ID_FIELD = "RecordSync_Id__c"
API_VERSION = "62.0"
_ID_ALPHABET = string.ascii_letters + string.digits
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# describe's soapType and, for text-like types, bytes per character (Salesforce counts 3).
_SOAP = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "datetime": "xsd:dateTime",
    "date": "xsd:date",
    "double": "xsd:double",
    "currency": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "string": "xsd:string",
    "email": "xsd:string",
    "phone": "xsd:string",
    "url": "xsd:string",
    "picklist": "xsd:string",
    "textarea": "xsd:string",
}
TEXT_TYPES = frozenset({"string", "email", "phone", "url", "picklist", "textarea"})
NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    label: str = ""
    length: int = 0
    createable: bool = True
    updateable: bool = True
    nillable: bool = True
    unique: bool = False
    external_id: bool = False
    defaulted_on_create: bool = False
    name_field: bool = False
    reference_to: tuple[str, ...] = ()
    picklist: tuple[str, ...] = ()
    custom: bool = False
    precision: int = 0
    scale: int = 0


@dataclass(frozen=True)
class SObject:
    name: str
    prefix: str
    label_plural: str
    fields: tuple[Field, ...]
    by_lower: dict[str, Field] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        self.by_lower.update({f.name.lower(): f for f in self.fields})

    def field(self, name: str) -> Field | None:
        """Field names are case-insensitive in every Salesforce API."""
        return self.by_lower.get(name.lower())

    @property
    def required(self) -> list[str]:
        """Fields a create must give: not nillable, createable and not defaulted."""
        return [f.name for f in self.fields if not f.nillable and f.createable and not f.defaulted_on_create]


def _audit(name: str, type_: str, label: str, length: int = 0, reference_to: tuple[str, ...] = ()) -> Field:
    """A field the org keeps itself: never written by a caller."""
    return Field(
        name,
        type_,
        label,
        length,
        createable=False,
        updateable=False,
        nillable=False,
        defaulted_on_create=True,
        reference_to=reference_to,
    )


def _system_fields() -> tuple[Field, ...]:
    return (
        _audit("Id", "id", "Record ID", 18),
        _audit("IsDeleted", "boolean", "Deleted"),
        Field("OwnerId", "reference", "Owner ID", 18, nillable=False, defaulted_on_create=True, reference_to=("User",)),
        _audit("CreatedDate", "datetime", "Created Date"),
        _audit("CreatedById", "reference", "Created By ID", 18, ("User",)),
        _audit("LastModifiedDate", "datetime", "Last Modified Date"),
        _audit("LastModifiedById", "reference", "Last Modified By ID", 18, ("User",)),
        _audit("SystemModstamp", "datetime", "System Modstamp"),
    )


def _custom_fields() -> tuple[Field, ...]:
    return (
        Field(EXTERNAL_ID_FIELD, "string", "RecordSync Id", 255, unique=True, external_id=True, custom=True),
        Field("Deleted__c", "boolean", "Deleted", nillable=False, defaulted_on_create=True, custom=True),
        # An External ID that is not Unique: what an org migrated from elsewhere often has (upserts on it
        # can match several records).
        Field("Legacy_Id__c", "string", "Legacy Id", 80, external_id=True, custom=True),
    )


_LEAD_SOURCES = ("Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other")
_INDUSTRIES = ("Agriculture", "Banking", "Education", "Energy", "Technology", "Other")

OBJECTS: dict[str, SObject] = {
    "Contact": SObject(
        "Contact",
        "003",
        "Contacts",
        (
            *_system_fields(),
            Field("AccountId", "reference", "Account ID", 18, reference_to=("Account",)),
            Field("LastName", "string", "Last Name", 80, nillable=False),
            Field("FirstName", "string", "First Name", 40),
            Field("Salutation", "picklist", "Salutation", 40, picklist=("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")),
            Field(
                "Name", "string", "Full Name", 121, createable=False, updateable=False, nillable=False, name_field=True
            ),
            Field("Email", "email", "Email", 80),
            Field("Phone", "phone", "Business Phone", 40),
            Field("MobilePhone", "phone", "Mobile Phone", 40),
            Field("Title", "string", "Title", 128),
            Field("Department", "string", "Department", 80),
            Field("MailingCity", "string", "Mailing City", 40),
            Field("MailingCountry", "string", "Mailing Country", 80),
            Field("LeadSource", "picklist", "Lead Source", 255, picklist=_LEAD_SOURCES),
            Field("Birthdate", "date", "Birthdate"),
            Field("HasOptedOutOfEmail", "boolean", "Email Opt Out", nillable=False, defaulted_on_create=True),
            Field("Description", "textarea", "Contact Description", 32000),
            *_custom_fields(),
        ),
    ),
    "Account": SObject(
        "Account",
        "001",
        "Accounts",
        (
            *_system_fields(),
            Field("Name", "string", "Account Name", 255, nillable=False, name_field=True),
            Field("Type", "picklist", "Account Type", 255, picklist=("Prospect", "Customer", "Partner", "Other")),
            Field("Industry", "picklist", "Industry", 255, picklist=_INDUSTRIES),
            Field("Website", "url", "Website", 255),
            Field("Phone", "phone", "Account Phone", 40),
            Field("NumberOfEmployees", "int", "Employees", precision=8),
            Field("AnnualRevenue", "currency", "Annual Revenue", precision=18),
            Field("BillingCity", "string", "Billing City", 40),
            Field("BillingCountry", "string", "Billing Country", 80),
            Field("Description", "textarea", "Account Description", 32000),
            *_custom_fields(),
        ),
    ),
    "Lead": SObject(
        "Lead",
        "00Q",
        "Leads",
        (
            *_system_fields(),
            Field("LastName", "string", "Last Name", 80, nillable=False),
            Field("FirstName", "string", "First Name", 40),
            Field(
                "Name", "string", "Full Name", 121, createable=False, updateable=False, nillable=False, name_field=True
            ),
            Field("Company", "string", "Company", 255, nillable=False),
            Field("Email", "email", "Email", 80),
            Field("Phone", "phone", "Phone", 40),
            Field("Title", "string", "Title", 128),
            Field(
                "Status",
                "picklist",
                "Status",
                255,
                nillable=False,
                defaulted_on_create=True,
                picklist=("Open - Not Contacted", "Working - Contacted", "Closed - Converted"),
            ),
            Field("LeadSource", "picklist", "Lead Source", 255, picklist=_LEAD_SOURCES),
            Field("Industry", "picklist", "Industry", 255, picklist=_INDUSTRIES),
            *_custom_fields(),
        ),
    ),
}
# What a create fills in when the caller leaves it out.
DEFAULTS: dict[str, Any] = {"Deleted__c": False, "HasOptedOutOfEmail": False, "Status": "Open - Not Contacted"}


def sobject(name: str) -> SObject | None:
    """Object names are case-insensitive too."""
    return next((o for o in OBJECTS.values() if o.name.lower() == name.lower()), None)


# --- ids -----------------------------------------------------------------------------------------


def new_id(object_type: str) -> str:
    """A new 18-character id with the object's key prefix."""
    return to_18(OBJECTS[object_type].prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12)))


def to_18(id15: str) -> str:
    """The case-safe 18-character form: each 5-character chunk's capitals as 5 bits, one letter each."""
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(id15[start : start + 5]) if char.isupper())
        suffix += _SUFFIX[bits]
    return id15 + suffix


def normal_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or None when it is not an id at all."""
    if not re.fullmatch(r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?", value or ""):
        return None
    if len(value) == 18:
        # The 18-character form is case-insensitive: its suffix says which of the 15 are capitals.
        capitals = "".join(f"{_SUFFIX.index(c):05b}"[::-1] for c in value[15:].upper() if c in _SUFFIX)
        if len(capitals) != 15:
            return None
        body = "".join(c.upper() if flag == "1" else c.lower() for c, flag in zip(value[:15], capitals, strict=True))
        return to_18(body)
    return to_18(value)


# --- describe --------------------------------------------------------------------------------------


def describe_field(f: Field) -> dict[str, Any]:
    text = f.type in TEXT_TYPES or f.type in ("id", "reference")
    return {
        "aggregatable": f.type not in ("textarea",),
        "autoNumber": False,
        "byteLength": f.length * 3 if text else 0,
        "calculated": f.name == "Name" and not f.createable,
        "calculatedFormula": None,
        "cascadeDelete": False,
        "caseSensitive": False,
        "compoundFieldName": None,
        "controllerName": None,
        "createable": f.createable,
        "custom": f.custom,
        "defaultValue": DEFAULTS.get(f.name) if f.type == "boolean" else None,
        "defaultValueFormula": None,
        "defaultedOnCreate": f.defaulted_on_create,
        "dependentPicklist": False,
        "deprecatedAndHidden": False,
        "digits": f.precision if f.type == "int" else 0,
        "displayLocationInDecimal": False,
        "encrypted": False,
        "externalId": f.external_id,
        "extraTypeInfo": None,
        "filterable": f.type != "textarea",
        "filteredLookupInfo": None,
        "groupable": f.type not in ("textarea", "datetime", "double", "currency", "percent"),
        "highScaleNumber": False,
        "htmlFormatted": False,
        "idLookup": f.type == "id" or f.external_id or f.type == "email",
        "inlineHelpText": None,
        "label": f.label or f.name,
        "length": f.length if text else 0,
        "mask": None,
        "maskType": None,
        "name": f.name,
        "nameField": f.name_field,
        "namePointing": False,
        "nillable": f.nillable,
        "permissionable": f.nillable and f.createable,
        "picklistValues": [
            {"active": True, "defaultValue": v == DEFAULTS.get(f.name), "label": v, "validFor": None, "value": v}
            for v in f.picklist
        ],
        "polymorphicForeignKey": False,
        "precision": f.precision if f.type != "int" else 0,
        "queryByDistance": False,
        "referenceTargetField": None,
        "referenceTo": list(f.reference_to),
        "relationshipName": f.name[:-2] if f.type == "reference" and f.name.endswith("Id") else None,
        "relationshipOrder": None,
        "restrictedDelete": False,
        "restrictedPicklist": False,
        "scale": f.scale,
        "searchPrefilterable": f.type == "reference",
        "soapType": _SOAP[f.type],
        "sortable": f.type != "textarea",
        "type": f.type,
        "unique": f.unique,
        "updateable": f.updateable,
        "writeRequiresMasterRead": False,
    }


def describe_object(obj: SObject, version: str) -> dict[str, Any]:
    summary = object_summary(obj, version)
    # The describe adds the Classic UI's page templates (relative here: the mock has no UI).
    ui = {"uiEditTemplate": "/{ID}/e", "uiDetailTemplate": "/{ID}", "uiNewRecord": f"/{obj.prefix}/e"}
    return {
        **summary,
        "urls": {**summary["urls"], **ui},
        "fields": [describe_field(f) for f in obj.fields],
        "childRelationships": [],
        "recordTypeInfos": [],
        "supportedScopes": [],
        "namedLayoutInfos": [],
        "actionOverrides": [],
        "compactLayoutable": True,
        "networkScopeFieldName": None,
        "listviewable": None,
        "lookupLayoutable": None,
        "searchLayoutable": True,
        "defaultImplementation": None,
        "implementedBy": None,
        "implementsInterfaces": None,
        "sobjectDescribeOption": "FULL",
    }


def object_summary(obj: SObject, version: str) -> dict[str, Any]:
    """One entry of the global describe (`GET /sobjects`)."""
    base = f"/services/data/v{version}/sobjects/{obj.name}"
    return {
        "activateable": False,
        "associateEntityType": None,
        "associateParentEntity": None,
        "createable": True,
        "custom": False,
        "customSetting": False,
        "deepCloneable": False,
        "deletable": True,
        "deprecatedAndHidden": False,
        "feedEnabled": True,
        "hasSubtypes": False,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": obj.prefix,
        "label": obj.name,
        "labelPlural": obj.label_plural,
        "layoutable": True,
        "mergeable": obj.name != "Lead",
        "mruEnabled": True,
        "name": obj.name,
        "queryable": True,
        "replicateable": True,
        "retrieveable": True,
        "searchable": True,
        "triggerable": True,
        "undeletable": True,
        "updateable": True,
        "urls": {"sobject": base, "describe": f"{base}/describe", "rowTemplate": f"{base}/{{ID}}"},
    }


# --- values ------------------------------------------------------------------------------------------


class BadValue(Exception):
    """A value the field's type refuses: (statusCode, message) as Salesforce reports it per record."""

    def __init__(self, code: str, message: str, field_name: str) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field_name


class NotDeserializable(Exception):
    """A JSON value of the wrong kind (a string for a number): the whole request is refused."""


def check_value(f: Field, value: Any) -> Any:
    """The value as stored, or an exception saying why the org refuses it."""
    if value is None:
        return None
    if f.type == "boolean":
        if not isinstance(value, bool):
            raise NotDeserializable(f"Cannot deserialize instance of boolean from {_kind(value)} value {value!r}")
        return value
    if f.type in NUMBER_TYPES:
        return _number(f, value)
    if f.type in ("date", "datetime"):
        return _moment(f, value)
    if not isinstance(value, str):
        raise NotDeserializable(f"Cannot deserialize instance of string from {_kind(value)} value {value!r}")
    if f.type in ("id", "reference"):
        if normal_id(value) is None:
            raise BadValue("MALFORMED_ID", f"{f.label}: id value of incorrect type: {value}", f.name)
        return normal_id(value)
    if f.length and len(value) > f.length:
        raise BadValue(
            "STRING_TOO_LONG", f"{f.label}: data value too large: {value[:20]} (max length={f.length})", f.name
        )
    if f.type == "email" and value and not _EMAIL.match(value):
        raise BadValue("INVALID_EMAIL_ADDRESS", f"{f.label}: invalid email address: {value}", f.name)
    return value


def _number(f: Field, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise NotDeserializable(f"Cannot deserialize instance of {f.type} from {_kind(value)} value {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise NotDeserializable(f"Cannot deserialize instance of {f.type} from VALUE_STRING value {value}") from None
    if f.type == "int":
        if number != int(number):
            raise BadValue("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{f.label}: value not of required type: {value}", f.name)
        return int(number)
    return number


def _moment(f: Field, value: Any) -> str:
    if not isinstance(value, str):
        raise NotDeserializable(f"Cannot deserialize instance of {f.type} from {_kind(value)} value {value!r}")
    try:
        if f.type == "date":
            return date.fromisoformat(value[:10]).isoformat()
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("+0000", "+00:00"))
    except ValueError:
        raise NotDeserializable(f"Cannot deserialize instance of {f.type} from VALUE_STRING value {value}") from None
    return sf_time(parsed)


def sf_time(value: datetime) -> str:
    """Salesforce's datetime format: `2013-05-20T20:49:32.000+0000`, always UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def _kind(value: Any) -> str:
    return {
        bool: "VALUE_TRUE" if value else "VALUE_FALSE",
        int: "VALUE_NUMBER_INT",
        float: "VALUE_NUMBER_FLOAT",
        str: "VALUE_STRING",
        list: "START_ARRAY",
        dict: "START_OBJECT",
    }.get(type(value), "VALUE")

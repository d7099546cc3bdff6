"""Connector kinds by dotted path, imported lazily. Adding a system is one line here
(see docs/adding-a-connector.md): its connector class names its mock, if it has one."""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from crms.base import Connector
from crms.mocks.declare import Mock

CONNECTORS: dict[str, str] = {
    "database": "crms.database.connector.DatabaseConnector",
    "flatfile": "crms.flatfile.connector.FlatFileConnector",
    "hubspot": "crms.hubspot.connector.HubSpotConnector",
    "outreach": "crms.outreach.connector.OutreachConnector",
    "salesforce": "crms.salesforce.connector.SalesforceConnector",
    "system_a": "crms.systema.connector.SystemAConnector",
}


class UnknownKind(LookupError):
    pass


@cache
def connector_class(kind: str) -> type[Connector]:
    try:
        path = CONNECTORS[kind]
    except KeyError:
        raise UnknownKind(kind) from None
    cls: type[Connector] = import_string(path)
    return cls


def kinds() -> list[str]:
    return sorted(CONNECTORS)


@cache
def mocks() -> dict[str, Mock]:
    """The local mocks by kind, as their packages declare them (served under /mock/<kind>/)."""
    found: dict[str, Mock] = {}
    for kind in kinds():
        path = connector_class(kind).mock
        if path:
            found[kind] = import_string(path)
    return found

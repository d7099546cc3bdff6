"""Salesforce Outbound Messages: the SOAP `notifications` a workflow rule or flow sends on a change.

They carry no signature. What proves a delivery is ours: a secret token in the endpoint URL
configured in Salesforce (`?token=`, compared in constant time with the connection's
`outbound_message_token`) and, when the connection names it, the sending org's
`OrganizationId`. Each delivery is answered with the SOAP `Ack` only after its changes are
stored: Salesforce resends a message until it is acknowledged (for up to 24 hours), and a
resend is captured once, by (record, SystemModstamp). Deletions never come this way (Outbound
Messages fire on create and update only): polling's getDeleted and reconcile find them.

Parsed with defusedxml: a body from the internet never expands entities or reaches the network.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from xml.etree.ElementTree import Element  # types only: parsing goes through defusedxml

from defusedxml import ElementTree

from crms.base import Change, ConnectorError, WebhookRefused

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
TOKEN_PARAM = "token"  # noqa: S105 - the query parameter's name, not a secret
ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)


def verify(*, secret: str | None, query: Mapping[str, str], organization: str | None, body: bytes) -> Element:
    """The parsed `notifications` element of a delivery that proves itself; WebhookRefused otherwise."""
    if not secret:
        raise WebhookRefused(
            "this connection takes no Outbound Messages: set its outbound_message_token and put "
            "?token=<it> in the endpoint URL in Salesforce",
            header=TOKEN_PARAM,
        )
    if not hmac.compare_digest(query.get(TOKEN_PARAM, "").encode(), secret.encode()):
        raise WebhookRefused(
            "the token in the URL is missing or is not this connection's outbound_message_token", header=TOKEN_PARAM
        )
    notifications = _notifications(body)
    sender = _text(notifications, "OrganizationId") or ""
    # Org ids come in 15- and 18-character forms; the first 15 are the id itself.
    if organization and sender[:15] != organization[:15]:
        raise WebhookRefused(
            f"the message comes from org {sender or '(none)'}, not {organization}", header="OrganizationId"
        )
    return notifications


def changes(notifications: Element) -> list[Change]:
    """One Change per Notification; field values as text, booleans as booleans, nil as None."""
    found: list[Change] = []
    for index, notification in enumerate(notifications.findall(f"{{{OUTBOUND_NS}}}Notification")):
        sobject = notification.find(f"{{{OUTBOUND_NS}}}sObject")
        if sobject is None:
            raise _bad(f"Notification[{index}] has no sObject")
        object_type = (sobject.get(f"{{{XSI_NS}}}type") or "").split(":")[-1]
        fields = {_local(child.tag): _value(child) for child in sobject}
        record_id = fields.get("Id")
        if not object_type or not record_id:
            raise _bad(f"Notification[{index}].sObject needs its xsi:type and an Id")
        stamp = fields.get("SystemModstamp") or fields.get("LastModifiedDate")
        if not isinstance(stamp, str):
            raise _bad(
                f"Notification[{index}].sObject has no SystemModstamp: add it to the message's fields, so a "
                "resent message is captured once"
            )
        found.append(Change(object_type, str(record_id), fields, _parse(stamp, index)))
    return found


def _notifications(body: bytes) -> Element:
    try:
        root = ElementTree.fromstring(body, forbid_dtd=True)
    except Exception as exc:  # defusedxml's refusals and ParseError alike: not a delivery we can read
        raise _bad(f"not a SOAP message: {type(exc).__name__}: {exc}") from exc
    notifications = root.find(f".//{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise _bad("no notifications element in the SOAP body")
    return notifications


def _text(element: Element, name: str) -> str | None:
    child = element.find(f"{{{OUTBOUND_NS}}}{name}")
    return child.text if child is not None else None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _value(element: Element) -> Any:
    if element.get(f"{{{XSI_NS}}}nil") == "true":
        return None
    text = element.text or ""
    return {"true": True, "false": False}.get(text, text)


def _parse(stamp: str, index: int) -> datetime:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _bad(f"Notification[{index}]: {stamp!r} is not a time") from exc


def _bad(message: str) -> ConnectorError:
    return ConnectorError(message, code="invalid_body", permanent=True)

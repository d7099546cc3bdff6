"""The signature on every call into System A: HMAC-SHA256 over "<timestamp>.<body>".

Same scheme as Stripe's and Slack's webhooks: the timestamp is signed with the body, so a
captured request cannot be replayed later; receivers refuse timestamps older than TOLERANCE.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-RecordSync-Signature"
TIMESTAMP_HEADER = "X-RecordSync-Timestamp"
TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float) -> bool:
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > TOLERANCE_SECONDS:
        return False
    # As bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, a 500).
    return hmac.compare_digest(sign(secret, stamp, body).encode(), signature.encode("utf-8", "surrogateescape"))

"""API token authentication: django-rest-knox, with its per-request cost cut down."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from django.utils import timezone
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from knox.crypto import hash_token

# A verified token is trusted for this long in each process: authentication was 30% of a
# single-event ingest (docs/BENCHMARKS.md). So revoking a token, or deactivating its user, takes
# effect within this long in the other processes (at once in the one that revoked it).
VERIFIED_TTL_SECONDS = 10.0
VERIFIED_MAX = 1024


class TokenAuthentication(KnoxTokenAuthentication):  # type: ignore[misc]  # knox ships no types
    clock = staticmethod(time.monotonic)  # swappable in tests
    _verified: OrderedDict[str, tuple[float, Any, Any]] = OrderedDict()

    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        try:
            digest = hash_token(token.decode("utf-8"))
        except (TypeError, ValueError):
            refused: tuple[Any, Any] = super().authenticate_credentials(token)  # knox refuses with its own message
            return refused
        hit = self._verified.get(digest)
        if hit is not None and self.clock() - hit[0] < VERIFIED_TTL_SECONDS:
            return hit[1], hit[2]
        user, auth_token = super().authenticate_credentials(token)
        self._verified[digest] = (self.clock(), user, auth_token)
        while len(self._verified) > VERIFIED_MAX:
            self._verified.popitem(last=False)
        return user, auth_token

    def _cleanup_token(self, auth_token: Any) -> bool:
        """knox checks every other token of the user for expiry on each request (one more query).
        Our API tokens do not expire (TOKEN_TTL None; revoked in the admin): check only this one."""
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            auth_token.delete()
            return True
        return False


def verified_tokens_forget() -> None:
    TokenAuthentication._verified.clear()

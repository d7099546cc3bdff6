"""API users and tokens. Tokens are django-rest-knox's: only a SHA-512 digest is stored."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from knox.models import AuthToken


def api_token_create(*, username: str, staff: bool = False) -> str:
    """Return a new token for `username`, creating the user (without a password) if needed."""
    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
        if staff and not user.is_staff:
            user.is_staff = True
        user.save()
        _, token = AuthToken.objects.create(user=user, expiry=None)
    return str(token)

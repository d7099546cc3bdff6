"""Connection secrets, encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`).

Keys come from RECORDSYNC_SECRETS_KEYS (comma-separated Fernet keys, newest first): MultiFernet
decrypts with any of them and encrypts with the first, so keys rotate without downtime:
put the new key first, run `manage.py rotate_secrets`, then drop the old one.

A stored value is either the secret itself or a reference {"env": "NAME"}, read from the
environment when the connector is built; exports only ever contain references. A reference may only
name a variable SECRET_ENV_ALLOWED allows (default: CRM_*), checked when it is saved and when it is read.
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SecretValue = str | dict[str, str]


def _fernet() -> MultiFernet:
    keys = settings.RECORDSYNC_SECRETS_KEYS
    if not keys:
        raise ImproperlyConfigured(
            "RECORDSYNC_SECRETS_KEYS is not set: generate one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        )
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(values: dict[str, SecretValue]) -> str:
    if not values:
        return ""
    return _fernet().encrypt(json.dumps(values, sort_keys=True).encode()).decode()


def decrypt(token: str) -> dict[str, SecretValue]:
    if not token:
        return {}
    try:
        value: dict[str, SecretValue] = json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise ImproperlyConfigured("Connection secrets cannot be decrypted: is RECORDSYNC_SECRETS_KEYS right?") from exc
    return value


def seal(value: Any) -> str:
    """Any JSON value, encrypted like the configured secrets (what a connector keeps: rotated tokens, cursors)."""
    return _fernet().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def unseal(token: str) -> Any:
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise ImproperlyConfigured("Connector state cannot be decrypted: is RECORDSYNC_SECRETS_KEYS right?") from exc


def rotate(token: str) -> str:
    """The same secret under the newest key (MultiFernet.rotate: decrypts with any key, encrypts with the first)."""
    return _fernet().rotate(token.encode()).decode()


def under_newest_key(token: str) -> bool:
    """Whether `token` is encrypted with the first key of RECORDSYNC_SECRETS_KEYS."""
    keys = settings.RECORDSYNC_SECRETS_KEYS
    try:
        Fernet(keys[0]).decrypt(token.encode())
    except (InvalidToken, IndexError):
        return False
    return True


def resolve(values: dict[str, SecretValue]) -> dict[str, str]:
    """Secrets as the connector needs them: references replaced by the environment's values."""
    resolved: dict[str, str] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            env_name = value.get("env", "")
            refused = env_refusal(env_name)
            if refused:
                raise ImproperlyConfigured(f"Secret '{name}': {refused}")
            if env_name not in os.environ:
                raise ImproperlyConfigured(f"Secret '{name}' refers to ${env_name}, which is not set")
            resolved[name] = os.environ[env_name]
        else:
            resolved[name] = value
    return resolved


def env_refusal(name: str) -> str:
    """Why a secret may not name this environment variable, or "" when it may."""
    for allowed in settings.SECRET_ENV_ALLOWED:
        if name == allowed or (allowed.endswith("*") and name.startswith(allowed[:-1])):
            return ""
    return (
        f"${name} is not a variable connections may read; name one SECRET_ENV_ALLOWED allows "
        f"({', '.join(settings.SECRET_ENV_ALLOWED) or 'none'}), or widen that setting"
    )


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str)

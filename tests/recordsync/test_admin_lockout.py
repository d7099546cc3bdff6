"""Admin login lockout (issue 15: none): five wrong passwords for a username from one address lock that pair out
for a while, whatever the sixth password; other addresses and API tokens are not affected."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

RIGHT = "right-password-for-tests-only"


def attempt(client: Client, password: str, address: str = "203.0.113.7") -> int:
    response = client.post("/admin/login/?next=/admin/", {"username": "ops", "password": password}, REMOTE_ADDR=address)
    return int(response.status_code)


def test_five_wrong_passwords_lock_the_username_out_from_that_address(django_user_model):
    django_user_model.objects.create_superuser("ops", "ops@example.com", RIGHT)

    wrong = [attempt(Client(), "guess") for _ in range(5)]
    locked = attempt(Client(), RIGHT)
    elsewhere = attempt(Client(), RIGHT, address="198.51.100.20")

    assert wrong == [200, 200, 200, 200, 429]  # the form again with its error, then the fifth locks
    assert locked == 429  # even the right password, until the cool-off ends
    assert elsewhere == 302  # logged in: another address is not locked


def test_a_right_password_before_the_limit_resets_the_count(django_user_model):
    django_user_model.objects.create_superuser("ops", "ops@example.com", RIGHT)

    for _ in range(4):
        attempt(Client(), "guess")
    assert attempt(Client(), RIGHT) == 302
    assert [attempt(Client(), "guess") for _ in range(4)] == [200] * 4  # counting starts again
    assert attempt(Client(), RIGHT) == 302

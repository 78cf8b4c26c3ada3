"""Token authentication's answers that a client developer reads."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def test_a_bearer_token_is_refused_with_a_hint(client_actor):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {client_actor.token}")

    response = api.get("/api/v1/jobs/")

    assert response.status_code == 401
    error = response.json()["error"]
    assert "Authorization: Token <key>" in error["message"]
    assert client_actor.client.get("/api/v1/jobs/").status_code == 200

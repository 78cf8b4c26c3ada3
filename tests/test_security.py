"""Production settings: check --deploy is clean, and the headers and cookies it asks for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "p" * 20 + "-production-only-9f8e7d6c5b4a3-" + "q" * 20,
    "ALLOWED_HOSTS": "concord.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO",
}


def test_check_deploy_is_clean_with_production_settings():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("DEBUG", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**env, **PRODUCTION_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    # drf-spectacular reports its schema warnings through the checks too (component names
    # shared between views); they are the schema's business, not deployment's.
    issues = set(re.findall(r"\(([\w.]+\.[EWI]\d+)\)", output))
    assert {issue for issue in issues if not issue.startswith("drf_spectacular.")} == set(), output
    assert result.returncode == 0 or issues, output


def test_settings_without_debug_turn_on_https_protections(settings):
    # The test process runs without DEBUG, as production does.
    assert settings.DEBUG is False
    assert settings.SECURE_HSTS_SECONDS >= 31536000
    assert settings.SECURE_HSTS_INCLUDE_SUBDOMAINS
    assert settings.SESSION_COOKIE_SECURE
    assert settings.CSRF_COOKIE_SECURE
    assert settings.CONTENT_SECURITY_POLICY


@pytest.mark.django_db
def test_pages_carry_csp_with_the_nonce_of_their_scripts(qc_actor, client):
    client.force_login(qc_actor.user)
    response = client.get("/qc/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", policy).group(1)
    assert "script-src 'self' 'nonce-" in policy
    assert "object-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    scripts = re.findall(rb"<script([^>]*)>", response.content)
    assert scripts
    for attributes in scripts:
        assert f'nonce="{nonce}"'.encode() in attributes or b"src=" in attributes
    # A new nonce every response
    again = client.get("/qc/")["Content-Security-Policy"]
    assert again != policy


@pytest.mark.django_db
def test_https_responses_carry_hsts_and_secure_cookies(client, make_actor):
    response = client.post("/login/", {"token": make_actor("ops").token}, secure=True)
    assert response.status_code == 302
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response.cookies["sessionid"]["secure"]
    assert response.cookies["sessionid"]["httponly"]


@pytest.mark.django_db
def test_ssl_redirect_spares_health_checks(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/login/").status_code == 301
    assert client.get("/healthz").status_code in (200, 503)

"""The platform around the API: schema, docs, health, admin."""

import pytest


def test_openapi_schema_documents_the_client_api(client):
    response = client.get(
        "/api/schema/?format=json", HTTP_ACCEPT="application/vnd.oai.openapi+json"
    )
    assert response.status_code == 200
    text = response.content.decode()
    for path in ["/api/v1/jobs/", "/api/v1/jobs/{job_id}/items/", "/api/v1/jobs/{job_id}/results/"]:
        assert path in text


def test_docs_page_renders(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


@pytest.mark.django_db
def test_healthz_checks_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_healthz_reports_unreachable_broker(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"].startswith("error")


@pytest.mark.django_db
def test_admin_lists_every_model(admin_client):
    from django.apps import apps
    from django.contrib import admin

    for model in apps.get_models():
        if model._meta.app_label in {
            "accounts",
            "jobs",
            "workforce",
            "assignments",
            "quality",
            "routing",
            "reports",
        }:
            assert admin.site.is_registered(model), model
            url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
            assert admin_client.get(url).status_code == 200, url

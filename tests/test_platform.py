"""The platform around the API: schema, docs, health, admin."""

import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.apps import apps
from django.contrib import admin
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models.signals import post_init
from django.utils import timezone

from apps.assignments.selectors import invariant_violations
from apps.common.bulk import bulk_update_rows
from apps.common.instances import copied, loaded
from apps.common.prepared import Prepared
from apps.jobs.models import Item, Job
from apps.reports.models import JobCurve, JobHour
from apps.reviews.models import Review
from apps.workforce.models import Worker
from tests.workforce.factories import JobFactory, make_items, make_worker
from workers.celery import app


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
def test_healthz_reports_unreachable_broker_as_degraded(client, settings):
    """Annotators keep working without Redis: degraded, not taken out of the balancer."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["broker"].startswith("error")


@pytest.mark.django_db
def test_admin_lists_every_model(admin_client):
    for model in apps.get_models():
        if model._meta.app_label in {
            "accounts",
            "jobs",
            "workforce",
            "assignments",
            "quality",
            "routing",
            "reports",
            "webhooks",
        }:
            assert admin.site.is_registered(model), model
            url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
            assert admin_client.get(url).status_code == 200, url


@pytest.mark.django_db
def test_admin_action_messages_survive_the_redirect_with_lazy_message_storage(admin_client):
    """LazyMessageMiddleware: a message the admin adds is stored, shown once on the next
    page, then gone; a request that never touches messages leaves no messages cookie."""

    worker = make_worker()
    response = admin_client.post(
        "/admin/workforce/worker/",
        {"action": "ban_workers", "_selected_action": [worker.pk]},
    )
    assert response.status_code == 302
    assert "messages" in response.cookies
    worker.refresh_from_db()
    assert worker.status == Worker.Status.BANNED

    page = admin_client.get(response["Location"])
    assert "Banned 1 worker(s)." in page.content.decode()
    again = admin_client.get(response["Location"])
    assert "Banned 1 worker(s)." not in again.content.decode()

    untouched = admin_client.get("/healthz")
    assert "messages" not in untouched.cookies


def test_beat_schedule_names_only_registered_tasks():
    app.loader.import_default_modules()
    schedule = app.conf.beat_schedule
    assert {
        "concord.assignments.lease_sweep",
        "quality.aggregate_running_jobs",
        "concord.reviews.reprioritize",
        "concord.reviews.expert_timeouts",
        "routing.check_jobs",
        "concord.reports.rollup",
    } <= {entry["task"] for entry in schedule.values()}
    for entry in schedule.values():
        assert entry["task"] in app.tasks, entry["task"]


@pytest.mark.django_db
def test_seeddemo_creates_a_live_job_and_prints_working_tokens(client):
    out = StringIO()
    # Short runs (about 130 labels a second here): the crowd leaves work for the annotator.
    call_command("seeddemo", items=40, gold=5, workers=6, seconds=0.5, kind_seconds=0.3, stdout=out)
    call_command(
        "seeddemo", items=40, gold=5, workers=6, seconds=0, kind_seconds=0, stdout=StringIO()
    )

    job = Job.objects.get(name="Demo: animal photos")
    assert job.status == Job.Status.RUNNING
    # And one small job of each other answer kind, labeled a little, its gold hidden too.
    kinds = {j.label_schema["kind"]: j for j in Job.objects.exclude(pk=job.pk)}
    assert set(kinds) == {"multi_choice", "ordinal", "numeric", "bbox"}
    for other in kinds.values():
        assert other.items.count() == 30
        assert other.items.filter(gold_label__isnull=False).count() == 3
        assert other.items.filter(n_labels__gt=0).exists()
        assert not other.items.filter(payload__has_key="truth").exists()
        assert invariant_violations(job_id=other.pk) == []
    image = kinds["bbox"].items.first().payload["image"]
    assert image.startswith("data:image/svg+xml;base64,")
    assert Item.objects.filter(job=job).count() == 45
    assert Item.objects.filter(job=job, n_labels__gt=0).exists()
    assert invariant_violations(job_id=job.pk) == []
    # Every page has something to show: reviews for QC, a spammer for ops, a routed job.
    assert Review.objects.filter(job=job, status="open").exists()
    assert Worker.objects.filter(user__username__startswith="sim-spammer").exists()
    assert job.routing["mode"] == "model"
    # The dashboards' rollups and the redundancy curve are there without a beat.
    assert JobHour.objects.filter(job=job).exists()
    assert JobCurve.objects.filter(job=job).exists()
    # Nothing an annotator is shown tells a gold item from another.
    assert not Item.objects.filter(job=job, payload__has_key="truth").exists()
    assert not Item.objects.filter(job=job, external_id__startswith="gold").exists()
    tokens = dict(
        line.split()[:2] for line in out.getvalue().splitlines() if line.startswith("  demo-")
    )
    assert set(tokens) == {"demo-client", "demo-ops", "demo-qc", "demo-annotator", "demo-expert"}
    for user in ("demo-client", "demo-ops", "demo-qc"):  # the demo vendor serves the client
        response = client.get(f"/api/v1/jobs/{job.pk}/", HTTP_AUTHORIZATION=f"Token {tokens[user]}")
        assert response.status_code == 200, user
    response = client.post(
        "/api/v1/assignments/next/",
        {"job": job.pk},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {tokens['demo-annotator']}",
    )
    assert response.status_code == 200, (response.content, dict(response.headers))
    response = client.post(
        "/api/v1/assignments/next/",
        {"job": kinds["bbox"].pk},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {tokens['demo-annotator']}",
    )
    assert response.status_code == 200, (response.content, dict(response.headers))
    assert response.json()["label_schema"]["kind"] == "bbox"


def test_the_web_process_does_not_import_torch_until_it_trains():
    """torch costs ~2 s and ~180 MB per process; only routing's training and scoring need it."""

    code = (
        "import os, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings')\n"
        "from config.wsgi import application\n"
        "from django.urls import resolve\n"
        "resolve('/api/v1/jobs/1/evaluate-strategy/')\n"
        "assert 'torch' not in sys.modules, 'torch imported at startup'\n"
        "from apps.routing import algorithms\n"
        "algorithms.train_routing_model\n"
        "assert 'torch' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DEBUG": "1"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.django_db(transaction=True)
def test_prepared_statements_are_planned_once_per_session_and_survive_rollbacks():
    if connection.vendor != "postgresql":
        pytest.skip("server-side prepared statements are PostgreSQL's")
    statement = Prepared(
        "concord_test_add", "SELECT %(a)s + %(b)s + %(a)s", {"a": "int", "b": "int"}
    )
    with connection.cursor() as cursor:
        statement.execute(cursor, {"a": 1, "b": 10})
        assert cursor.fetchone() == (12,)
    # Prepared inside a transaction that rolls back: the session keeps the statement.
    other = Prepared("concord_test_mul", "SELECT %(a)s * %(b)s", {"a": "int", "b": "int"})
    with transaction.atomic(), connection.cursor() as cursor:
        other.execute(cursor, {"a": 2, "b": 20})
        transaction.set_rollback(True)
    with connection.cursor() as cursor:
        other.execute(cursor, {"a": 3, "b": 30})
        assert cursor.fetchone() == (90,)
        statement.execute(cursor, {"a": 3, "b": 30})
        assert cursor.fetchone() == (36,)
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE name = %s", ["concord_test_add"]
        )
        assert cursor.fetchone() == (1,)
    # A new session prepares it again.
    connection.close()
    with connection.cursor() as cursor:
        statement.execute(cursor, {"a": 4, "b": 40})
        assert cursor.fetchone() == (48,)


@pytest.mark.django_db(transaction=True)
def test_an_asynchronous_commit_holds_for_its_own_statement_only():
    if connection.vendor != "postgresql":
        pytest.skip("server-side prepared statements are PostgreSQL's")
    setting = Prepared(
        "concord_test_sync", "SELECT current_setting('synchronous_commit') || %(s)s", {"s": "text"}
    )
    with connection.cursor() as cursor:
        setting.execute(cursor, {"s": ""}, asynchronous_commit=True)
        assert cursor.fetchone() == ("off",)
        # The next statement of the session commits synchronously again.
        setting.execute(cursor, {"s": ""})
        assert cursor.fetchone() == ("on",)
    # Inside a caller's transaction the flag changes nothing: the caller decides.
    with transaction.atomic(), connection.cursor() as cursor:
        setting.execute(cursor, {"s": ""}, asynchronous_commit=True)
        assert cursor.fetchone() == ("on",)
        cursor.execute("SELECT current_setting('synchronous_commit')")
        assert cursor.fetchone() == ("on",)


@pytest.mark.django_db
def test_bulk_update_rows_writes_each_objects_fields_and_nothing_else():
    items = make_items(JobFactory(), 4)
    later = timezone.now() + timedelta(hours=1)
    changes = [
        Item(pk=items[0].pk, posterior=[0.25, 0.75], label="dog", confidence=0.75),
        Item(pk=items[1].pk, posterior=None, label=None, confidence=None),
        Item(pk=items[2].pk, posterior={"nested": [1, "ü"]}, label="cat's", confidence=1.0),
    ]
    for change in changes:
        change.updated_at = later
    written = bulk_update_rows(Item, changes, ["posterior", "label", "confidence", "updated_at"])

    assert written == 3
    got = {i.pk: i for i in Item.objects.filter(job=items[0].job)}
    for change in changes:
        row = got[change.pk]
        assert (row.posterior, row.label, row.confidence) == (
            change.posterior,
            change.label,
            change.confidence,
        )
        assert row.updated_at == later
        assert row.external_id == next(i.external_id for i in items if i.pk == change.pk)
    untouched = got[items[3].pk]
    assert untouched.updated_at == items[3].updated_at
    assert bulk_update_rows(Item, [], ["label"]) == 0
    # In batches: the same rows written, a statement per batch.
    for change in changes:
        change.label = "bird"
    assert bulk_update_rows(Item, changes, ["label"], batch_size=2) == 3
    assert set(Item.objects.filter(label="bird").values_list("pk", flat=True)) == {
        c.pk for c in changes
    }


@pytest.mark.django_db
def test_loaded_and_copied_instances_behave_like_rows_read_from_the_database():
    (item,) = make_items(JobFactory(), 1)
    partial = loaded(Item, {"id": item.pk, "job_id": item.job_id, "state": "open"})
    # Not adding, from "default"; a column not given is deferred and read when touched.
    assert (partial._state.adding, partial._state.db) == (False, "default")
    assert partial.get_deferred_fields() >= {"external_id", "payload"}
    assert partial.external_id == item.external_id
    assert partial.job.pk == item.job_id
    with pytest.raises(ValueError, match="no columns"):
        loaded(Item, {"id": 1, "not_a_column": 2})

    clone = copied(partial)
    clone.state = "settled"
    assert partial.state == "open"
    assert "job" not in clone._state.fields_cache  # related objects are not shared

    # A model someone listens to at init is built through __init__, as from_db does.
    seen = []

    def listener(sender, instance, **kwargs):
        seen.append(instance)

    post_init.connect(listener, sender=Item)
    try:
        again = loaded(Item, {"id": item.pk, "state": "open"})
        twin = copied(again)
    finally:
        post_init.disconnect(listener, sender=Item)
    assert seen == [again, twin]
    assert twin.state == "open"
    assert twin is not again


def test_docs_page_loads_nothing_from_the_internet(client):
    """Swagger UI's scripts and styles are the project's own (drf-spectacular-sidecar): the
    page works on a machine without internet, and the CSP names no other host."""

    response = client.get("/api/docs/")
    text = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert sources
    assert all(not s.startswith(("http://", "https://", "//")) for s in sources), sources
    assert "http" not in response.get("Content-Security-Policy", "")

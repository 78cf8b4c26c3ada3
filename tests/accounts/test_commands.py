"""createtoken and importitems from the command line."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, Membership, Organization
from apps.jobs.models import Job


def test_createtoken_creates_missing_parts_and_prints_a_working_token(db):
    out = io.StringIO()
    call_command(
        "createtoken",
        "--username",
        "carol",
        "--org",
        "Initech",
        "--org-kind",
        "client",
        "--role",
        "client",
        stdout=out,
        stderr=io.StringIO(),
    )
    token = out.getvalue().strip().splitlines()[-1]

    assert Organization.objects.get(name="Initech").kind == "client"
    assert Membership.objects.get(user__username="carol").role == "client"
    assert ApiToken.objects.get().digest != token  # only the digest is stored
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/jobs/").status_code == 200


def test_createtoken_twice_reuses_user_and_gives_a_second_token(db):
    args = ["--username", "dan", "--org", "Vend", "--org-kind", "vendor", "--role", "ops"]
    call_command("createtoken", *args, stdout=io.StringIO(), stderr=io.StringIO())
    call_command("createtoken", *args, stdout=io.StringIO(), stderr=io.StringIO())
    assert Membership.objects.count() == 1
    assert ApiToken.objects.count() == 2


def test_createtoken_refuses_a_role_in_the_wrong_kind_of_org(db):
    with pytest.raises(CommandError, match="belongs to a vendor"):
        call_command(
            "createtoken",
            "--username",
            "x",
            "--org",
            "C",
            "--org-kind",
            "client",
            "--role",
            "ops",
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )


def test_importitems_loads_a_file_and_reports_bad_rows(db, tmp_path, client_actor):
    org = Organization.objects.get(name="Acme Client")
    job = Job.objects.create(organization=org, name="cli", label_schema={"classes": ["a", "b"]})
    path = tmp_path / "items.jsonl"
    rows = [{"external_id": f"e{i}", "payload": {"i": i}} for i in range(5000)]
    rows.append({"external_id": "bad", "payload": {}, "gold_label": "zzz"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match=r"^1 row\(s\) rejected"):
        call_command("importitems", str(job.pk), str(path), stdout=out, stderr=err)

    assert out.getvalue().strip() == "created 5000, updated 0, rejected 1"
    assert "row 5001: bad" in err.getvalue()
    assert job.items.count() == 5000


def test_contract_starts_lists_and_ends_a_vendors_service_to_a_client(db):
    def token(username: str, org: str, kind: str, role: str) -> APIClient:
        out = io.StringIO()
        args = ["--username", username, "--org", org, "--org-kind", kind, "--role", role]
        call_command("createtoken", *args, stdout=out, stderr=io.StringIO())
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {out.getvalue().strip().splitlines()[-1]}")
        return api

    client = token("cora", "Initech", "client", "client")
    ops = token("omar", "Vend", "vendor", "ops")
    body = {"name": "J", "label_schema": {"kind": "single_choice", "classes": ["a", "b"]}}
    job_id = client.post("/api/v1/jobs/", body, format="json").json()["id"]
    assert ops.get(f"/api/v1/jobs/{job_id}/").status_code == 404

    started, listed, ended = io.StringIO(), io.StringIO(), io.StringIO()
    call_command("contract", "--client", "Initech", "--vendor", "Vend", stdout=started)
    call_command("contract", stdout=listed)
    seen = ops.get(f"/api/v1/jobs/{job_id}/").status_code
    call_command(
        "contract", "--client", "Initech", "--vendor", "Vend", "--deactivate", stdout=ended
    )

    assert started.getvalue().strip() == "Vend serves Initech: active (created)"
    assert listed.getvalue().strip() == "Vend\tInitech\tactive"
    assert seen == 200
    assert ended.getvalue().strip() == "Vend serves Initech: inactive (updated)"
    assert ops.get(f"/api/v1/jobs/{job_id}/").status_code == 404


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--client", "Nope", "--vendor", "Vend"], "No client organization named 'Nope'"),
        (["--client", "Vend", "--vendor", "Vend"], "No client organization named 'Vend'"),
        (["--client", "Initech"], "Name both --client and --vendor"),
    ],
    ids=["unknown-client", "vendor-as-client", "half"],
)
def test_contract_refuses_unknown_or_wrong_kinds_of_organizations(db, args, message):
    Organization.objects.create(name="Initech", kind="client")
    Organization.objects.create(name="Vend", kind="vendor")
    with pytest.raises(CommandError, match=message):
        call_command("contract", *args, stdout=io.StringIO())


def test_importitems_exits_zero_when_every_row_is_stored(db, tmp_path, client_actor):
    org = Organization.objects.get(name="Acme Client")
    job = Job.objects.create(organization=org, name="cli", label_schema={"classes": ["a", "b"]})
    path = tmp_path / "items.jsonl"
    path.write_text('{"external_id": "e1", "payload": {}}\n')
    out = io.StringIO()

    call_command("importitems", str(job.pk), str(path), stdout=out, stderr=io.StringIO())

    assert out.getvalue().strip() == "created 1, updated 0, rejected 0"


def test_checkinvariants_of_an_unknown_job_fails(db):
    with pytest.raises(CommandError, match="No job with id 999"):
        call_command("checkinvariants", "--job", "999", stdout=io.StringIO())

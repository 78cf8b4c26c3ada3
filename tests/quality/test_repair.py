"""checkinvariants finds wrong delivered results; repairresults re-derives them."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.jobs.models import Item, Job
from apps.quality.aggregation import job_aggregate, result_violations
from tests.quality.factories import crowd_job, crowd_label

pytestmark = pytest.mark.django_db


def _settled_job():
    """A completed job of two items, each settled by two agreeing labels, then aggregated."""
    job, items, crowd = crowd_job(2, workers=2, policy={"target_confidence": 0.6})
    for worker in crowd:
        crowd_label(worker, "dog")
        crowd_label(worker, "dog")
    job_aggregate(job_id=job.pk, method="ds")
    Job.objects.filter(pk=job.pk).update(status=Job.Status.COMPLETED)
    assert [i.state for i in Item.objects.filter(job=job)] == ["settled", "settled"]
    return job, items


def test_a_healthy_job_passes(capsys):
    job, _ = _settled_job()

    call_command("checkinvariants", job=job.pk)

    assert "ok: all invariants hold" in capsys.readouterr().out


def test_a_settled_item_delivered_without_a_label_is_found_and_repaired(capsys):
    job, (item, _) = _settled_job()
    Item.objects.filter(pk=item.pk).update(label="")  # what the lost update left behind

    with pytest.raises(CommandError):
        call_command("checkinvariants", job=job.pk)
    assert f"item {item.pk}: settled with label ''" in capsys.readouterr().out

    call_command("repairresults", job=job.pk)

    item.refresh_from_db()
    assert (item.state, item.label) == ("settled", "dog")
    assert result_violations(job_id=job.pk) == []
    call_command("checkinvariants", job=job.pk)


def test_a_result_a_fresh_aggregation_contradicts_is_found_and_repaired(capsys):
    job, (item, _) = _settled_job()
    Item.objects.filter(pk=item.pk).update(label="cat")

    problems = result_violations(job_id=job.pk)

    assert len(problems) == 1
    assert f"item {item.pk}: result 'cat' but a fresh ds aggregation" in problems[0]
    with pytest.raises(CommandError):
        call_command("repairresults", job=job.pk, dry_run=True)
    item.refresh_from_db()
    assert item.label == "cat"  # a dry run changes nothing

    call_command("repairresults", job=job.pk)

    item.refresh_from_db()
    assert item.label == "dog"
    assert "repaired: 1 job(s)" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["checkinvariants", "repairresults"])
def test_an_unknown_job_is_an_error(command):
    with pytest.raises(CommandError, match="No job with id 999999"):
        call_command(command, job=999999)
